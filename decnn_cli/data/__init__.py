"""Datasets by name -> seeded (train, val, test) splits with inputs in [0, 1].

One explicit registry: ``decnn datasets`` and the tests' parametrisation come from ``DATASETS``. Besides its names,
a dataset may be named by a prefix (``decnn_cli.data.sources``, the one resolver of ``--dataset`` and
``--outlier``): ``folder:PATH`` (an image-folder tree or a folder of IDX files) and ``torchvision:NAME``. Importing
this module imports no torch: each entry names its loader, which is imported when a run loads the dataset.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from decnn_cli.data import sources
from decnn_cli.errors import DecnnError

if TYPE_CHECKING:
    from decnn_cli.config import DataConfig
    from decnn_cli.data.spec import Splits


def _loader(module: str, function: str = "load", *args: Any) -> Callable[[DataConfig], Splits]:
    """``decnn_cli.data.<module>.<function>(cfg, *args)``, imported on first use (loaders import torch)."""

    def load(cfg: DataConfig) -> Splits:
        return getattr(importlib.import_module(f"decnn_cli.data.{module}"), function)(cfg, *args)

    return load


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset; ``batch_size`` and ``epochs`` are its defaults when a run does not set them.

    ``reads`` names the optional ``[data]`` keys its loader reads (target, held-out attribute, ...): a run of
    another dataset ignores them, so they neither name nor key its folder. ``multilabel``: its outputs are binary
    attributes (one sigmoid each) unless a run names one ``target``.
    """

    summary: str
    load: Callable[[DataConfig], Splits]
    needs_root: bool
    # A named dataset's is a number: what "auto" gives for its usual training split (the full CelebA is the exception).
    batch_size: int | Literal["auto"] = 128
    epochs: int = 10
    reads: frozenset[str] = frozenset()
    multilabel: bool = False
    # The size of the training split a run of ``cfg`` gets, where it is known without reading the data (run folders
    # are then keyed on whether ``train.min_steps`` raises the epochs); None elsewhere.
    train_examples: Callable[[DataConfig], int] | None = None

    def is_multilabel(self, cfg: DataConfig) -> bool:
        """Whether a run of this dataset with ``cfg`` has a multi-label task (known without loading the data)."""
        return self.multilabel and not ("target" in self.reads and cfg.target is not None)


_COLORED = frozenset({"target", "color_correlation"})


def _split_off_val(official_train: int) -> Callable[[DataConfig], int]:
    """The training-split size of a dataset whose official training set of ``official_train`` examples gives up
    ``val_fraction`` of them to validation (``splitting.split_off_val``), capped at ``--subset``."""

    def size(cfg: DataConfig) -> int:
        train = official_train - max(1, round(official_train * cfg.val_fraction))
        return train if cfg.subset is None else min(train, cfg.subset)

    return size


DATASETS: dict[str, DatasetEntry] = {
    # 1,293 training images: small batches and more epochs give the ~800 steps that the default run needs.
    "digits": DatasetEntry(
        "scikit-learn's 1,797 bundled digits at 28x28 (offline default)",
        _loader("digits"),
        False,
        batch_size=32,
        epochs=20,
    ),
    "mnist": DatasetEntry(
        "MNIST, 28x28 grayscale digits",
        _loader("mnist", "load", "mnist"),
        True,
        train_examples=_split_off_val(60_000),
    ),
    "fashion": DatasetEntry(
        "Fashion-MNIST, 28x28 grayscale clothing",
        _loader("mnist", "load", "fashion"),
        True,
        train_examples=_split_off_val(60_000),
    ),
    "colored-digits": DatasetEntry(
        "bundled digits painted red/green, colour correlated with the class in training (offline)",
        _loader("colored", "load", "digits"),
        False,
        batch_size=32,
        epochs=20,
        reads=_COLORED,
    ),
    "colored-mnist": DatasetEntry(
        "MNIST painted red/green, colour correlated with the class in training",
        _loader("colored", "load", "mnist"),
        True,
        reads=_COLORED,
    ),
    # Batch 32: the 6,000-image subset's 4,560 training faces give 143 steps per epoch (36 at 128). Set
    # data.batch_size = 128 for the full CelebA.
    "celeba": DatasetEntry(
        "CelebA aligned faces at 64x64 RGB, 40 attributes (and Bearded = not No_Beard as a target)",
        _loader("celeba"),
        True,
        batch_size=32,
        reads=frozenset({"target", "negate_target", "holdout_attr", "protected", "split", "test_fraction", "stratify"}),
        multilabel=True,
    ),
    "audiomnist": DatasetEntry(
        "AudioMNIST spoken digits as 32x32 log-mel spectrograms over 0-8 kHz",
        _loader("speech", "load_audiomnist"),
        True,
    ),
    "fluent": DatasetEntry(
        "Fluent Speech Commands, 6 actions, 32x32 log-mel spectrograms over 0-8 kHz",
        _loader("speech", "load_fluent"),
        True,
    ),
    # 1,620 training clips: small batches and more epochs, as for the bundled digits (a guess, not tuned).
    "fsdd": DatasetEntry(
        "Free Spoken Digit Dataset, 32x32 log-mel spectrograms over 0 Hz to the Nyquist frequency of its lowest "
        "sample rate (4 kHz at 8 kHz); FSDD's split, index 0-4 test",
        _loader("speech", "load_fsdd"),
        True,
        batch_size=32,
        epochs=20,
    ),
}


# The [data] keys that datasets named by a prefix read: the shape their images are converted to.
IMAGE_OPTIONS = frozenset({"image_size", "channels"})
PREFIXED: dict[str, DatasetEntry] = {
    sources.FOLDER: DatasetEntry(
        "an image-folder tree (one subfolder per class; train/, val/, test/ when present), a tree of WAV files "
        "as 32x32 log-mel spectrograms (the same layout, or Speech Commands' with its split lists) or MNIST-style "
        "IDX files",
        _loader("folder"),
        False,
        batch_size="auto",
        reads=IMAGE_OPTIONS,
    ),
    sources.TORCHVISION: DatasetEntry(
        "a dataset of torchvision.datasets, read from the data root in torchvision's layout",
        _loader("folder", "load_torchvision"),
        True,
        batch_size="auto",
        reads=IMAGE_OPTIONS,
    ),
}


def get_dataset(name: str) -> DatasetEntry:
    """The entry of a registered name, or of a ``folder:`` / ``torchvision:`` name (checked: the folder exists and
    holds images, the torchvision dataset is one of ``sources.TORCHVISION_SETS``); otherwise one error that lists
    the valid forms."""
    if name in DATASETS:
        return DATASETS[name]
    for prefix, entry in PREFIXED.items():
        if name.startswith(prefix):
            sources.check_dataset(name)
            return entry
    sources.canonical_dataset(name)  # raises, listing the valid forms
    raise DecnnError(f"unknown dataset {name!r}; choose from {sources.dataset_forms()}")


def load_splits(cfg: DataConfig) -> Splits:
    """The seeded train/val/test splits that ``cfg`` names."""
    return get_dataset(cfg.name).load(cfg)


__all__ = ["DATASETS", "PREFIXED", "DatasetEntry", "get_dataset", "load_splits"]
