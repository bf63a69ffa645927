"""Out-of-distribution inputs for a trained run, converted to the run's input shape.

Sources (``--outlier``, checked by ``decnn_cli.data.sources.check_outlier`` before anything is loaded): another
dataset's test split (a registered name such as ``mnist``, ``fashion``, ``celeba``, ``digits``, ``audiomnist``, or
``torchvision:NAME``), ``folder:PATH`` (every image under PATH, or the images of its IDX files), ``patches`` (crops
of the natural photographs bundled with scikit-learn), ``corrupt:<name>[@severity]`` / ``corrupt:all`` (MNIST-C
corruptions of the inlier test split) and ``celeba-holdout:<Attribute>`` (every CelebA image with the attribute that
a run trained with ``--holdout-attr`` never saw). ``attack:<name>[@eps]`` (adversarial inputs) needs the run's
model and is made by ``decnn_cli.experiments.ood``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from sklearn.datasets import load_sample_images
from torch.utils.data import Dataset, Subset, TensorDataset

from decnn_cli.config import DataConfig
from decnn_cli.data import DATASETS, load_splits
from decnn_cli.data.folder import convert
from decnn_cli.data.sources import FOLDER, TORCHVISION, canonical_dataset, outlier_forms, outlier_rows
from decnn_cli.data.spec import DataSpec
from decnn_cli.errors import DecnnError

PATCHES = 2000
# Fewer outliers than this make an OOD ROC-AUC too noisy to compare methods by: the set carries a warning.
MIN_OUTLIERS = 100


@dataclass
class OutlierSet:
    """Inputs to score as OOD (the positive class) against ``inliers`` (the negative class).

    ``inliers`` is None when the run's own test split is the inlier set; ``conversion`` says in words how
    the outliers were made to fit the model's input shape (or where they come from); ``warning`` says why the
    set's numbers deserve caution (too few outliers), if they do.
    """

    name: str
    outliers: Dataset
    conversion: str
    inliers: Dataset | None = None
    warning: str | None = None


def outlier_names() -> list[str]:
    return outlier_forms()


def images_of(dataset: Dataset, limit: int | None = None) -> torch.Tensor:
    """The inputs of a dataset as one (N, C, H, W) tensor (the first ``limit``)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0][:n]
    return torch.stack([dataset[i][0] for i in range(n)])


def unlabelled(x: torch.Tensor) -> TensorDataset:
    """Outliers carry label -1: they belong to no class of the model."""
    return TensorDataset(x, torch.full((x.shape[0],), -1, dtype=torch.long))


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
    if outlier in DATASETS or outlier.startswith(TORCHVISION):
        name = canonical_dataset(outlier)
        if name == run_data.name:
            raise DecnnError(f"outlier set {outlier!r} is the run's own dataset; pick another one")
        other = run_data.model_copy(
            update={
                "name": name,
                "subset": None,
                "target": None,
                "protected": None,
                "holdout_attr": None,
                "negate_target": False,
                "image_size": None,
                "channels": None,
            }
        )
        raw = images_of(load_splits(other).test, limit)
        x, how = convert(raw, spec.in_shape)
        return [OutlierSet(name, unlabelled(x), f"{name} test split, {len(x)} images: {how}")]
    if outlier.startswith(FOLDER):
        from decnn_cli.data.folder import outlier_images

        if canonical_dataset(outlier) == run_data.name:
            raise DecnnError(f"outlier set {outlier!r} is the run's own dataset; pick another one")

        x, how = outlier_images(outlier, spec.in_shape, limit)
        return [OutlierSet(outlier_rows(outlier)[0], unlabelled(x), how)]
    if outlier == "patches":
        x = natural_patches(spec.in_shape, limit or PATCHES, seed)
        return [OutlierSet("patches", unlabelled(x), f"{len(x)} crops of scikit-learn's sample photographs")]
    if outlier.startswith("corrupt:"):
        from decnn_cli.data.corruptions import corrupt
        from decnn_cli.data.sources import parse_corruption_spec

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
    """Every CelebA image with ``attr``, of every partition, against the run's test images without it.

    A run trained with ``--holdout-attr attr`` never saw an image with ``attr``: they are dropped from its train
    and val splits, so no training image of the run can be an outlier, and the images with ``attr`` of all three
    partitions are valid outliers (the CelebA subset of the shared data root holds 198 with Wearing_Hat, of which
    the test partition alone has 10). The inliers are the run's test split without ``attr``. ``limit`` caps
    both (the first images, in file order). With fewer than ``MIN_OUTLIERS`` outliers the set carries a warning:
    a ROC-AUC on so few positives moves by several points with a handful of images.
    """
    if run_data.name != "celeba":
        raise DecnnError("celeba-holdout outliers need a run trained on celeba with --holdout-attr")
    if run_data.holdout_attr != attr:
        raise DecnnError(
            f"this run held out {run_data.holdout_attr!r}, not {attr!r}; train with --holdout-attr {attr} first"
        )
    from decnn_cli.data.celeba import CelebAFaces, celeba_folder, read_attributes

    folder = celeba_folder(run_data)
    attrs = read_attributes(folder)
    test_files = _celeba_files(inlier_test)
    held_in = [name for name in test_files if attrs.at[name, attr] == 0][:limit]
    held_out = [str(name) for name in attrs.index[attrs[attr].to_numpy() == 1]][:limit]
    if not held_out:
        raise DecnnError(f"no CelebA image has {attr}; pick another attribute")
    warning = None
    if len(held_out) < MIN_OUTLIERS:
        warning = (
            f"celeba-holdout:{attr} has only {len(held_out)} outliers (fewer than {MIN_OUTLIERS}); its ROC-AUC is noisy"
        )

    def faces(files: list[str]) -> CelebAFaces:
        return CelebAFaces(folder, files, torch.full((len(files),), -1, dtype=torch.long), None)

    return OutlierSet(
        f"celeba-holdout:{attr}",
        faces(held_out),
        f"celeba images with {attr} from every partition ({len(held_out)}) against the test images without it "
        f"({len(held_in)})",
        inliers=faces(held_in),
        warning=warning,
    )


def _celeba_files(dataset: Dataset) -> list[str]:
    """The image file names of a CelebA split (itself, or a ``--subset`` of it), in order."""
    if isinstance(dataset, Subset):
        files = _celeba_files(dataset.dataset)
        return [files[i] for i in dataset.indices]
    files = getattr(dataset, "files", None)
    if files is None:
        raise DecnnError("the celeba test split could not be matched to its attributes; pass a CelebA run")
    return list(files)


__all__ = ["DATASETS", "OutlierSet", "build_outliers", "convert", "natural_patches", "outlier_names"]
