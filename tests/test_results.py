"""Result files and run folders: written atomically, with the permissions of an ordinary file; partial folders of
killed runs are cleaned up, those of live runs never."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from decnn_cli import engine, plots
from decnn_cli.data.corruptions import corruption_sheet
from decnn_cli.data.spec import DataSpec
from decnn_cli.methods import get_method
from decnn_cli.resolve import build_config
from decnn_cli.results import (
    OWNER_FILE,
    PARTIAL_PREFIX,
    RunFolder,
    atomic_file,
    save_npz_atomic,
    write_json_atomic,
    write_text_atomic,
)
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
    model = get_method("redecnn").network(cfg, SPEC)
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


# --- partial run folders left by killed runs ----------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def _partial(out_dir: Path, name: str, owner: str | None) -> Path:
    folder = out_dir / f"{PARTIAL_PREFIX}{name}"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text("[data]\n")
    if owner is not None:
        (folder / OWNER_FILE).write_text(owner)
    return folder


def _record(pid: int, host: str | None = None, start: str | None = None) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split() if start is None else None
    return f"{pid} {host or socket.gethostname()} {start or (stat[19] if stat else '-')}\n"


def _wait_for_state(pid: int, state: str) -> None:
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != state:
        assert time.monotonic() < deadline, f"process {pid} never reached state {state}"
        time.sleep(0.01)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process states are read from /proc")
def test_entering_a_run_folder_removes_only_partial_folders_whose_process_has_ended(tmp_path: Path):
    out = tmp_path / "runs"
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # exited and reaped: its pid names no process
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    _wait_for_state(zombie.pid, "Z")  # exited, not yet reaped
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [
            _partial(out, "ended", f"{ended.pid} {socket.gethostname()} -\n"),
            _partial(out, "zombie", _record(zombie.pid)),
            _partial(out, "reused-pid", _record(os.getpid(), start="1")),  # our pid, but a process started earlier
        ]
        live = [
            _partial(out, "ours", _record(os.getpid())),
            _partial(out, "child", _record(sleeper.pid)),
            _partial(out, "other-host", _record(ended.pid, host="elsewhere.invalid", start="-")),
            _partial(out, "no-owner", None),  # cannot be told (a run of an older version, maybe still going)
        ]
        with RunFolder(out, "new") as run:
            assert (run.path / OWNER_FILE).read_text() == _record(os.getpid())
        assert not any(folder.exists() for folder in stale)
        assert all((folder / "config.toml").is_file() for folder in live)
        assert sorted(p.name for p in out.iterdir()) == sorted(["new", *(f.name for f in live)])
        assert not (out / "new" / OWNER_FILE).exists(), "a finished run folder carries no owner file"
    finally:
        sleeper.kill()
        sleeper.wait()
        zombie.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process states are read from /proc")
def test_a_run_killed_with_sigkill_leaves_a_partial_folder_the_next_run_removes(tmp_path: Path):
    out = tmp_path / "runs"
    script = (
        "import sys, time; from pathlib import Path; from decnn_cli.results import RunFolder\n"
        "RunFolder(Path(sys.argv[1]), 'killed').__enter__(); print('ready', flush=True); time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        partial = out / f"{PARTIAL_PREFIX}killed"
        with RunFolder(out, "first"):
            pass
        assert partial.is_dir(), "a running run's partial folder must stay"
        with RunFolder(out, "killed") as run:  # same name as the live run: takes the next one
            assert run.path.name == f"{PARTIAL_PREFIX}killed-1"
        assert partial.is_dir() and (out / "killed-1").is_dir()
        child.send_signal(signal.SIGKILL)
        _wait_for_state(child.pid, "Z")
        with RunFolder(out, "second"):
            pass
        assert not partial.exists()
    finally:
        child.kill()
        child.wait()
    assert sorted(p.name for p in out.iterdir()) == ["first", "killed-1", "second"]


def test_a_partial_folder_of_the_same_name_without_owner_is_replaced_only_when_old(tmp_path: Path):
    out = tmp_path / "runs"
    fresh = _partial(out, "run", None)
    with RunFolder(out, "run") as run:
        assert run.path.name == f"{PARTIAL_PREFIX}run-1"  # could be a run that has not yet written its owner
    assert fresh.is_dir()
    old = time.time() - 3600
    os.utime(fresh, (old, old))
    with RunFolder(out, "run") as run:
        assert run.path == fresh and not (run.path / "config.toml").exists()
    assert sorted(p.name for p in out.iterdir()) == ["run", "run-1"]
