"""Composition with frozen pretrained models m: Eq. 7 (agree with m) and Eq. 8 (make m uniform).

Both terms act on every decoded input x_d = g(h^(d-1)_{l_{d-1}}) and are weighted by alpha^d inside the
ReDecNN loss (averaged over layers for DecNN). m is any checkpoint written by ``decnn train`` (a user's own
model plugs in the same way): it is loaded in eval mode with ``requires_grad`` off, so its weights never move.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from decnn_cli import engine
from decnn_cli.data.spec import DataSpec
from decnn_cli.errors import DecnnError
from decnn_cli.methods import LossContext, PretrainedTerms


def load_frozen(path: Path, spec: DataSpec, device: torch.device, role: str, same_classes: bool) -> nn.Module:
    """The checkpoint's single deterministic classifier (x -> logits), frozen; shapes checked against ``spec``."""
    loaded = engine.load_checkpoint(path, device)
    if loaded.spec.in_shape != spec.in_shape:
        raise DecnnError(
            f"{role} {path} takes inputs of shape {loaded.spec.in_shape} but this run's data is {spec.in_shape}; "
            "train it on the same dataset"
        )
    if same_classes and loaded.spec.num_outputs != spec.num_outputs:
        raise DecnnError(
            f"{role} {path} predicts {loaded.spec.num_outputs} classes but this task has {spec.num_outputs}; "
            "compose with a model of the same task"
        )
    if loaded.spec.task != "multiclass":
        raise DecnnError(f"{role} {path} is multi-label; compose with a single-label classifier")
    if loaded.spec.name != spec.name:
        from decnn_cli.experiments.common import warn

        warn(
            f"{role} {path} was trained on {loaded.spec.name}, this run's data is {spec.name}: their inputs have the "
            "same shape, but check that m's classes mean what this run's do"
        )
    model = loaded.method.point(loaded.model)
    model.eval()
    model.requires_grad_(False)
    return model


def agreement_term(f_logits: torch.Tensor, m_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 7's divergence KL(m || f) per example, averaged: 0 exactly when f and m predict alike.

    m's prediction is the target (no gradient flows into it); f is pulled towards it.
    """
    target = F.softmax(m_logits.detach().float(), dim=-1)
    return F.kl_div(F.log_softmax(f_logits.float(), dim=-1), target, reduction="batchmean")


def uniformity_term(m_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 8: KL(uniform || m) per example, averaged: 0 exactly when m predicts chance for every input.

    Gradients flow through m (frozen) into its input, the decoded activation.
    """
    log_p = F.log_softmax(m_logits.float(), dim=-1)
    return -(log_p.mean(dim=-1) + math.log(m_logits.shape[-1])).mean()


def attach_pretrained_terms(ctx: LossContext, terms: PretrainedTerms, spec: DataSpec, device: torch.device) -> None:
    """Add the Eq. 7 / Eq. 8 terms that ``terms`` asks for to ``ctx`` (none by default)."""
    if terms.compose_with is not None:
        m = load_frozen(terms.compose_with, spec, device, "pretrained model", same_classes=True)
        weight = terms.compose_weight
        if terms.compose_target == "reconstruction":

            def compose(x: torch.Tensor, x_hat: torch.Tensor, f_logits: torch.Tensor) -> dict[str, torch.Tensor]:
                with torch.no_grad():  # m's view of the reconstruction is a target: no graph through m
                    target = m(x_hat)
                return {"compose": weight * agreement_term(f_logits, target)}

        else:
            last: dict[str, torch.Tensor] = {}

            def compose(x: torch.Tensor, x_hat: torch.Tensor, f_logits: torch.Tensor) -> dict[str, torch.Tensor]:
                # Static target: what m thinks of the original input (Table 6, "direct"); computed once per batch.
                if last.get("x") is not x:
                    with torch.no_grad():
                        last["x"], last["target"] = x, m(x)
                return {"compose": weight * agreement_term(f_logits, last["target"])}

        ctx.decoded_terms.append(compose)
    if terms.protect_with is not None:
        protector = load_frozen(terms.protect_with, spec, device, "protected-attribute model", same_classes=False)
        weight = terms.protect_weight

        def protect(x: torch.Tensor, x_hat: torch.Tensor, f_logits: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"protect": weight * uniformity_term(protector(x_hat))}

        (ctx.decoded_terms if terms.protect_trains_decoder else ctx.fixed_decoder_terms).append(protect)
