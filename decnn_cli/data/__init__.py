"""Datasets by name -> seeded (train, val, test) splits with inputs in [0, 1].

One explicit registry: the CLI's choices and the tests' parametrisation both come from ``DATASETS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from decnn_cli.config import DataConfig
from decnn_cli.data import celeba, colored, digits, mnist, speech
from decnn_cli.data.spec import DataSpec, Splits
from decnn_cli.errors import DecnnError


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset; ``batch_size`` and ``epochs`` are its defaults when a run does not set them."""

    summary: str
    load: Callable[[DataConfig], Splits]
    needs_root: bool
    batch_size: int = 128
    epochs: int = 10


DATASETS: dict[str, DatasetEntry] = {
    # 1,293 training images: small batches and more epochs give the ~800 steps that the default run needs.
    "digits": DatasetEntry(
        "scikit-learn's 1,797 bundled digits at 28x28 (offline default)", digits.load, False, batch_size=32, epochs=20
    ),
    "mnist": DatasetEntry("MNIST, 28x28 grayscale digits", lambda cfg: mnist.load(cfg, "mnist"), True),
    "fashion": DatasetEntry("Fashion-MNIST, 28x28 grayscale clothing", lambda cfg: mnist.load(cfg, "fashion"), True),
    "colored-digits": DatasetEntry(
        "bundled digits painted red/green, colour correlated with the class in training (offline)",
        lambda cfg: colored.load(cfg, "digits"),
        False,
        batch_size=32,
        epochs=20,
    ),
    "colored-mnist": DatasetEntry(
        "MNIST painted red/green, colour correlated with the class in training",
        lambda cfg: colored.load(cfg, "mnist"),
        True,
    ),
    "celeba": DatasetEntry("CelebA aligned faces at 64x64 RGB, 40 attributes", celeba.load, True),
    "audiomnist": DatasetEntry(
        "AudioMNIST spoken digits as 32x32 log-mel spectrograms over 0-8 kHz", speech.load_audiomnist, True
    ),
    "fluent": DatasetEntry(
        "Fluent Speech Commands, 6 actions, 32x32 log-mel spectrograms over 0-8 kHz", speech.load_fluent, True
    ),
    # 1,620 training clips: small batches and more epochs, as for the bundled digits (a guess, not tuned).
    "fsdd": DatasetEntry(
        "Free Spoken Digit Dataset, 32x32 log-mel spectrograms over 0 Hz to the Nyquist frequency of its lowest "
        "sample rate (4 kHz at 8 kHz); FSDD's split, index 0-4 test",
        speech.load_fsdd,
        True,
        batch_size=32,
        epochs=20,
    ),
}


def get_dataset(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise DecnnError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    return DATASETS[name]


def load_splits(cfg: DataConfig) -> Splits:
    """The seeded train/val/test splits that ``cfg`` names."""
    return get_dataset(cfg.name).load(cfg)


__all__ = ["DATASETS", "DataSpec", "DatasetEntry", "Splits", "get_dataset", "load_splits"]
