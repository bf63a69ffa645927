"""Data of one's own: ``folder:PATH`` (an image-folder tree, or MNIST-style IDX files; a tree of WAV files is
``decnn_cli.data.sound_folder``'s) and ``torchvision:NAME``
(a dataset of ``torchvision.datasets``), converted to one input shape; and folders of outlier images.

An image-folder tree has one subfolder per class (torchvision's ``ImageFolder`` layout, found by its own
``find_classes`` and ``make_dataset``); ``train/``, ``val/`` and ``test/`` subfolders, each such a tree, are used
when present and a split that is missing is split off the training images, stratified by class and seeded by
``data.split_seed``. An IDX folder holds ``train-`` and ``t10k-images-idx3-ubyte`` with their ``labels-idx1-ubyte``
(raw or ``.gz``). Images are converted to ``data.channels`` and ``data.image_size`` (default: the first training
image's, at most 64 on its longer side) and read lazily, so a tree need not fit in memory; the shape and how it was
reached are in the run's notes.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset, TensorDataset

from decnn_cli.config import DataConfig
from decnn_cli.data import idx, sources
from decnn_cli.data.roots import resolve_root
from decnn_cli.data.spec import DataSpec, Splits, channel_stats
from decnn_cli.data.splitting import finish_splits
from decnn_cli.errors import DecnnError

SPLITS = ("train", "val", "test")
# Share of the images held out as the test split when a tree has no test/ folder (stratified by class, seeded).
TEST_FRACTION = 0.2
# Training images (a seeded sample) that the per-channel mean and std of the model's normalisation are measured on.
STATS_IMAGES = 2000
# Longest side of the default input size: larger images are scaled down unless data.image_size says otherwise. An
# MLP's first layer and its decoder's last grow with the pixel count (3x218x178 photos: 90M parameters, ~4 s a
# ReDecNN step on 2 CPU cores); 64 is the largest side of the paper's inputs (CelebA at 64x64).
DEFAULT_MAX_SIDE = 64
# PIL modes read as one grayscale channel; every other mode is read as RGB (alpha dropped, palettes expanded).
GRAYSCALE_MODES = ("1", "L", "LA", "I", "F")

Shape = tuple[int, int, int]


# --- images and their conversion -----------------------------------------------------------------------


def pil_tensor(image) -> torch.Tensor:
    """A PIL image as (C, H, W) floats in [0, 1]: C = 1 for grayscale modes, else 3. 16-bit grayscale is scaled by
    65535 (PIL's own conversion to 8 bits would clip it)."""
    if image.mode.startswith("I;16"):
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 65535.0)[None]
    image = image.convert("L" if image.mode in GRAYSCALE_MODES else "RGB")
    return TF.pil_to_tensor(image).float() / 255.0


def read_image(path: Path) -> torch.Tensor:
    """One image file as (C, H, W) floats in [0, 1] (``pil_tensor``); an unreadable file is one DecnnError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return pil_tensor(image)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DecnnError(f"could not read the image {path} ({err}); replace or remove the file") from None


def fit_shape(x: torch.Tensor, shape: Shape) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] -> (N, C', H', W') of ``shape``: RGB -> grayscale (ITU-R 601 luma) or a
    grayscale channel copied to RGB, then a bilinear, antialiased resize; unchanged where they already fit."""
    c, h, w = shape
    if x.shape[1] == 3 and c == 1:
        x = TF.rgb_to_grayscale(x)
    elif x.shape[1] == 1 and c == 3:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != c:
        raise DecnnError(f"cannot convert {x.shape[1]}-channel images to {c} channels; pick another image set")
    if tuple(x.shape[-2:]) != (h, w):
        x = TF.resize(x, [h, w], antialias=True)
    return x.clamp(0.0, 1.0).contiguous()


def conversion_steps(native: Shape, shape: Shape) -> str:
    """What ``fit_shape`` does to images of shape ``native``, in words."""
    steps = []
    if native[0] == 3 and shape[0] == 1:
        steps.append("RGB -> grayscale (ITU-R 601 luma)")
    elif native[0] == 1 and shape[0] == 3:
        steps.append("grayscale -> RGB (channel copied)")
    if native[1:] != shape[1:]:
        steps.append(f"resized {native[1]}x{native[2]} -> {shape[1]}x{shape[2]} (bilinear, antialiased)")
    return "; ".join(steps) or "no conversion needed"


def convert(x: torch.Tensor, shape: Shape) -> tuple[torch.Tensor, str]:
    """``fit_shape`` and a sentence saying what was done."""
    native = tuple(x.shape[1:])
    return fit_shape(x, shape), conversion_steps(native, shape)  # type: ignore[arg-type]


def shape_name(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def default_size(native: tuple[int, int]) -> tuple[tuple[int, int], str]:
    """The image size a run uses when ``data.image_size`` is unset: the first training image's, scaled down (aspect
    kept) to at most ``DEFAULT_MAX_SIDE`` on its longer side."""
    longer = max(native)
    if longer <= DEFAULT_MAX_SIDE:
        return native, "the first training image's size"
    scale = DEFAULT_MAX_SIDE / longer
    size = (max(1, round(native[0] * scale)), max(1, round(native[1] * scale)))
    return size, (
        f"the first training image's size {native[0]}x{native[1]} scaled to {DEFAULT_MAX_SIDE} on its longer side, "
        "as data.image_size is unset"
    )


def target_shape(cfg: DataConfig, native: Shape) -> tuple[Shape, str]:
    """The input shape a run of ``cfg`` uses for images whose first is ``native``, and where it comes from."""
    channels = cfg.channels or native[0]
    size, size_from = (cfg.image_size, "data.image_size") if cfg.image_size else default_size(native[1:])
    shape = (channels, size[0], size[1])
    channels_from = "data.channels" if cfg.channels else "the first training image's channels"
    return shape, f"{size_from}; {channels_from}"


class ImageFiles(Dataset):
    """Image files read when indexed, converted to ``shape``: yields ((C, H, W) floats in [0, 1], label)."""

    def __init__(self, files: list[Path], targets: torch.Tensor, shape: Shape):
        self.files, self.targets, self.shape = files, targets, shape

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return fit_shape(read_image(self.files[index])[None], self.shape)[0], self.targets[index]


class Converted(Dataset):
    """A dataset yielding (PIL image, label), such as torchvision's, as ((C, H, W) floats in [0, 1] of ``shape``,
    label); ``targets`` (N,) are its labels."""

    def __init__(self, base: Dataset, targets: torch.Tensor, shape: Shape):
        self.base, self.targets, self.shape = base, targets, shape

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, _ = self.base[index]
        return fit_shape(pil_tensor(image)[None], self.shape)[0], self.targets[index]


def _stats(dataset: Dataset, seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std over at most ``STATS_IMAGES`` training images (a seeded sample)."""
    n = len(dataset)
    index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:STATS_IMAGES].sort().values
    if isinstance(dataset, TensorDataset):
        return channel_stats(dataset.tensors[0][index])
    return channel_stats(torch.stack([dataset[i][0] for i in index.tolist()]))


# --- folder:PATH ----------------------------------------------------------------------------------------


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int, what: str, where: str, classes: list[str] | None = None
) -> tuple[list, list]:
    """Indices (kept, held out) of a seeded split that holds out ``fraction`` of every class (scikit-learn's);
    ``classes`` names the labels in its errors."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    counts = Counter(labels.tolist())
    few = sorted(c for c, n in counts.items() if n < 2)  # one to keep and one to hold out
    if few:
        named = ", ".join(f"{classes[c] if classes else c!r} ({counts[c]})" for c in few)
        raise DecnnError(
            f"{where}: cannot split off a {what} split: every class needs at least 2 examples left to split, and "
            f"{named} has fewer; add examples to it, remove its folder, or give the split its own {what}/ folder"
        )
    # At least one example of every class is held out: scikit-learn asks for as many as there are classes.
    count = max(math.ceil(fraction * len(labels)), len(labels.unique()))
    try:
        kept, held = train_test_split(index, test_size=count, stratify=labels.numpy(), random_state=seed)
    except ValueError as err:
        raise DecnnError(
            f"{where}: cannot split off a {what} split of {fraction:g} of each class ({err}); add images, or give "
            f"the split its own {what}/ folder"
        ) from None
    return sorted(kept.tolist()), sorted(held.tolist())


def class_tree(
    folder: Path,
    name: str,
    suffixes: tuple[str, ...] = sources.IMAGE_SUFFIXES,
    is_class: Callable[[os.DirEntry], bool] = os.DirEntry.is_dir,
) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """The classes of a class-folder tree (the subfolders ``is_class`` accepts; torchvision's ``find_classes`` by
    default) and the (file, class) pairs of each split folder it has: the files ending in ``suffixes`` (images by
    default), found by torchvision's ``make_dataset``."""
    from torchvision.datasets.folder import find_classes, make_dataset

    what = "images" if suffixes == sources.IMAGE_SUFFIXES else f"{'/'.join(suffixes)} files"
    splits = {s: folder / s for s in SPLITS if (folder / s).is_dir()}
    if splits and "train" not in splits:
        raise DecnnError(
            f"{name}: {folder} has {'/, '.join(splits)}/ but no train/; add train/ (one subfolder per class)"
        )
    top = splits.get("train", folder)
    try:
        by_default = is_class is os.DirEntry.is_dir
        classes = find_classes(top)[0] if by_default else sorted(e.name for e in os.scandir(top) if is_class(e))
    except FileNotFoundError:  # find_classes: no class folder
        classes = []
    if not classes:
        raise DecnnError(
            f"{name}: {top} holds no class subfolders of {what}; put each class's {what} in a folder of its own "
            f"({top}/<class>/*{suffixes[0]})"
        )
    class_to_idx = {c: i for i, c in enumerate(classes)}  # find_classes' own numbering: sorted names
    found: dict[str, list[tuple[str, int]]] = {}
    for split, path in (splits or {"train": folder}).items():
        others = sorted({e.name for e in os.scandir(path) if is_class(e)} - set(classes))
        if others:
            raise DecnnError(f"{name}: {path} has classes that train/ lacks ({', '.join(others)}); add them to train/")
        try:
            found[split] = make_dataset(str(path), class_to_idx, extensions=suffixes, allow_empty=True)
        except FileNotFoundError as err:
            raise DecnnError(f"{name}: {err}; put {what} ({', '.join(suffixes)}) there") from None
        if not found[split]:
            raise DecnnError(f"{name}: {path} holds no {what} in its class folders")
    return classes, found


def _idx_folder(folder: Path, name: str) -> dict[str, TensorDataset]:
    """train and test of an IDX folder as (N, 1, H, W) uint8 images and labels."""
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = idx.find(folder, f"{prefix}{sources.IDX_IMAGES}")
        labels = idx.find(folder, f"{prefix}{sources.IDX_LABELS}")
        if images is None or labels is None:
            raise DecnnError(
                f"{name}: to train on IDX files, {folder} needs {prefix}{sources.IDX_IMAGES} and "
                f"{prefix}{sources.IDX_LABELS} (raw or .gz), as MNIST's are named"
            )
        x, y = idx.read_idx(images), idx.read_idx(labels).long()
        if len(x) != len(y):
            raise DecnnError(f"{images} and {labels} disagree in length ({len(x)} vs {len(y)}); replace them")
        out[split] = TensorDataset(x.unsqueeze(1), y)
    return out


def load(cfg: DataConfig) -> Splits:
    """The splits of ``folder:PATH``: an IDX folder if it holds IDX image files, else an image-folder tree."""
    folder = sources.check_folder(cfg.name, "to train on", sound=True)
    if sources.idx_image_files(folder):
        return _load_idx(cfg, folder)
    if not sources.holds_images(folder):  # WAV files only (check_folder): spectrograms, as the speech datasets
        from decnn_cli.data import sound_folder

        return sound_folder.load(cfg, folder)
    classes, found = class_tree(folder, cfg.name)
    first = read_image(Path(found["train"][0][0]))
    shape, origin = target_shape(cfg, tuple(first.shape))  # type: ignore[arg-type]

    def files(split: str) -> tuple[list[Path], torch.Tensor]:
        pairs = found.get(split, [])
        return [Path(p) for p, _ in pairs], torch.tensor([c for _, c in pairs], dtype=torch.long)

    parts = {split: files(split) for split in SPLITS}
    how = []
    for split, fraction, seed in (("test", TEST_FRACTION, cfg.split_seed), ("val", cfg.val_fraction, cfg.split_seed)):
        if split in found:
            how.append(f"{split}/ as given")
            continue
        train_files, train_labels = parts["train"]
        kept, held = stratified_split(train_labels, fraction, seed, split, cfg.name, classes)
        parts[split] = ([train_files[i] for i in held], train_labels[held])
        parts["train"] = ([train_files[i] for i in kept], train_labels[kept])
        how.append(f"{split}: {fraction:g} of each class of the training images (stratified, seed {seed})")
    data = {split: ImageFiles(*parts[split], shape) for split in SPLITS}
    return _finish(cfg, data, classes, shape, origin, f"the image folders of {folder}", how, first)


def _load_idx(cfg: DataConfig, folder: Path) -> Splits:
    raw = _idx_folder(folder, cfg.name)
    native = (1, *raw["train"].tensors[0].shape[-2:])
    shape, origin = target_shape(cfg, native)  # type: ignore[arg-type]
    x_train, y_train = raw["train"].tensors
    x_test, y_test = raw["test"].tensors
    train_all = TensorDataset(fit_shape(x_train.float() / 255.0, shape), y_train)
    kept, held = stratified_split(y_train, cfg.val_fraction, cfg.split_seed, "val", cfg.name)
    data = {
        "train": TensorDataset(*(t[kept] for t in train_all.tensors)),
        "val": TensorDataset(*(t[held] for t in train_all.tensors)),
        "test": TensorDataset(fit_shape(x_test.float() / 255.0, shape), y_test),
    }
    classes = [str(c) for c in range(int(max(y_train.max(), y_test.max())) + 1)]
    how = [
        "train-/t10k- IDX files as train/test",
        f"val: {cfg.val_fraction:g} of each class of train (stratified, seed {cfg.split_seed})",
    ]
    return _finish(cfg, data, classes, shape, origin, f"the IDX files of {folder}", how, x_train[0].float() / 255.0)


def _class_spec(cfg: DataConfig, shape: Shape, classes: list[str], train: Dataset) -> DataSpec:
    """A multi-class dataset's spec, normalised with its training images' statistics."""
    mean, std = _stats(train, cfg.split_seed)
    return DataSpec(
        name=cfg.name,
        in_shape=shape,
        num_outputs=len(classes),
        task="multiclass",
        output_names=tuple(classes),
        mean=mean,
        std=std,
    )


def _finish(
    cfg: DataConfig,
    data: dict[str, Dataset],
    classes: list[str],
    shape: Shape,
    origin: str,
    kind: str,
    how: list[str],
    first: torch.Tensor,
) -> Splits:
    spec = _class_spec(cfg, shape, classes, data["train"])
    splits = finish_splits(spec, data["train"], data["test"], cfg, val=data["val"])
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    splits.notes = [
        f"{len(classes)} classes ({shown}) from {kind}; {'; '.join(how)}; "
        f"{len(data['train'])} / {len(data['val'])} / {len(data['test'])} train / val / test images",
        f"inputs {shape_name(shape)} ({origin}); the first image, {shape_name(tuple(first.shape))}: "
        f"{conversion_steps(tuple(first.shape), shape)}",  # type: ignore[arg-type]
    ]
    return splits


# --- torchvision:NAME -----------------------------------------------------------------------------------


def load_torchvision(cfg: DataConfig) -> Splits:
    """The splits of ``torchvision:NAME``: torchvision's train and test splits (val split off train, seeded)."""
    import torchvision.datasets

    key, entry = sources.torchvision_set(cfg.name[len(sources.TORCHVISION) :])
    root = resolve_root(cfg, f"the files of torchvision's {entry.cls} in torchvision's own layout")
    cls = getattr(torchvision.datasets, entry.cls)

    def split(train: bool) -> Dataset:
        kwargs = dict(entry.kwargs)
        if entry.split_style == "train":
            kwargs["train"] = train
        else:
            kwargs["split"] = "train" if train else "test"
        try:
            return cls(str(root), download=cfg.download, **kwargs)
        except (RuntimeError, FileNotFoundError, OSError) as err:
            raise DecnnError(
                f"torchvision:{key}: the files under {root} could not be read (torchvision: {err}); put torchvision's "
                f"{entry.cls} files there in its layout, or add --download"
            ) from None

    base = {"train": split(True), "test": split(False)}
    targets = {name: _targets(ds) for name, ds in base.items()}
    first = pil_tensor(base["train"][0][0])
    shape, origin = target_shape(cfg, tuple(first.shape))  # type: ignore[arg-type]
    classes = list(getattr(base["train"], "classes", None) or [])
    top = int(max(targets["train"].max(), targets["test"].max())) + 1
    if len(classes) < top:
        classes = [str(c) for c in range(top)]
    train, test = (Converted(base[s], targets[s], shape) for s in ("train", "test"))
    spec = _class_spec(cfg, shape, classes, train)
    splits = finish_splits(spec, train, test, cfg)
    splits.notes = [
        f"torchvision's {key} ({entry.summary}) from {root}: {len(train)} train and {len(test)} test images, "
        f"val {cfg.val_fraction:g} of train (seed {cfg.split_seed})",
        f"inputs {shape_name(shape)} ({origin}); the first image, {shape_name(tuple(first.shape))}: "
        f"{conversion_steps(tuple(first.shape), shape)}",  # type: ignore[arg-type]
    ]
    return splits


def _targets(dataset: Dataset) -> torch.Tensor:
    """The labels of a torchvision dataset (its ``targets`` or ``labels``), as class indices (N,)."""
    for attribute in ("targets", "labels", "_labels"):
        values = getattr(dataset, attribute, None)
        if values is not None and len(values) == len(dataset):
            return torch.as_tensor(np.asarray(values), dtype=torch.long)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


# --- outliers from a folder -----------------------------------------------------------------------------


def image_files(folder: Path) -> list[Path]:
    """Every image under ``folder``, at any depth, in sorted path order."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        found += [Path(root) / f for f in sorted(files) if f.lower().endswith(sources.IMAGE_SUFFIXES)]
    return found


def outlier_images(name: str, shape: Shape, limit: int | None) -> tuple[torch.Tensor, str]:
    """The images of ``folder:PATH`` (the first ``limit``) as (N, C, H, W) of ``shape``, and how they were made.

    An IDX folder gives the images of its ``*-images-idx3-ubyte`` files (raw or .gz) in file-name order (t10k-
    before train-); any other folder every image under it, at any depth, in path order.
    """
    folder = sources.check_folder(name, "to score as outliers")
    idx_files = sources.idx_image_files(folder)
    if idx_files:
        parts, notes = [], []
        for path in idx_files:
            left = None if limit is None else limit - sum(len(p) for p in parts)
            if left is not None and left <= 0:
                break
            x, how = convert(idx.read_idx(path)[:left].unsqueeze(1).float() / 255.0, shape)
            parts.append(x)
            notes.append(f"{len(x)} of {path.name}: {how}")
        x = torch.cat(parts)
        return x, f"{len(x)} images of the IDX files in {folder} ({'; '.join(notes)})"
    files = image_files(folder)[:limit]
    images, natives = [], Counter()
    for path in files:
        image = read_image(path)
        natives[tuple(image.shape)] += 1
        images.append(fit_shape(image[None], shape))
    x = torch.cat(images)
    shown = "; ".join(
        f"{n} of {shape_name(s)}: {conversion_steps(s, shape)}"  # type: ignore[arg-type]
        for s, n in natives.most_common(3)
    )
    more = f", and {len(natives) - 3} other shapes" if len(natives) > 3 else ""
    return x, f"{len(x)} images under {folder}: {shown}{more}"


__all__ = [
    "Converted",
    "ImageFiles",
    "convert",
    "fit_shape",
    "image_files",
    "load",
    "load_torchvision",
    "outlier_images",
    "read_image",
]
