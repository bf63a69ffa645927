"""MNIST and Fashion-MNIST through torchvision's own IDX parsers, held in memory as tensors."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from torchvision import datasets

from decnn_cli.config import DataConfig
from decnn_cli.data.roots import resolve_root
from decnn_cli.data.spec import DataSpec, Splits, channel_stats
from decnn_cli.data.splitting import finish_splits
from decnn_cli.errors import DecnnError

_SOURCES = {
    "mnist": (datasets.MNIST, "MNIST"),
    "fashion": (datasets.FashionMNIST, "FashionMNIST"),
}


def read_split(cfg: DataConfig, name: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of ``name`` as (N, 1, 28, 28) floats in [0, 1] and labels (N,)."""
    cls, folder = _SOURCES[name]
    root = resolve_root(cfg, f"{folder}/raw/ (torchvision's layout)")
    try:
        ds = cls(str(root), train=train, download=cfg.download)
    except RuntimeError as err:
        if "not found" in str(err).lower():
            raise DecnnError(
                f"{folder} files are missing under {root / folder / 'raw'}; put the four IDX files there "
                "(torchvision's layout) or add --download"
            ) from None
        raise _corrupt(folder, root, err) from None
    except (AssertionError, ValueError, TypeError, OSError, EOFError) as err:
        raise _corrupt(folder, root, err) from None
    x = ds.data.unsqueeze(1).float() / 255.0
    return x, ds.targets.long()


def _corrupt(folder: str, root: Path, err: Exception) -> DecnnError:
    return DecnnError(
        f"the {folder} IDX files under {root / folder / 'raw'} are corrupt ({type(err).__name__}: {err}); "
        "replace them with intact copies or re-download with --download"
    )


def load(cfg: DataConfig, name: str) -> Splits:
    x_train, y_train = read_split(cfg, name, train=True)
    x_test, y_test = read_split(cfg, name, train=False)
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise DecnnError(f"{name} image and label files disagree in length; replace them with intact copies")
    mean, std = channel_stats(x_train)
    classes = datasets.MNIST.classes if name == "mnist" else datasets.FashionMNIST.classes
    spec = DataSpec(
        name=name,
        in_shape=(1, 28, 28),
        num_outputs=10,
        task="multiclass",
        output_names=tuple(classes),
        mean=mean,
        std=std,
    )
    return finish_splits(spec, TensorDataset(x_train, y_train), TensorDataset(x_test, y_test), cfg)
