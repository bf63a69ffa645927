"""Standard network (Eq. 1: cross-entropy only), and the dropout / MC-dropout baselines on the same MLP."""

from __future__ import annotations

import torch
from torch import nn

from decnn_cli.config import MethodConfig, RunConfig
from decnn_cli.data.spec import DataSpec
from decnn_cli.methods.base import LossContext, LossTerms, add_terms
from decnn_cli.models import LogitsOnly, Network, build_classifier


def build(cfg: RunConfig, spec: DataSpec) -> Network:
    return Network(build_classifier(cfg.model, spec))


def build_with_dropout(cfg: RunConfig, spec: DataSpec) -> Network:
    return Network(build_classifier(cfg.model, spec, dropout=cfg.method.dropout))


def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: LossContext) -> LossTerms:
    logits, _ = model(x)
    ce = ctx.task.loss(logits, y)
    parts = {"ce": ce.detach()}
    total = ce
    for term in ctx.input_terms:
        total = add_terms(total, parts, term(x, logits), 1.0)
    return LossTerms(total, parts, logits)


def sample_point(model: nn.Module, x: torch.Tensor, n: int, cfg: MethodConfig) -> torch.Tensor:
    """One deterministic prediction: (1, B, K)."""
    return model(x)[0].unsqueeze(0)


def sample_mc_dropout(model: nn.Module, x: torch.Tensor, n: int, cfg: MethodConfig) -> torch.Tensor:
    """N stochastic passes with dropout on, as one batch of N copies: (N, B, K)."""
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    for m in dropouts:
        m.train()
    try:
        logits, _ = model(x.unsqueeze(0).expand(n, *x.shape).reshape(n * x.shape[0], *x.shape[1:]))
    finally:
        for m in dropouts:
            m.eval()
    return logits.view(n, x.shape[0], -1)


def point(model: nn.Module) -> nn.Module:
    return LogitsOnly(model)
