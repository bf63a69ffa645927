"""Result files and run folders: written atomically, with the permissions of an ordinary file."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from decnn_cli import engine, plots
from decnn_cli.config import build_config
from decnn_cli.data.corruptions import corruption_sheet
from decnn_cli.data.spec import DataSpec
from decnn_cli.methods import get_method
from decnn_cli.results import atomic_file, save_npz_atomic, write_json_atomic, write_text_atomic
from decnn_cli.uncertainty import Predictions

SPEC = DataSpec("toy", (1, 8, 8), 4, "multiclass", tuple("abcd"), (0.5,), (0.5,))


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test and restore it afterwards."""
    before = os.umask(0o022)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    try:
        yield set_mask
    finally:
        os.umask(before)


def _checkpoint(path: Path) -> None:
    cfg = build_config(overrides=["method.name=redecnn", "model.depth=2", "model.width=8", "model.decoder_width=8"])
    model = get_method("redecnn").build(cfg, SPEC)
    engine.save_checkpoint(path, model, cfg, SPEC)


def _predictions(path: Path) -> None:
    probs = np.full((3, 4), 0.25)
    Predictions("multiclass", np.arange(3), probs, probs, np.zeros((2, 3), dtype=int), "mean").save(path)


WRITERS: dict[str, Callable[[Path], None]] = {
    "table.md": lambda path: write_text_atomic(path, "| a |\n"),
    "metrics.json": lambda path: write_json_atomic(path, {"accuracy": 1.0}),
    "config.toml": lambda path: write_text_atomic(path, "[data]\n"),
    "arrays.npz": lambda path: save_npz_atomic(path, x=np.arange(3)),
    "predictions.npz": _predictions,
    "model.pt": _checkpoint,
    "roc.png": lambda path: plots.save_roc_curves({"a": ([0.0, 1.0], [0.0, 1.0], 0.5)}, "chance", path),
    "sheet.png": lambda path: corruption_sheet(torch.zeros(1, 28, 28), path),
}


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
@pytest.mark.parametrize("name", list(WRITERS))
def test_result_files_get_the_mode_open_would_give_them_under_the_umask(name, mask, umask, tmp_path: Path):
    umask(mask)
    path = tmp_path / "out" / name
    WRITERS[name](path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # 0644 under umask 022, as open() makes it
    assert [p.name for p in path.parent.iterdir()] == [name], "no temporary file left behind"


def test_predictions_and_checkpoint_written_atomically_read_back(tmp_path: Path):
    _predictions(tmp_path / "predictions.npz")
    assert Predictions.load(tmp_path / "predictions.npz").mean_probs.shape == (3, 4)
    _checkpoint(tmp_path / "model.pt")
    assert engine.load_checkpoint(tmp_path / "model.pt").cfg.method.name == "redecnn"


def test_atomic_file_keeps_the_old_contents_when_the_writer_fails(tmp_path: Path):
    path = tmp_path / "metrics.json"
    write_text_atomic(path, "old\n")
    with pytest.raises(RuntimeError), atomic_file(path, "w") as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
