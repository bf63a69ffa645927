"""Composition with frozen pretrained models: Eq. 7 (agree with m) and Eq. 8 (make m uniform)."""

from __future__ import annotations

import torch

from decnn_cli.config import RunConfig
from decnn_cli.data.spec import DataSpec
from decnn_cli.methods import LossContext


def attach_pretrained_terms(ctx: LossContext, cfg: RunConfig, spec: DataSpec, device: torch.device) -> None:
    """Add the Eq. 7 / Eq. 8 terms that ``cfg.method`` asks for to ``ctx`` (none by default)."""
    return None
