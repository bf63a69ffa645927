"""CelebA aligned faces (torchvision's folder layout), read lazily and resized to 64x64 RGB.

Only ``list_attr_celeba.txt``, ``list_eval_partition.txt`` and the images are read: torchvision's own loader
also demands the identity, box and landmark files and checks every md5, which a partial copy fails.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image

from decnn_cli.config import DataConfig
from decnn_cli.data.roots import resolve_root
from decnn_cli.data.spec import DataSpec, Splits
from decnn_cli.data.splitting import cap
from decnn_cli.errors import DecnnError

IMAGE_SIZE = 64
LAYOUT = "celeba/img_align_celeba/*.jpg, celeba/list_attr_celeba.txt and celeba/list_eval_partition.txt"
# Mean and std of aligned CelebA pixels after the crop and resize (measured on the training split and
# rounded); fixed here so that a run does not have to decode thousands of JPEGs before it starts.
MEAN, STD = (0.506, 0.425, 0.383), (0.311, 0.290, 0.290)


def celeba_folder(cfg: DataConfig) -> Path:
    folder = resolve_root(cfg, LAYOUT) / "celeba"
    for needed in ("img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt"):
        if not (folder / needed).exists():
            raise DecnnError(f"CelebA is incomplete: {folder / needed} is missing; the data root must hold {LAYOUT}")
    return folder


def read_attributes(folder: Path) -> pd.DataFrame:
    """The 40 attributes as a 0/1 frame indexed by image file name."""
    path = folder / "list_attr_celeba.txt"
    try:
        # Line 1 is the image count, line 2 the 40 names; rows have one more field (the file name), which
        # pandas turns into the index.
        frame = pd.read_csv(path, sep=r"\s+", skiprows=1)
    except (pd.errors.ParserError, ValueError) as err:
        raise DecnnError(f"{path} is malformed ({err}); replace it with the original file") from None
    if frame.shape[1] != 40 or not frame.isin([-1, 1]).all().all():
        raise DecnnError(f"{path} must have 40 attribute columns of -1/1; replace it with the original file")
    return (frame == 1).astype("int64")


def read_partition(folder: Path) -> pd.Series:
    """0 = train, 1 = valid, 2 = test, indexed by image file name."""
    path = folder / "list_eval_partition.txt"
    try:
        frame = pd.read_csv(path, sep=r"\s+", header=None, names=["image", "split"], index_col=0)
    except (pd.errors.ParserError, ValueError) as err:
        raise DecnnError(f"{path} is malformed ({err}); replace it with the original file") from None
    return frame["split"]


def load_face(path: Path) -> torch.Tensor:
    """One aligned face as (3, 64, 64) floats in [0, 1]: centre square crop, then resize."""
    try:
        image = decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as err:
        raise DecnnError(f"could not decode CelebA image {path} ({err}); replace the file") from None
    side = min(image.shape[-2:])
    image = TF.center_crop(image, [side, side])
    image = TF.resize(image, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)
    return image.float() / 255.0


class CelebAFaces(Dataset):
    """Faces with their targets (and protected-attribute groups when asked for)."""

    def __init__(self, folder: Path, files: list[str], targets: torch.Tensor, groups: torch.Tensor | None):
        self.folder, self.files, self.targets, self.groups = folder, files, targets, groups

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        x = load_face(self.folder / "img_align_celeba" / self.files[index])
        if self.groups is None:
            return x, self.targets[index]
        return x, self.targets[index], self.groups[index]


def _check_attr(name: str | None, names: list[str], option: str) -> None:
    if name is not None and name not in names:
        raise DecnnError(f"{option} {name!r} is not a CelebA attribute; choose from {names}")


def load(cfg: DataConfig) -> Splits:
    folder = celeba_folder(cfg)
    attrs = read_attributes(folder)
    names = list(attrs.columns)
    for value, option in ((cfg.target, "target"), (cfg.protected, "protected"), (cfg.holdout_attr, "holdout_attr")):
        _check_attr(value, names, option)
    partition = read_partition(folder).reindex(attrs.index)
    if partition.isna().any():
        raise DecnnError(f"{folder / 'list_eval_partition.txt'} does not list every image of list_attr_celeba.txt")

    if cfg.target is None:
        targets = torch.tensor(attrs.to_numpy(), dtype=torch.float32)
        task, outputs, output_names = "multilabel", 40, tuple(names)
    else:
        positive = attrs[cfg.target].to_numpy()
        targets = torch.tensor(1 - positive if cfg.negate_target else positive, dtype=torch.long)
        label = f"not {cfg.target}" if cfg.negate_target else cfg.target
        task, outputs, output_names = "multiclass", 2, (f"no ({label})", f"yes ({label})")
    groups = torch.tensor(attrs[cfg.protected].to_numpy()) if cfg.protected else None

    def split(code: int, drop_holdout: bool) -> CelebAFaces:
        keep = partition.to_numpy() == code
        if drop_holdout and cfg.holdout_attr:
            keep &= attrs[cfg.holdout_attr].to_numpy() == 0
        index = torch.from_numpy(keep).nonzero().squeeze(1)
        files = [attrs.index[i] for i in index.tolist()]
        return CelebAFaces(folder, files, targets[index], None if groups is None else groups[index])

    spec = DataSpec(
        name="celeba",
        in_shape=(3, IMAGE_SIZE, IMAGE_SIZE),
        num_outputs=outputs,
        task=task,
        output_names=output_names,
        mean=MEAN,
        std=STD,
        group_names=(f"not {cfg.protected}", cfg.protected) if cfg.protected else (),
    )
    train, val, test = split(0, True), split(1, True), split(2, False)
    return Splits(
        spec=spec,
        train=cap(train, cfg.subset, cfg.split_seed),
        val=cap(val, cfg.subset, cfg.split_seed + 1),
        test=cap(test, cfg.subset, cfg.split_seed + 2),
    )
