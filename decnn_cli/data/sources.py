"""Data sources by prefix, one resolver for ``--dataset`` and ``--outlier``: a registered name (``decnn
datasets``), ``folder:PATH`` (an image-folder tree, a tree of WAV files or a folder of IDX files) or
``torchvision:NAME`` (a dataset of ``torchvision.datasets`` read from the data root).

Everything here is checked without torch, so that a misspelt name or a missing folder fails at once, before any
model or dataset is loaded. Outlier sets have more forms than datasets: ``patches``, ``corrupt:<name>[@severity]``,
``celeba-holdout:<Attribute>`` and ``attack:<name>[@eps]`` (adversarial inputs crafted against the run itself).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decnn_cli.errors import ConfigError, DecnnError

FOLDER = "folder:"
TORCHVISION = "torchvision:"
CORRUPT = "corrupt:"
CELEBA_HOLDOUT = "celeba-holdout:"
ATTACK = "attack:"

# Images of an image-folder tree: the suffixes torchvision's ImageFolder reads (png, jpg, jpeg and bmp among them).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SOUND_SUFFIXES = (".wav",)
IDX_IMAGES = "-images-idx3-ubyte"
IDX_LABELS = "-labels-idx1-ubyte"


@dataclass(frozen=True)
class TorchvisionSet:
    """A dataset of ``torchvision.datasets``: its class, how its train and test splits are asked for (``train=True``
    or ``split='train'``), and any other constructor argument."""

    cls: str
    summary: str
    split_style: str = "train"  # "train": train=True/False; "split": split="train"/"test"
    kwargs: tuple[tuple[str, Any], ...] = ()


# Image-classification datasets with a train and a test split, read from the data root in torchvision's own layout
# (``--download`` fetches them where the internet is reachable). Names are matched without regard to case.
TORCHVISION_SETS: dict[str, TorchvisionSet] = {
    "MNIST": TorchvisionSet("MNIST", "handwritten digits, 28x28 grayscale, 10 classes"),
    "FashionMNIST": TorchvisionSet("FashionMNIST", "Zalando's clothing, 28x28 grayscale, 10 classes"),
    "KMNIST": TorchvisionSet("KMNIST", "Kuzushiji (cursive Japanese) characters, 28x28 grayscale, 10 classes"),
    "QMNIST": TorchvisionSet("QMNIST", "MNIST's digits re-extracted from NIST, 28x28 grayscale, 10 classes"),
    "EMNIST": TorchvisionSet(
        "EMNIST",
        "NIST letters and digits, 28x28 grayscale, the 47-class 'balanced' split",
        kwargs=(("split", "balanced"),),
    ),
    "EMNIST-letters": TorchvisionSet(
        "EMNIST",
        "NIST letters, 28x28 grayscale, 26 classes (labels 1-26, class 0 'N/A' unused)",
        kwargs=(("split", "letters"),),
    ),
    "EMNIST-digits": TorchvisionSet(
        "EMNIST", "NIST digits, 28x28 grayscale, 10 classes", kwargs=(("split", "digits"),)
    ),
    "USPS": TorchvisionSet("USPS", "US postal service digits, 16x16 grayscale, 10 classes"),
    "CIFAR10": TorchvisionSet("CIFAR10", "tiny natural images, 32x32 RGB, 10 classes"),
    "CIFAR100": TorchvisionSet("CIFAR100", "tiny natural images, 32x32 RGB, 100 classes"),
    "SVHN": TorchvisionSet("SVHN", "street-view house numbers, 32x32 RGB, 10 classes", split_style="split"),
    "STL10": TorchvisionSet("STL10", "natural images, 96x96 RGB, 10 classes (labelled splits)", split_style="split"),
}


def _registered() -> list[str]:
    from decnn_cli.data import DATASETS  # the registry imports this module; no cycle at import time

    return list(DATASETS)


def dataset_forms() -> list[str]:
    """Every form ``--dataset`` takes, for error messages."""
    return [*_registered(), "folder:PATH", "torchvision:NAME"]


def outlier_forms() -> list[str]:
    """Every form ``--outlier`` takes, for error messages."""
    return [
        *_registered(),
        "patches",
        "corrupt:<name>[@severity]",
        "corrupt:all",
        "celeba-holdout:<Attribute>",
        "attack:<name>[@eps]",
        "folder:PATH",
        "torchvision:NAME",
    ]


def torchvision_set(name: str) -> tuple[str, TorchvisionSet]:
    """The canonical name and entry of ``NAME`` in ``torchvision:NAME`` (any case); unknown: one error listing them."""
    by_lower = {key.lower(): key for key in TORCHVISION_SETS}
    key = by_lower.get(name.lower())
    if key is None:
        raise DecnnError(f"unknown torchvision dataset {name!r}; choose from {list(TORCHVISION_SETS)}")
    return key, TORCHVISION_SETS[key]


def folder_path(name: str) -> Path:
    """The folder of ``folder:PATH`` (``~`` expanded)."""
    return Path(os.path.expanduser(name[len(FOLDER) :]))


def canonical_dataset(name: str) -> str:
    """``name`` as a run records it: ``torchvision:`` names in torchvision's spelling, ``folder:`` paths normalised
    (``~`` expanded, ``a/./b/`` -> ``a/b``); a registered name unchanged. Raises DecnnError for an unknown form."""
    if name in _registered():
        return name
    if name.startswith(FOLDER):
        raw = name[len(FOLDER) :]
        if not raw:
            raise DecnnError("folder: needs a path, as in folder:data/my-images")
        return FOLDER + os.path.normpath(os.path.expanduser(raw))
    if name.startswith(TORCHVISION):
        return TORCHVISION + torchvision_set(name[len(TORCHVISION) :])[0]
    hint = _hint(name)
    raise DecnnError(f"unknown dataset {name!r}{hint}; choose from {dataset_forms()}")


def _hint(name: str) -> str:
    """' (did you mean torchvision:X?)' when ``name`` is a torchvision dataset's name."""
    by_lower = {key.lower(): key for key in TORCHVISION_SETS}
    key = by_lower.get(name.lower())
    return f" (did you mean torchvision:{key}?)" if key else ""


def _holds(path: Path, suffixes: tuple[str, ...]) -> bool:
    """Whether any file ending in one of ``suffixes`` lies under ``path`` (stops at the first)."""
    return any(any(f.lower().endswith(suffixes) for f in files) for _, _, files in os.walk(path, followlinks=True))


def holds_images(path: Path) -> bool:
    return _holds(path, IMAGE_SUFFIXES)


def holds_sound(path: Path) -> bool:
    """Whether a WAV file lies under ``path``: a folder of sound that ``folder:`` trains on as spectrograms."""
    return _holds(path, SOUND_SUFFIXES)


def idx_image_files(path: Path) -> list[Path]:
    """The ``*-images-idx3-ubyte`` files of ``path`` (raw or ``.gz``; the raw one where both are there), sorted."""
    found: dict[str, Path] = {}
    for file in sorted(path.iterdir()):
        stem = file.name.removesuffix(".gz")
        if stem.endswith(IDX_IMAGES) and file.is_file() and (stem not in found or file.name == stem):
            found[stem] = file
    return [found[stem] for stem in sorted(found)]


def check_folder(name: str, purpose: str, sound: bool = False) -> Path:
    """The folder of ``folder:PATH``, checked: it exists and holds images (or IDX image files, or with ``sound``
    WAV files)."""
    path = folder_path(name)
    trees = "an image-folder tree" + (" or a tree of WAV files" if sound else "")
    if not path.is_dir():
        raise DecnnError(
            f"{name}: {path} is not a folder; give {trees} (one subfolder per class) or a folder of "
            f"IDX files (*{IDX_IMAGES}, raw or .gz) {purpose}"
        )
    if not idx_image_files(path) and not holds_images(path) and not (sound and holds_sound(path)):
        wav = ", no WAV file" if sound else ""
        raise DecnnError(
            f"{name}: {path} holds no image ({', '.join(IMAGE_SUFFIXES)}){wav} and no IDX file "
            f"(*{IDX_IMAGES}[.gz]); point it at the {'data' if sound else 'images'} {purpose}"
        )
    return path


def check_dataset(name: str) -> str:
    """The canonical name of a ``--dataset``, checked as far as can be done without loading it (ConfigError)."""
    try:
        canonical = canonical_dataset(name)
        if canonical.startswith(FOLDER):
            check_folder(canonical, "to train on", sound=True)
    except DecnnError as err:
        raise ConfigError(f"invalid configuration at data.name: {err}") from None
    return canonical


def dataset_label(name: str) -> str:
    """A short, filesystem-safe name of a dataset for run folders: the registered name itself; ``folder-<its last
    path component>``; ``torchvision-<NAME>``. (What else determines a ``folder:`` run's data, its full path and
    image shape, is in the hash of its folder key.)"""
    if name.startswith(FOLDER):
        label = "folder-" + (Path(name[len(FOLDER) :]).name or "root")
    elif name.startswith(TORCHVISION):
        label = "torchvision-" + name[len(TORCHVISION) :]
    else:
        return name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label)


# --- outliers ------------------------------------------------------------------------------------------

# Attack names of ``decnn attack`` (``experiments.attack.ATTACKS``; a test keeps the two in step).
ATTACK_NAMES = ("fgsm", "pgd", "bim", "ffgsm", "mifgsm")
DEFAULT_EPS = 0.1

# MNIST-C's corruptions (``data.corruptions.CORRUPTIONS``; a test keeps the two in step).
CORRUPTION_NAMES = (
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "scale",
    "rotate",
    "brightness",
    "translate",
    "stripe",
    "fog",
    "spatter",
    "dotted_line",
    "zigzag",
    "canny_edges",
)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
# Severity 3 is the setting of MNIST-C's released data set, so a run at the default compares with published MNIST-C
# numbers.
DEFAULT_SEVERITY = 3
_CORRUPT_USAGE = (
    f"write corrupt:NAME or corrupt:NAME@SEVERITY with NAME 'all' or one of {', '.join(CORRUPTION_NAMES)} "
    f"and SEVERITY one of {', '.join(map(str, SEVERITIES))}"
)


def parse_corruption_spec(spec: str) -> list[tuple[str, int]]:
    """``corrupt:NAME[@SEVERITY]`` or ``corrupt:all[@SEVERITY]`` -> [(name, severity), ...] in MNIST-C's order.

    'corrupt:fog' -> [('fog', 3)]; 'corrupt:fog@5' -> [('fog', 5)]; 'corrupt:all@2' -> all 15 at severity 2.
    Anything else raises DecnnError saying what to write.
    """
    if not spec.startswith(CORRUPT):
        raise DecnnError(f"corruption spec {spec!r} does not start with {CORRUPT!r}; {_CORRUPT_USAGE}")
    name, at, level = spec[len(CORRUPT) :].partition("@")
    if at and not (level.isascii() and level.isdigit() and int(level) in SEVERITIES):
        raise DecnnError(f"severity {level!r} in {spec!r} is not valid; {_CORRUPT_USAGE}")
    severity = int(level) if at else DEFAULT_SEVERITY
    if name == "all":
        return [(each, severity) for each in CORRUPTION_NAMES]
    if name not in CORRUPTION_NAMES:
        raise DecnnError(f"unknown corruption {name!r} in {spec!r}; {_CORRUPT_USAGE}")
    return [(name, severity)]


def parse_attack_spec(spec: str) -> tuple[str, float]:
    """``attack:NAME[@EPS]`` -> (name, eps); eps defaults to ``DEFAULT_EPS`` (an L-inf budget on inputs in [0, 1])."""
    usage = f"write attack:NAME or attack:NAME@EPS with NAME one of {', '.join(ATTACK_NAMES)} and EPS in [0, 1]"
    name, at, level = spec[len(ATTACK) :].partition("@")
    if name not in ATTACK_NAMES:
        raise DecnnError(f"unknown attack {name!r} in {spec!r}; {usage}")
    try:
        eps = float(level) if at else DEFAULT_EPS
    except ValueError:
        raise DecnnError(f"budget {level!r} in {spec!r} is not a number; {usage}") from None
    if not 0.0 <= eps <= 1.0:
        raise DecnnError(f"budget {eps:g} in {spec!r} is out of range; {usage}")
    return name, eps


def outlier_rows(outlier: str) -> list[str]:
    """The names of the table rows that ``outlier`` gives (checked as ``check_outlier`` does): one per corruption of
    ``corrupt:all``; ``folder:<its last path component>`` for a folder; canonical spellings of the other forms."""
    if outlier.startswith(CORRUPT):
        return [f"corrupt:{name}@{severity}" for name, severity in parse_corruption_spec(outlier)]
    if outlier.startswith(ATTACK):
        name, eps = parse_attack_spec(outlier)
        return [f"attack:{name}@{eps:g}"]
    if outlier.startswith(FOLDER):
        path = folder_path(outlier)
        return [FOLDER + (path.resolve().name if path.name in ("", ".", "..") else path.name)]
    if outlier.startswith(TORCHVISION):
        return [TORCHVISION + torchvision_set(outlier[len(TORCHVISION) :])[0]]
    return [outlier]


def check_outlier(outlier: str) -> None:
    """Raise DecnnError, listing the valid forms, unless ``outlier`` names an outlier set (files of a folder are
    looked for; the data of a registered dataset, and a CelebA attribute, are checked when they are loaded)."""
    if outlier in _registered() or outlier == "patches":
        return
    if outlier.startswith(CORRUPT):
        parse_corruption_spec(outlier)
    elif outlier.startswith(ATTACK):
        parse_attack_spec(outlier)
    elif outlier.startswith(FOLDER):
        check_folder(outlier, "to score as outliers")
    elif outlier.startswith(TORCHVISION):
        torchvision_set(outlier[len(TORCHVISION) :])
    elif outlier.startswith(CELEBA_HOLDOUT):
        if not outlier[len(CELEBA_HOLDOUT) :]:
            raise DecnnError("celeba-holdout: needs an attribute, as in celeba-holdout:Wearing_Hat")
    else:
        raise DecnnError(f"unknown outlier set {outlier!r}{_hint(outlier)}; choose from {outlier_forms()}")


def check_outliers(outliers: list[str] | tuple[str, ...]) -> None:
    """``check_outlier`` for each, and no two that would share a table row (two folders of the same name)."""
    seen: dict[str, str] = {}
    for outlier in outliers:
        check_outlier(outlier)
        for row in outlier_rows(outlier):
            if row in seen and seen[row] != outlier:
                raise DecnnError(
                    f"outlier sets {seen[row]!r} and {outlier!r} would share the table row {row!r}; rename one folder"
                )
            seen[row] = outlier
