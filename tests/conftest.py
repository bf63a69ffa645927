"""Shared fixtures: tiny datasets written in their real on-disk formats, and a CLI runner."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

REAL_DATA_ROOT = os.environ.get("DECNN_DATA_ROOT")


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (the format of the MNIST distribution files)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def write_mnist_like(root: Path, folder: str, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Path:
    """Tiny MNIST-format files: class c is a bright square at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, c in enumerate(labels):
            r, col = 2 + 2 * (c // 5) * 5, 2 + (c % 5) * 5
            images[i, r : r + 6, col : col + 4] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_mnist_like(root, "MNIST")
    write_mnist_like(root, "FashionMNIST", seed=1)
    return root


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture(autouse=True)
def _no_ambient_data_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the data roots they create (real-data tests read REAL_DATA_ROOT explicitly)."""
    monkeypatch.delenv("DECNN_DATA_ROOT", raising=False)


requires_real_data = pytest.mark.skipif(
    not (REAL_DATA_ROOT and (Path(REAL_DATA_ROOT) / "MNIST" / "raw").is_dir()),
    reason="set DECNN_DATA_ROOT to a folder holding MNIST/raw and FashionMNIST/raw to run real-data tests",
)


CELEBA_ATTRIBUTES = [
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
]


def write_celeba(root: Path, n: int = 30, seed: int = 0, bald_people: tuple[int, ...] | None = None) -> Path:
    """Tiny CelebA in torchvision's layout: 178x218 JPEGs, the attribute and partition files and the identity
    file, formatted as the originals are (count line, names line with a trailing space, right-aligned -1/1 columns).

    Image i shows person i // 3 (three images each). ``bald_people``: Bald is 1 exactly for these people's images
    (else drawn at random like the other attributes); the partition puts the first 60% of images in train, the
    next 20% in val and the rest in test."""
    import torch
    from torchvision.io import write_jpeg

    rng = np.random.default_rng(seed)
    folder = root / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    attrs = rng.choice([-1, 1], size=(n, 40))
    attrs[:, CELEBA_ATTRIBUTES.index("Wearing_Hat")] = np.where(np.arange(n) % 3 == 0, 1, -1)
    people = np.arange(n) // 3
    if bald_people is not None:
        attrs[:, CELEBA_ATTRIBUTES.index("Bald")] = np.where(np.isin(people, bald_people), 1, -1)
    attr_lines = [str(n), " ".join(CELEBA_ATTRIBUTES) + " "]
    part_lines = []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        pixels = rng.integers(0, 255, size=(3, 218, 178), dtype=np.uint8)
        pixels[:, :, :] = (pixels // 4 + (attrs[i, 20] > 0) * 150).astype(np.uint8)
        write_jpeg(torch.from_numpy(pixels), str(images / name), quality=90)
        attr_lines.append(name + " " + " ".join(f"{v:2d}" for v in attrs[i]))
        part_lines.append(f"{name} {0 if i < n * 0.6 else (1 if i < n * 0.8 else 2)}")
    (folder / "list_attr_celeba.txt").write_text("\n".join(attr_lines) + "\n")
    (folder / "list_eval_partition.txt").write_text("\n".join(part_lines) + "\n")
    identity_lines = [f"{i + 1:06d}.jpg {1000 + person}" for i, person in enumerate(people)]
    (folder / "identity_CelebA.txt").write_text("\r\n".join(identity_lines) + "\r\n")  # CRLF, as upstream
    return root


@pytest.fixture
def celeba_root(tmp_path: Path) -> Path:
    return write_celeba(tmp_path / "data")


def torchrun(processes: int, args: list[str], out: Path) -> tuple[Path, dict]:
    """``decnn ARGS --out OUT`` under torchrun with ``processes`` local processes: the run folder rank 0 wrote
    (the only one) and its metrics."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("DECNN_DATA_ROOT", None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    launched = subprocess.run(
        [*launcher, "-m", "decnn_cli", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-2000:]
    (run,) = out.iterdir()
    return run, json.loads((run / "metrics.json").read_text())
