"""MNIST and Fashion-MNIST through torchvision's own IDX parsers, held in memory as tensors."""

from __future__ import annotations

import math
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
        raise _corrupt(folder, root, train, err) from None
    except (AssertionError, ValueError, TypeError, OSError, EOFError) as err:
        raise _corrupt(folder, root, train, err) from None
    x = ds.data.unsqueeze(1).float() / 255.0
    return x, ds.targets.long()


# IDX magic numbers: two zero bytes, the element type (0x08: unsigned byte), the number of dimensions.
_IDX_FILES = {"images-idx3-ubyte": ("image", 0x00000803), "labels-idx1-ubyte": ("label", 0x00000801)}


def _idx_problem(path: Path, kind: str, magic: int) -> str | None:
    """What is wrong with the header or length of one IDX file, as the start of a sentence; None if nothing."""
    data = path.read_bytes()
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        seen = f"{found:#010x}" if found is not None else f"missing from its {len(data)} bytes"
        return f"{path} is not an IDX {kind} file (its magic number is {seen} where {kind} files have {magic:#010x})"
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(dims) if len(data) >= header else header
    if len(data) != expected:
        return f"{path} is corrupt (it holds {len(data)} bytes where its header asks for {expected})"
    return None


def _corrupt(folder: str, root: Path, train: bool, err: Exception) -> DecnnError:
    """The clearest error for an IDX split torchvision could not read: the file at fault when one can be named."""
    raw = root / folder / "raw"
    for suffix, (kind, magic) in _IDX_FILES.items():
        path = raw / f"{'train' if train else 't10k'}-{suffix}"
        try:
            problem = _idx_problem(path, kind, magic)
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
