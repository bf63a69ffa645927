"""Naive ensemble: independently initialised standard networks (D of them by default, as in the paper)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from decnn_cli.methods.base import LossContext, LossTerms, MethodSettings, MethodSpec, add_hidden_terms

if TYPE_CHECKING:
    import torch
    from torch import nn

    from decnn_cli.config import ModelConfig
    from decnn_cli.data.spec import DataSpec
    from decnn_cli.models import Ensemble


class EnsembleSettings(MethodSettings):
    ensemble_size: int | None = Field(
        None, ge=1, description="Members of the naive ensemble; unset means D, as in the paper."
    )
    recursion_depth: int = Field(
        8, ge=1, description="ReDecNN's recursion depth D: the member count when ensemble_size is unset."
    )

    @property
    def members(self) -> int:
        """Ensemble members (derived: ``ensemble_size`` or D)."""
        return self.ensemble_size or self.recursion_depth

    def unread(self) -> set[str]:
        return {"recursion_depth"} if self.ensemble_size is not None else set()


def build(model_cfg: ModelConfig, settings: EnsembleSettings, spec: DataSpec) -> Ensemble:
    from decnn_cli.models import Ensemble, build_classifier

    return Ensemble([build_classifier(model_cfg, spec) for _ in range(settings.members)])


def loss(model: Ensemble, x: torch.Tensor, y: torch.Tensor, ctx: LossContext) -> LossTerms:
    """Sum of the members' cross-entropies: with Adam's per-parameter steps, identical to training each alone.

    The adversary (``AdversaryTerms``) gives every member one of its own, on that member's h_L; its part is the sum
    over members, as the total is."""
    import torch

    outputs = [member(x) for member in model.members]
    member_logits = [logits for logits, _ in outputs]
    losses = torch.stack([ctx.task.loss(logits, y) for logits in member_logits])
    mean_logits = torch.stack(member_logits).mean(0)
    parts = {"ce": losses.mean().detach()}
    total = losses.sum()
    for index, (_, hidden) in enumerate(outputs):
        total = add_hidden_terms(total, parts, hidden, y, ctx, member=index)
    return LossTerms(total, parts, mean_logits)


def sample(model: Ensemble, x: torch.Tensor, n: int, settings: EnsembleSettings) -> torch.Tensor:
    """Each member's prediction: (M, B, K), whatever N is; inputs taken in chunks under a memory bound."""
    import torch

    from decnn_cli.methods.chunks import rows_per_call

    rows = rows_per_call(model, model, x)
    return torch.cat([torch.stack([member(part)[0] for member in model.members]) for part in x.split(rows)], dim=1)


def point(model: Ensemble) -> nn.Module:
    """Member 0: the single classifier that attacks are crafted against."""
    from decnn_cli.models import LogitsOnly

    return LogitsOnly(model.members[0])


ENSEMBLE = MethodSpec(
    name="ensemble",
    summary="D independently initialised standard networks",
    settings=EnsembleSettings,
    build=build,
    loss=loss,
    sample=sample,
    point=point,
    predictive="sample-mean",
    stochastic=True,
    accepts_adversary=True,
)
