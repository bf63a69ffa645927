"""Naive ensemble: independently initialised standard networks (D of them by default, as in the paper)."""

from __future__ import annotations

import torch
from torch import nn

from decnn_cli.config import MethodConfig, RunConfig
from decnn_cli.data.spec import DataSpec
from decnn_cli.methods.base import LossContext, LossTerms
from decnn_cli.models import Ensemble, LogitsOnly, build_classifier


def build(cfg: RunConfig, spec: DataSpec) -> Ensemble:
    return Ensemble([build_classifier(cfg.model, spec) for _ in range(cfg.method.members)])


def loss(model: Ensemble, x: torch.Tensor, y: torch.Tensor, ctx: LossContext) -> LossTerms:
    """Sum of the members' cross-entropies: with Adam's per-parameter steps, identical to training each alone."""
    member_logits = [member(x)[0] for member in model.members]
    losses = torch.stack([ctx.task.loss(logits, y) for logits in member_logits])
    mean_logits = torch.stack(member_logits).mean(0)
    return LossTerms(losses.sum(), {"ce": losses.mean().detach()}, mean_logits)


def sample(model: Ensemble, x: torch.Tensor, n: int, cfg: MethodConfig) -> torch.Tensor:
    """Each member's prediction: (M, B, K), whatever N is."""
    return torch.stack([member(x)[0] for member in model.members])


def point(model: Ensemble) -> nn.Module:
    """Member 0: the single classifier that attacks are crafted against."""
    return LogitsOnly(model.members[0])
