"""MNIST and Fashion-MNIST through torchvision's own IDX parsers, held in memory as tensors."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from torchvision import datasets

from decnn_cli.config import DataConfig
from decnn_cli.data import idx
from decnn_cli.data.idx import IDX_FILES
from decnn_cli.data.roots import resolve_root
from decnn_cli.data.spec import DataSpec, Splits, channel_stats
from decnn_cli.data.splitting import finish_splits
from decnn_cli.errors import DecnnError

_SOURCES = {
    "mnist": (datasets.MNIST, "MNIST"),
    "fashion": (datasets.FashionMNIST, "FashionMNIST"),
}


def read_split(cfg: DataConfig, name: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of ``name`` as (N, 1, 28, 28) floats in [0, 1] and labels (N,).

    torchvision reads the four uncompressed IDX files; a folder that holds a split's files only as the published
    ``.gz`` archives (a read-only copy, say) is read from those.
    """
    cls, folder = _SOURCES[name]
    root = resolve_root(cfg, f"{folder}/raw/ (torchvision's layout)")
    raw = root / folder / "raw"
    prefix = "train" if train else "t10k"
    uncompressed = all((raw / f"{p}-{suffix}").is_file() for p in ("train", "t10k") for suffix in IDX_FILES)
    if not uncompressed and not cfg.download:
        images, labels = (idx.find(raw, f"{prefix}-{suffix}") for suffix in IDX_FILES)
        if images is not None and labels is not None:
            return idx.read_idx(images).unsqueeze(1).float() / 255.0, idx.read_idx(labels).long()
    try:
        ds = cls(str(root), train=train, download=cfg.download)
    except RuntimeError as err:
        if "not found" in str(err).lower():
            raise DecnnError(
                f"{folder} files are missing under {raw}; put the four IDX files there, raw or as the published "
                ".gz files (torchvision's layout), or add --download"
            ) from None
        raise _corrupt(folder, root, train, err) from None
    except (AssertionError, ValueError, TypeError, OSError, EOFError) as err:
        raise _corrupt(folder, root, train, err) from None
    x = ds.data.unsqueeze(1).float() / 255.0
    return x, ds.targets.long()


def _corrupt(folder: str, root: Path, train: bool, err: Exception) -> DecnnError:
    """The clearest error for an IDX split torchvision could not read: the file at fault when one can be named."""
    raw = root / folder / "raw"
    for suffix, (kind, magic) in IDX_FILES.items():
        path = raw / f"{'train' if train else 't10k'}-{suffix}"
        try:
            problem = idx.idx_problem(path.read_bytes(), path, kind, magic)
        except OSError:
            continue
        if problem:
            return DecnnError(
                f"{problem}; replace it with an intact copy of the {folder} file or re-download with --download"
            )
    detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return DecnnError(
        f"the {folder} IDX files under {raw} are corrupt ({detail}); "
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
