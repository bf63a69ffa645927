"""CelebA aligned faces (torchvision's folder layout), read lazily and resized to 64x64 RGB.

Only ``list_attr_celeba.txt``, ``list_eval_partition.txt``, the images and (for the identity split)
``identity_CelebA.txt`` are read: torchvision's own loader also demands the box and landmark files and checks every
md5, which a partial copy fails.

Splits: the official partition by default; ``data.split = "identity"`` draws a seeded split in which no person is in
two splits and every split holds about the same share of one attribute (``identity_partition``). Either way the
counts of the protected (or stratified) attribute per split are in the notes that ``decnn train`` prints and saves.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
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
# Decoding a JPEG costs about a millisecond, a third of a standard network's training step on these faces, so each
# split keeps the faces it has decoded (uint8, 12 KiB each) for the next epoch, up to this many bytes a split
# (the full CelebA's 202,599 faces take 2.3 GiB; a split larger than this decodes every time).
CACHE_LIMIT_BYTES = 3 * 2**30
LAYOUT = "celeba/img_align_celeba/*.jpg, celeba/list_attr_celeba.txt and celeba/list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
# Attributes CelebA states by their absence, offered under their positive name: name -> the attribute it negates.
# ``target = "Bearded"`` is ``target = "No_Beard"`` with ``negate_target = true`` (the paper's "beardedness").
POSITIVE_NAMES = {"Bearded": "No_Beard"}
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


def read_identities(folder: Path) -> pd.Series:
    """The person (an integer id) in every image, indexed by image file name."""
    path = folder / IDENTITY_FILE
    if not path.is_file():
        raise DecnnError(
            f"data.split=identity needs {path} (CelebA's identity file, one '<image> <identity>' line per image); "
            "put it there or use data.split=official"
        )
    try:
        frame = pd.read_csv(path, sep=r"\s+", header=None, names=["image", "identity"], index_col=0)
    except (pd.errors.ParserError, ValueError) as err:
        raise DecnnError(f"{path} is malformed ({err}); replace it with the original file") from None
    return frame["identity"]


def attribute(attrs: pd.DataFrame, name: str) -> np.ndarray:
    """0/1 per image of a CelebA attribute, or of a positive name for one it states by absence (``POSITIVE_NAMES``)."""
    if name in POSITIVE_NAMES:
        return 1 - attrs[POSITIVE_NAMES[name]].to_numpy()
    return attrs[name].to_numpy()


def identity_partition(
    identities: np.ndarray, strata: np.ndarray, test_fraction: float, val_fraction: float, seed: int
) -> np.ndarray:
    """0 = train, 1 = val, 2 = test per image, no identity in two splits, each split holding about the same share
    of every value of ``strata``.

    scikit-learn's StratifiedGroupKFold (seeded) cuts the identities into round(1 / test_fraction) folds, and test
    is the fold whose shares of the strata come nearest the whole's (the first of equals); the rest is cut the same
    way into round(1 / val_fraction) folds for val. A rare attribute held by few people can only be spread person by
    person, so the shares are near, not exact: in the 6,000-image subset the 99 bald images belong to 9 people, and
    StratifiedGroupKFold's first fold holds 9 of them for every seed, the nearest fold 27 (of 2 people).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    codes = np.zeros(len(identities), dtype=np.int64)
    rest = np.arange(len(identities))
    values = np.unique(strata)
    for code, fraction, offset in ((2, test_fraction, 0), (1, val_fraction, 1)):
        folds = StratifiedGroupKFold(n_splits=max(2, round(1 / fraction)), shuffle=True, random_state=seed + offset)
        whole = (strata[rest, None] == values).mean(0)  # (V,) share of each stratum value

        def distance(fold: np.ndarray) -> float:
            return float(np.abs((strata[rest[fold], None] == values).mean(0) - whole).sum())  # noqa: B023

        with warnings.catch_warnings():  # a stratum rarer than the folds is expected here; the notes give counts
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            chosen = min(
                (fold for _, fold in folds.split(np.zeros(len(rest)), strata[rest], identities[rest])), key=distance
            )
        codes[rest[chosen]] = code
        rest = rest[codes[rest] == 0]
    return codes


def split_counts(codes: np.ndarray, identities: np.ndarray | None, values: np.ndarray | None, name: str | None) -> str:
    """'train 4,320 images of 144 people, Bald 70 of 6 people; val ...' (people only where identities are known)."""
    parts = []
    for code, split in ((0, "train"), (1, "val"), (2, "test")):
        members = codes == code
        text = f"{split} {int(members.sum()):,} images"
        if identities is not None:
            text += f" of {len(np.unique(identities[members])):,} people"
        if values is not None:
            holders = members & (values == 1)
            text += f", {name} {int(holders.sum()):,}"
            if identities is not None:
                text += f" of {len(np.unique(identities[holders])):,} people"
        parts.append(text)
    return "; ".join(parts)


def decode_face(path: Path) -> torch.Tensor:
    """One aligned face as (3, 64, 64) uint8: centre square crop, then resize."""
    try:
        image = decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as err:
        raise DecnnError(f"could not decode CelebA image {path} ({err}); replace the file") from None
    side = min(image.shape[-2:])
    image = TF.center_crop(image, [side, side])
    return TF.resize(image, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)


class CelebAFaces(Dataset):
    """Faces with their targets (and protected-attribute groups when asked for). Each face is decoded once and
    kept (CACHE_LIMIT_BYTES)."""

    def __init__(self, folder: Path, files: list[str], targets: torch.Tensor, groups: torch.Tensor | None):
        self.folder, self.files, self.targets, self.groups = folder, files, targets, groups
        fits = len(files) * 3 * IMAGE_SIZE * IMAGE_SIZE <= CACHE_LIMIT_BYTES
        self.decoded: list[torch.Tensor | None] | None = [None] * len(files) if fits else None

    def __len__(self) -> int:
        return len(self.files)

    def face(self, index: int) -> torch.Tensor:
        if self.decoded is None:
            return decode_face(self.folder / "img_align_celeba" / self.files[index])
        if self.decoded[index] is None:
            self.decoded[index] = decode_face(self.folder / "img_align_celeba" / self.files[index])
        return self.decoded[index]

    def __getitem__(self, index: int):
        x = self.face(index).float() / 255.0
        if self.groups is None:
            return x, self.targets[index]
        return x, self.targets[index], self.groups[index]


def _check_attr(name: str | None, names: list[str], option: str) -> None:
    if name is not None and name not in names:
        raise DecnnError(f"{option} {name!r} is not a CelebA attribute; choose from {names}")


def load(cfg: DataConfig) -> Splits:
    folder = celeba_folder(cfg)
    attrs = read_attributes(folder)
    names = [*attrs.columns, *POSITIVE_NAMES]
    for value, option in (
        (cfg.target, "target"),
        (cfg.protected, "protected"),
        (cfg.holdout_attr, "holdout_attr"),
        (cfg.stratify, "stratify"),
    ):
        _check_attr(value, names, option)
    notes = []
    if cfg.split == "identity":
        identities = read_identities(folder).reindex(attrs.index)
        if identities.isna().any():
            raise DecnnError(f"{folder / IDENTITY_FILE} does not list every image of list_attr_celeba.txt")
        people = identities.to_numpy()
        stratify = cfg.stratified_on
        strata = attribute(attrs, stratify) if stratify else np.zeros(len(attrs), dtype=np.int64)
        codes = identity_partition(people, strata, cfg.test_fraction, cfg.val_fraction, cfg.split_seed)
        notes.append(
            f"identity split (split_seed {cfg.split_seed}; no person in two splits; "
            f"{'stratified on ' + stratify if stratify else 'not stratified'}; test {cfg.test_fraction:g} of the "
            f"people, val {cfg.val_fraction:g} of the rest): "
            + split_counts(codes, people, strata if stratify else None, stratify)
        )
    else:
        partition = read_partition(folder).reindex(attrs.index)
        if partition.isna().any():
            raise DecnnError(f"{folder / 'list_eval_partition.txt'} does not list every image of list_attr_celeba.txt")
        codes, people, stratify = partition.to_numpy().astype(np.int64), None, None
    if cfg.protected and cfg.protected != stratify:
        counts = split_counts(codes, people, attribute(attrs, cfg.protected), cfg.protected)
        notes.append(f"protected attribute per split: {counts}")

    if cfg.target is None:
        targets = torch.tensor(attrs.to_numpy(), dtype=torch.float32)
        task, outputs, output_names = "multilabel", 40, tuple(attrs.columns)
    else:
        positive = attribute(attrs, cfg.target)
        targets = torch.tensor(1 - positive if cfg.negate_target else positive, dtype=torch.long)
        label = f"not {cfg.target}" if cfg.negate_target else cfg.target
        task, outputs, output_names = "multiclass", 2, (f"no ({label})", f"yes ({label})")
    groups = torch.tensor(attribute(attrs, cfg.protected)) if cfg.protected else None

    def split(code: int, drop_holdout: bool) -> CelebAFaces:
        keep = codes == code
        if drop_holdout and cfg.holdout_attr:
            keep &= attribute(attrs, cfg.holdout_attr) == 0
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
        notes=notes,
    )
