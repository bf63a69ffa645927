"""Out-of-distribution inputs for a trained run, converted to the run's input shape.

Sources (``--outlier``): another registered dataset's test split (``mnist``, ``fashion``, ``celeba``, ``digits``,
``audiomnist``, ...),
``patches`` (crops of the natural photographs bundled with scikit-learn), ``corrupt:<name>[@severity]`` /
``corrupt:all`` (MNIST-C corruptions of the inlier test split) and ``celeba-holdout:<Attribute>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from sklearn.datasets import load_sample_images
from torch.utils.data import Dataset, TensorDataset

from decnn_cli.config import DataConfig
from decnn_cli.data import DATASETS, load_splits
from decnn_cli.data.spec import DataSpec
from decnn_cli.errors import DecnnError

PATCHES = 2000


@dataclass
class OutlierSet:
    """Inputs to score as OOD (the positive class) against ``inliers`` (the negative class).

    ``inliers`` is None when the run's own test split is the inlier set; ``conversion`` says in words how
    the outliers were made to fit the model's input shape.
    """

    name: str
    outliers: Dataset
    conversion: str
    inliers: Dataset | None = None


def outlier_names() -> list[str]:
    return [*DATASETS, "patches", "corrupt:<name>[@severity]", "corrupt:all", "celeba-holdout:<Attribute>"]


def images_of(dataset: Dataset, limit: int | None = None) -> torch.Tensor:
    """The inputs of a dataset as one (N, C, H, W) tensor (the first ``limit``)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0][:n]
    return torch.stack([dataset[i][0] for i in range(n)])


def unlabelled(x: torch.Tensor) -> TensorDataset:
    """Outliers carry label -1: they belong to no class of the model."""
    return TensorDataset(x, torch.full((x.shape[0],), -1, dtype=torch.long))


def convert(x: torch.Tensor, shape: tuple[int, int, int]) -> tuple[torch.Tensor, str]:
    """Images (N, C, H, W) in [0, 1] -> the model's (C', H', W'), with a sentence saying what was done."""
    steps = []
    c, h, w = shape
    if x.shape[1] == 3 and c == 1:
        x = TF.rgb_to_grayscale(x)
        steps.append("RGB -> grayscale (ITU-R 601 luma)")
    elif x.shape[1] == 1 and c == 3:
        x = x.expand(-1, 3, -1, -1)
        steps.append("grayscale -> RGB (channel copied)")
    elif x.shape[1] != c:
        raise DecnnError(f"cannot convert {x.shape[1]}-channel outliers to {c} channels; pick another outlier set")
    if tuple(x.shape[-2:]) != (h, w):
        steps.append(f"resized {x.shape[-2]}x{x.shape[-1]} -> {h}x{w} (bilinear, antialiased)")
        x = TF.resize(x, [h, w], antialias=True)
    return x.clamp(0.0, 1.0).contiguous(), "; ".join(steps) or "no conversion needed"


def natural_patches(shape: tuple[int, int, int], n: int = PATCHES, seed: int = 0) -> torch.Tensor:
    """``n`` random square crops (side 32 to 160 px) of scikit-learn's two bundled photographs, resized."""
    rng = np.random.default_rng(seed)
    photos = [torch.tensor(img).permute(2, 0, 1).float() / 255.0 for img in load_sample_images().images]
    crops = []
    for _ in range(n):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(32, 161))
        top = int(rng.integers(0, photo.shape[1] - side + 1))
        left = int(rng.integers(0, photo.shape[2] - side + 1))
        crop = photo[:, top : top + side, left : left + side]
        crops.append(TF.resize(crop, list(shape[1:]), antialias=True))
    x, _ = convert(torch.stack(crops), shape)
    return x


def build_outliers(
    outlier: str,
    spec: DataSpec,
    run_data: DataConfig,
    inlier_test: Dataset,
    limit: int | None,
    seed: int = 0,
) -> list[OutlierSet]:
    """The outlier set(s) that ``outlier`` names, for a run trained on ``run_data`` (described by ``spec``).

    ``inlier_test`` is the run's test split; ``limit`` caps every set (seeded order is kept simple: the first
    ``limit`` examples).
    """
    if outlier in DATASETS:
        if outlier == run_data.name:
            raise DecnnError(f"outlier set {outlier!r} is the run's own dataset; pick another one")
        other = run_data.model_copy(
            update={
                "name": outlier,
                "subset": None,
                "target": None,
                "protected": None,
                "holdout_attr": None,
                "negate_target": False,
            }
        )
        raw = images_of(load_splits(other).test, limit)
        x, how = convert(raw, spec.in_shape)
        return [OutlierSet(outlier, unlabelled(x), f"{outlier} test split, {len(x)} images: {how}")]
    if outlier == "patches":
        x = natural_patches(spec.in_shape, limit or PATCHES, seed)
        return [OutlierSet("patches", unlabelled(x), f"{len(x)} crops of scikit-learn's sample photographs")]
    if outlier.startswith("corrupt:"):
        from decnn_cli.data.corruptions import corrupt, parse_corruption_spec

        clean = images_of(inlier_test, limit)
        sets = []
        for name, severity in parse_corruption_spec(outlier):
            x = corrupt(clean, name, severity, seed)
            sets.append(
                OutlierSet(
                    f"corrupt:{name}@{severity}", unlabelled(x), f"inlier test images, {name} at severity {severity}"
                )
            )
        return sets
    if outlier.startswith("celeba-holdout:"):
        return [_celeba_holdout(outlier.split(":", 1)[1], spec, run_data, inlier_test, limit)]
    raise DecnnError(f"unknown outlier set {outlier!r}; choose from {outlier_names()}")


def _celeba_holdout(
    attr: str, spec: DataSpec, run_data: DataConfig, inlier_test: Dataset, limit: int | None
) -> OutlierSet:
    if run_data.name != "celeba":
        raise DecnnError("celeba-holdout outliers need a run trained on celeba with --holdout-attr")
    if run_data.holdout_attr != attr:
        raise DecnnError(
            f"this run held out {run_data.holdout_attr!r}, not {attr!r}; train with --holdout-attr {attr} first"
        )
    from decnn_cli.data.celeba import celeba_folder, read_attributes

    attrs = read_attributes(celeba_folder(run_data))
    files = inlier_test.files if hasattr(inlier_test, "files") else None
    if files is None:
        raise DecnnError("the celeba test split could not be matched to its attributes; evaluate without --subset")
    held_out = torch.tensor(attrs.loc[files, attr].to_numpy(), dtype=torch.bool)
    x = images_of(inlier_test)
    inliers, outliers = x[~held_out][:limit], x[held_out][:limit]
    if len(outliers) == 0:
        raise DecnnError(f"the celeba test split has no image with {attr}; pick another attribute")
    return OutlierSet(
        f"celeba-holdout:{attr}",
        unlabelled(outliers),
        f"celeba test images with {attr} ({len(outliers)}) against those without ({len(inliers)})",
        inliers=unlabelled(inliers),
    )


__all__ = ["DATASETS", "OutlierSet", "build_outliers", "convert", "natural_patches", "outlier_names"]
