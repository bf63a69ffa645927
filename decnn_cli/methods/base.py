"""What a method is: how to build its network, its training loss, and how it samples predictions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from decnn_cli.config import MethodConfig, RunConfig
from decnn_cli.data.spec import DataSpec
from decnn_cli.tasks import TaskHead


@dataclass
class LossTerms:
    """A training loss: ``total`` to minimise, its named ``parts`` (detached), and f(x)'s ``logits``."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]
    logits: torch.Tensor


# A term added at every decoded input: (x, x_hat, logits of f(x_hat)) -> named scalar losses. The
# composition (Eq. 7) and protection (Eq. 8) objectives plug in here.
DecodedTerm = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class LossContext:
    """What a loss needs besides the batch."""

    method: MethodConfig
    task: TaskHead
    num_train: int
    decoded_terms: list[DecodedTerm] = field(default_factory=list)
    # Terms that see x_hat decoded by g with its weights held fixed: their gradient reaches f, not g.
    fixed_decoder_terms: list[DecodedTerm] = field(default_factory=list)
    input_terms: list[Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]] = field(default_factory=list)


@dataclass(frozen=True)
class MethodSpec:
    """A method of the registry.

    ``sample(model, x, n, method_cfg)`` returns logits (S, B, K) of S sampled classifiers (S = n for stochastic methods,
    the member count for the ensemble, 1 for deterministic ones); the model is in eval mode.
    ``predictive`` says which distribution the method predicts with: f's own forward pass ("point") or the
    mean of the sampled probabilities ("sample-mean").
    ``point`` returns the single deterministic classifier x -> logits that attacks are crafted against.
    """

    name: str
    summary: str
    build: Callable[[RunConfig, DataSpec], nn.Module]
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor, LossContext], LossTerms]
    sample: Callable[[nn.Module, torch.Tensor, int, MethodConfig], torch.Tensor]
    predictive: Literal["point", "sample-mean"]
    point: Callable[[nn.Module], nn.Module]
    uses_decoder: bool = False
    stochastic: bool = False


def add_terms(
    total: torch.Tensor, parts: dict[str, torch.Tensor], terms: dict[str, torch.Tensor], weight: float
) -> torch.Tensor:
    """Add ``weight`` times each term to ``total``, accumulating the detached values in ``parts``."""
    for name, value in terms.items():
        total = total + weight * value
        parts[name] = parts.get(name, 0.0) + weight * value.detach()
    return total


@contextmanager
def weights_held(module: nn.Module) -> Iterator[None]:
    """Within the block, ``module`` computes as usual but records no gradient for its own weights."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in zip(module.parameters(), flags, strict=True):
            param.requires_grad_(flag)
