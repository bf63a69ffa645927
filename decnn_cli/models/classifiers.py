"""MLP classifiers that return their logits and every hidden activation.

One private core, thin named constructors: ``mlp`` (the paper's f) and ``bayesian_mlp`` (BayesNN) differ
only in the linear layer they stack.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from decnn_cli.data.spec import DataSpec
from decnn_cli.models.bayesian import BayesLinear, ScaleMixturePrior


class Normalize(nn.Module):
    """(x - mean) / std per channel; inside the model so attacks and decoders see inputs in [0, 1]."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean).div_(self.std)  # in place on the fresh difference: one tensor less per call


class LayeredClassifier(nn.Module):
    """What every classifier f shares: ``blocks`` run in order (each a layer, then ReLU), dropout before every block
    but the first and before the head; ``forward`` returns the logits and every block's output h_l (before dropout).
    Subclasses build ``normalize``, ``blocks``, ``dropout`` and ``head``, and say how x becomes the first block's
    input (``prepare``) and how h_L reaches the head (``flat``)."""

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def flat(self, h_last: torch.Tensor) -> torch.Tensor:
        return h_last

    def hidden_layer(self, index: int, z: torch.Tensor) -> torch.Tensor:
        """h_{index+1} from ``prepare(x)`` (index 0) or from h_index: one block, as ``forward`` runs it."""
        return torch.relu_(self.blocks[index](z if index == 0 else self.dropout(z)))

    def logits_from(self, h_last: torch.Tensor) -> torch.Tensor:
        """The head on h_L."""
        return self.head(self.flat(self.dropout(h_last)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = self.prepare(x)
        hidden = []
        for index in range(len(self.blocks)):
            z = self.hidden_layer(index, z)
            hidden.append(z)
        return self.logits_from(z), hidden


class MLPClassifier(LayeredClassifier):
    """f: x (..., C, H, W) in [0, 1] -> (logits (..., K), [h_1 .. h_L] each (..., width)).

    h_l is the output of the l-th block (linear, then ReLU), taken before dropout. Leading dimensions are
    kept, so a stack of N copies (N, B, C, H, W) runs as one batch (BayesNN samples one weight per copy).
    ``prepare``, ``hidden_layer`` and ``logits_from`` are the steps of ``forward``, for samplers that run only
    the blocks they need.
    """

    def __init__(self, spec: DataSpec, depth: int, width: int, dropout: float, linear: Callable[[int, int], nn.Module]):
        super().__init__()
        self.normalize = Normalize(spec.mean, spec.std)
        in_features = math.prod(spec.in_shape)
        self.blocks = nn.ModuleList([linear(in_features if i == 0 else width, width) for i in range(depth)])
        self.dropout = nn.Dropout(dropout)
        self.head = linear(width, spec.num_outputs)
        self.hidden_shapes: list[tuple[int, ...]] = [(width,)] * depth

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """What the first block reads: x (..., C, H, W) normalised and flattened to (..., C * H * W)."""
        return self.normalize(x).flatten(-3)


def mlp(spec: DataSpec, depth: int = 8, width: int = 256, dropout: float = 0.0) -> MLPClassifier:
    """The paper's classifier: ``depth`` hidden layers of constant ``width``."""
    return MLPClassifier(spec, depth, width, dropout, nn.Linear)


def bayesian_mlp(spec: DataSpec, depth: int, width: int, prior: ScaleMixturePrior, rho_init: float) -> MLPClassifier:
    """The same MLP with Bayes-by-Backprop layers (Gaussian posterior over every weight)."""
    return MLPClassifier(spec, depth, width, 0.0, lambda i, o: BayesLinear(i, o, prior, rho_init))


class LinearClassifier(nn.Module):
    """A linear model m (Sec. 4.2): x -> (logits, []) with no hidden layers."""

    def __init__(self, spec: DataSpec):
        super().__init__()
        self.normalize = Normalize(spec.mean, spec.std)
        self.head = nn.Linear(math.prod(spec.in_shape), spec.num_outputs)
        self.hidden_shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.head(self.normalize(x).flatten(-3)), []
