"""Coloured digits: an offline dataset with a protected attribute (the colour) for the Eq. 8 experiments.

Each grayscale digit is painted in one of two colours (red or green) on black. The task is the digit's class
(``target = "digit"``: 10 classes) or a binary split of it (``target = "binary"``, the default: digits 0-4
vs 5-9); ``target = "color"`` predicts the colour itself (to train the protected classifier m). In the
training and validation splits the colour agrees with the binary class with probability
``color_correlation`` (a shortcut a network can learn instead of the shape); in the test split colour and
class are independent and balanced, so any use of the colour shows up as a gap between the colour groups.
Every example carries its colour as the group label (``protected`` is always the colour).
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from decnn_cli.config import DataConfig
from decnn_cli.data import digits, mnist
from decnn_cli.data.spec import DataSpec, Splits, channel_stats
from decnn_cli.data.splitting import finish_splits
from decnn_cli.errors import DecnnError

COLORS = ("red", "green")
_RGB = torch.tensor([[1.0, 0.15, 0.15], [0.15, 1.0, 0.15]])  # (colour, channel)
TARGETS = ("binary", "digit", "color")


def paint(gray: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
    """gray (N, 1, H, W) in [0, 1], color (N,) in {0, 1} -> (N, 3, H, W) in [0, 1]."""
    return gray * _RGB[color].view(-1, 3, 1, 1)


def assign_colors(binary: torch.Tensor, correlation: float | None, seed: int) -> torch.Tensor:
    """Colour per example: equal to the binary class with probability ``correlation``; None -> independent."""
    generator = torch.Generator().manual_seed(seed)
    if correlation is None:
        return torch.randint(2, binary.shape, generator=generator)
    agree = torch.rand(binary.shape, generator=generator) < correlation
    return torch.where(agree, binary, 1 - binary)


def _targets(digit: torch.Tensor, color: torch.Tensor, target: str) -> torch.Tensor:
    if target == "digit":
        return digit
    if target == "color":
        return color
    return (digit >= 5).long()


def load(cfg: DataConfig, source: str) -> Splits:
    target = cfg.target or "binary"
    if target not in TARGETS:
        raise DecnnError(f"target {target!r} is not offered by colored-{source}; choose from {list(TARGETS)}")
    if source == "digits":
        x, y = digits.digit_images()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.split_seed))
        n_test = int(len(y) * digits.TEST_FRACTION)
        x_train, y_train, x_test, y_test = x[order[n_test:]], y[order[n_test:]], x[order[:n_test]], y[order[:n_test]]
    else:
        x_train, y_train = mnist.read_split(cfg, "mnist", train=True)
        x_test, y_test = mnist.read_split(cfg, "mnist", train=False)
    c_train = assign_colors((y_train >= 5).long(), cfg.color_correlation, cfg.split_seed)
    c_test = assign_colors((y_test >= 5).long(), None, cfg.split_seed + 1)
    x_train, x_test = paint(x_train, c_train), paint(x_test, c_test)
    outputs = {"binary": ("0-4", "5-9"), "digit": tuple(str(d) for d in range(10)), "color": COLORS}[target]
    mean, std = channel_stats(x_train)
    spec = DataSpec(
        name=f"colored-{source}",
        in_shape=(3, 28, 28),
        num_outputs=len(outputs),
        task="multiclass",
        output_names=outputs,
        mean=mean,
        std=std,
        group_names=COLORS,
    )
    train = TensorDataset(x_train, _targets(y_train, c_train, target), c_train)
    test = TensorDataset(x_test, _targets(y_test, c_test, target), c_test)
    return finish_splits(spec, train, test, cfg)
