"""Standard network (Eq. 1: cross-entropy only), and the dropout / MC-dropout baselines on the same MLP."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from decnn_cli.methods.base import (
    LossContext,
    LossTerms,
    MethodSettings,
    MethodSpec,
    NoSettings,
    add_hidden_terms,
    add_terms,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from decnn_cli.config import ModelConfig
    from decnn_cli.data.spec import DataSpec
    from decnn_cli.models import Network


class DropoutSettings(MethodSettings):
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Drop rate of the dropout and mc-dropout methods.")


def build(model_cfg: ModelConfig, settings: MethodSettings, spec: DataSpec) -> Network:
    from decnn_cli.models import Network, build_classifier

    return Network(build_classifier(model_cfg, spec))


def build_with_dropout(model_cfg: ModelConfig, settings: DropoutSettings, spec: DataSpec) -> Network:
    from decnn_cli.models import Network, build_classifier

    return Network(build_classifier(model_cfg, spec, dropout=settings.dropout))


def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: LossContext) -> LossTerms:
    logits, hidden = model(x)
    ce = ctx.task.loss(logits, y)
    parts = {"ce": ce.detach()}
    total = ce
    for term in ctx.input_terms:
        total = add_terms(total, parts, term(x, logits), 1.0)
    total = add_hidden_terms(total, parts, hidden, y, ctx)
    return LossTerms(total, parts, logits)


def sample_point(model: nn.Module, x: torch.Tensor, n: int, settings: MethodSettings) -> torch.Tensor:
    """One deterministic prediction: (1, B, K), inputs taken in chunks under a memory bound."""
    from decnn_cli.methods.chunks import in_rows, rows_per_call

    return in_rows(lambda part: model(part)[0], x, rows_per_call(model, model, x)).unsqueeze(0)


def sample_mc_dropout(model: nn.Module, x: torch.Tensor, n: int, settings: DropoutSettings) -> torch.Tensor:
    """N stochastic passes with dropout on: (N, B, K).

    Dropout acts between layers, so h_1 is the same in every pass: f's first block runs once per input and the N
    passes start from it, as one batch of N copies. Inputs are taken in chunks whose tensors stay under a memory
    bound (``decnn_cli.methods.chunks``); each chunk draws its own masks, so with one chunk the masks are those of
    one batched pass over N copies of the batch.
    """
    import torch
    from torch import nn

    from decnn_cli.methods.chunks import rows_per_call

    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    for m in dropouts:
        m.train()
    try:
        per_chunk = max(1, rows_per_call(model, model, x) // n)
        logits = [_dropout_passes(model, part, n) for part in x.split(per_chunk)]
    finally:
        for m in dropouts:
            m.eval()
    return torch.cat(logits, dim=1)


def _dropout_passes(model: nn.Module, x: torch.Tensor, n: int) -> torch.Tensor:
    """N passes of f with dropout on over the b inputs x: (N, b, K)."""
    f, b = getattr(model, "classifier", model), x.shape[0]
    if not hasattr(f, "hidden_layer"):  # a classifier that runs only whole: N copies of x
        return model(x.unsqueeze(0).expand(n, *x.shape).reshape(n * b, *x.shape[1:]))[0].view(n, b, -1)
    first = f.hidden_layer(0, f.prepare(x))  # (b, ...): before any dropout, the same in every pass
    z = first.unsqueeze(0).expand(n, *first.shape).reshape(n * b, *first.shape[1:])
    for index in range(1, len(f.hidden_shapes)):
        z = f.hidden_layer(index, z)
    return f.logits_from(z).view(n, b, -1)


def point(model: nn.Module) -> nn.Module:
    from decnn_cli.models import LogitsOnly

    return LogitsOnly(model)


STANDARD = MethodSpec(
    name="standard",
    summary="plain classifier, cross-entropy only (Eq. 1)",
    settings=NoSettings,
    build=build,
    loss=loss,
    sample=sample_point,
    point=point,
    accepts_adversary=True,
    needs_hidden_layers=False,
)

DROPOUT = MethodSpec(
    name="dropout",
    summary="dropout in training, off at test",
    settings=DropoutSettings,
    build=build_with_dropout,
    loss=loss,
    sample=sample_point,
    point=point,
    accepts_adversary=True,
    needs_hidden_layers=False,
)

MC_DROPOUT = MethodSpec(
    name="mc-dropout",
    summary="dropout in training and N sampled masks at test (Gal & Ghahramani)",
    settings=DropoutSettings,
    build=build_with_dropout,
    loss=loss,
    sample=sample_mc_dropout,
    point=point,
    predictive="sample-mean",
    stochastic=True,
    accepts_adversary=True,
)
