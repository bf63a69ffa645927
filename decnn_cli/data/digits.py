"""scikit-learn's bundled handwritten digits (8x8, no download) resized to 28x28: the embedded default."""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

from decnn_cli.config import DataConfig
from decnn_cli.data.spec import DataSpec, Splits, channel_stats
from decnn_cli.data.splitting import finish_splits

TEST_FRACTION = 0.2


def digit_images(size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (N, 1, size, size) floats in [0, 1] and their labels (N,)."""
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = TF.resize(x, [size, size], antialias=True).clamp(0.0, 1.0)
    return x, torch.tensor(bunch.target, dtype=torch.long)


def load(cfg: DataConfig) -> Splits:
    x, y = digit_images()
    train_idx, test_idx = train_test_split(
        torch.arange(len(y)).numpy(), test_size=TEST_FRACTION, stratify=y.numpy(), random_state=cfg.split_seed
    )
    mean, std = channel_stats(x[train_idx])
    spec = DataSpec(
        name="digits",
        in_shape=(1, 28, 28),
        num_outputs=10,
        task="multiclass",
        output_names=tuple(str(d) for d in range(10)),
        mean=mean,
        std=std,
    )
    return finish_splits(spec, TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[test_idx], y[test_idx]), cfg)
