"""What a dataset is to the rest of the suite: its shape, task and splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch.utils.data import Dataset

Task = Literal["multiclass", "multilabel"]


@dataclass(frozen=True)
class DataSpec:
    """Shape and task of a dataset, saved with every checkpoint so the model can be rebuilt.

    ``in_shape`` is (C, H, W) of inputs in [0, 1]; ``num_outputs`` is K classes (multiclass, softmax) or
    the number of binary attributes (multilabel, one sigmoid each). ``mean``/``std`` (per channel) are the
    normalisation the classifier applies inside itself.
    """

    name: str
    in_shape: tuple[int, int, int]
    num_outputs: int
    task: Task
    output_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    group_names: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, raw: dict) -> DataSpec:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


@dataclass
class Splits:
    """Train/val/test datasets yielding ``(x, y)`` or ``(x, y, group)``; x (C, H, W) float in [0, 1]."""

    spec: DataSpec
    train: Dataset
    val: Dataset
    test: Dataset
    notes: list[str] = field(default_factory=list)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of images (N, C, H, W), for the normalisation inside the model."""
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())
