"""Classifiers f that return ``(logits, [h_1 .. h_L])``, the shared decoder g, and their containers."""

from __future__ import annotations

import torch
from torch import nn

from decnn_cli.config import ModelConfig
from decnn_cli.data.spec import DataSpec
from decnn_cli.errors import DecnnError
from decnn_cli.models.classifiers import LinearClassifier, mlp
from decnn_cli.models.decoders import SharedDecoder


def build_classifier(cfg: ModelConfig, spec: DataSpec, dropout: float = 0.0) -> nn.Module:
    """The classifier f named by ``cfg.arch`` for inputs and outputs described by ``spec``."""
    if cfg.arch == "mlp":
        return mlp(spec, cfg.depth, cfg.width, dropout)
    if cfg.arch == "linear":
        return LinearClassifier(spec)
    if cfg.arch == "cnn":
        from decnn_cli.models.cnn import cnn

        return cnn(spec, cfg.depth, cfg.cnn_channels, dropout)
    if cfg.arch == "resnet18":
        from decnn_cli.models.resnet import resnet18_classifier

        return resnet18_classifier(spec)
    raise DecnnError(f"unknown architecture {cfg.arch!r}; choose from mlp, cnn, linear, resnet18")


def build_decoder(cfg: ModelConfig, classifier: nn.Module, spec: DataSpec, groups: int = 0) -> SharedDecoder:
    """One decoder g shared by every hidden layer of ``classifier``; ``groups`` > 0: g also reads which of that
    many protected groups an example belongs to."""
    if not classifier.hidden_shapes:
        raise DecnnError(f"arch {cfg.arch!r} has no hidden layers to decode; use --arch mlp or cnn")
    return SharedDecoder(
        classifier.hidden_shapes,
        spec.in_shape,
        cfg.decoder,
        mlp_hidden=cfg.decoder_width,
        channels=cfg.decoder_channels,
        code_dim=cfg.width,
        groups=groups,
    )


class Network(nn.Module):
    """A classifier f with an optional shared decoder g; ``forward`` is f's plain forward pass."""

    def __init__(self, classifier: nn.Module, decoder: SharedDecoder | None = None):
        super().__init__()
        self.classifier = classifier
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.classifier(x)


class Ensemble(nn.Module):
    """Independently initialised classifiers trained side by side (the naive ensemble baseline)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The first member's forward pass (the 'single classifier' that attacks are crafted against)."""
        return self.members[0](x)


def classifiers_of(model: nn.Module) -> list[nn.Module]:
    """The classifiers f of a method's network, each returning ``(logits, [h_1..h_L])``: a Network's own, or every
    member of an Ensemble (in member order)."""
    if isinstance(model, Ensemble):
        return list(model.members)
    if isinstance(model, Network):
        return [model.classifier]
    raise DecnnError(f"{type(model).__name__} is neither a Network nor an Ensemble; build it with either")


class LogitsOnly(nn.Module):
    """Wraps a ``(logits, hidden)`` module as x -> logits, the interface torchattacks and probes expect."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)[0]
