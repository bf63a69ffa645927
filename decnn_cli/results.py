"""Run folders and result files: traceable names, atomic writes, nothing half-written left behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import pandas as pd

from decnn_cli.config import RunConfig
from decnn_cli.data import DATASETS
from decnn_cli.data.sources import dataset_label
from decnn_cli.errors import DecnnError
from decnn_cli.methods import METHODS, AdversaryTerms, PretrainedTerms, decodes_given_protected

FINISHED_MARKER = "metrics.json"


def git_revision() -> str | None:
    """The git commit of the suite's source tree (with '+dirty' when it has uncommitted changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def check_writable_folder(folder: Path, what: str, option: str) -> None:
    """Fail early, with one error naming ``option``, when ``folder`` is a file or could not be made or written
    (checked on its first existing ancestor); nothing is created."""
    if folder.exists() and not folder.is_dir():
        raise DecnnError(f"the {what} {folder} is a file; pass a folder with {option}")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise DecnnError(
            f"cannot create the {what} {folder} ({existing} is a file); pass a writable folder with {option}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DecnnError(f"cannot write in {existing} (permission denied); pass a writable {what} with {option}")


def writable_folder(folder: Path, what: str, option: str) -> None:
    """Create ``folder`` (and its parents) unless it exists; a file in its place or a folder that cannot be made is
    one error naming ``option``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DecnnError(f"the {what} {folder} is a file; pass a folder with {option}") from None
    except OSError as err:
        raise DecnnError(
            f"cannot create the {what} {folder} ({err.strerror}); pass a writable folder with {option}"
        ) from None


@contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """An open temporary file beside ``path``, renamed onto ``path`` when the block ends without an error.

    The temporary file has a unique hidden name (concurrent writers never share one) and is created as ``open``
    creates files, with mode 0666 less the umask (0644 under umask 022); ``tempfile.mkstemp`` would make it 0600.
    On an error it is removed and ``path`` is left as it was.
    """
    writable_folder(path.parent, "results folder", "--results")
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
        except OSError as err:
            raise DecnnError(f"cannot write {path} ({err.strerror}); pass a writable folder with --results") from None
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, then rename it into place."""
    with atomic_file(path, "w") as handle:
        handle.write(text)


def save_npz_atomic(path: Path, **arrays: Any) -> None:
    """``np.savez_compressed`` to a temp file beside ``path``, then rename it into place."""
    with atomic_file(path) as handle:
        np.savez_compressed(handle, **arrays)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def run_name(cfg: RunConfig, when: datetime | None = None) -> str:
    """``<dataset>__<method>[__<tag>...]__seed<k>__<YYYYmmdd-HHMMSS>`` (tags: ``run_tags``)."""
    stamp = (when or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{run_label(cfg)}__seed{cfg.train.seed}__{stamp}"


def run_label(cfg: RunConfig) -> str:
    """``<dataset>__<method>``, then the run's tags, each after ``__``; the dataset as ``sources.dataset_label``
    names it (a ``folder:`` dataset by its last path component)."""
    return "__".join([dataset_label(cfg.data.name), str(cfg.method.name), *run_tags(cfg)])


def run_tags(cfg: RunConfig) -> list[str]:
    """What distinguishes a run besides dataset, method and seed, short and filesystem-safe: its target, held-out
    attribute and split (where its dataset reads them), the pretrained models it is composed with or protected
    by (the name of their run folder, without the dataset), group-balanced sampling, a decoder given the
    protected attribute, the adversary's weight (and whether it reads h_L standardised) and the mean gap's. Empty
    for a run that sets none of these."""
    entry = DATASETS.get(cfg.data.name)
    reads = entry.reads if entry is not None else frozenset()
    data = cfg.data
    tags = []
    if "target" in reads and data.target is not None:
        negated = "negate_target" in reads and data.negate_target
        tags.append(f"target-{'not-' if negated else ''}{data.target}")
    if "holdout_attr" in reads and data.holdout_attr is not None:
        tags.append(f"holdout-{data.holdout_attr}")
    if "split" in reads and data.split != "official":
        tags.append(f"split-{data.split}" + (f"-{data.stratified_on}" if data.stratified_on else ""))
    if cfg.train.group_balance:
        tags.append("group-balanced")
    spec = METHODS.get(str(cfg.method.name))
    if spec is not None and spec.accepts_pretrained_terms:
        terms = PretrainedTerms.of(cfg.method)
        if terms.compose_with is not None:
            kind = "compose" if terms.compose_target == "reconstruction" else "compose-direct"
            tags.append(f"{kind}-{_model_name(terms.compose_with, dataset_label(data.name))}")
        if terms.protect_with is not None:
            tags.append(f"protect-{_model_name(terms.protect_with, dataset_label(data.name))}")
    if decodes_given_protected(cfg.method):
        tags.append("decoder-given-protected")
    if spec is not None and spec.accepts_adversary:
        adversary = AdversaryTerms.of(cfg.method)
        if adversary.adversary_on:
            reads = "-standardised" if adversary.protect_adversary_standardised else ""
            tags.append(f"adversary-{adversary.protect_adversary_weight:g}{reads}")
        if adversary.mean_match_on:
            tags.append(f"mean-match-{adversary.protect_mean_match_weight:g}")
    return [re.sub(r"[^A-Za-z0-9._-]+", "-", tag) for tag in tags]


def _model_name(checkpoint: Path, dataset: str) -> str:
    """A checkpoint's run folder name without the dataset (``model.pt`` of a run folder), else its file stem."""
    name = checkpoint.parent.name if checkpoint.name == "model.pt" and checkpoint.parent.name else checkpoint.stem
    parts = name.split("__")
    if len(parts) > 1 and parts[0] == dataset:
        parts = parts[1:]
    return "-".join(parts)


PARTIAL_PREFIX = ".partial-"
OWNER_FILE = ".owner"


def _proc_stat(pid: int) -> list[str]:
    """Fields 3.. of /proc/PID/stat (state first, start time at index 19); empty where it cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def _owner_record() -> str:
    """``pid host start`` of this process, as kept in a partial folder's owner file."""
    stat = _proc_stat(os.getpid())
    return f"{os.getpid()} {socket.gethostname()} {stat[19] if len(stat) > 19 else '-'}\n"


def _owner_gone(record: str) -> bool:
    """Whether the process an owner record names has certainly ended (a zombie has ended; so has a process whose pid
    now belongs to a later process). Anything that cannot be told, such as another host's process, counts as alive.
    """
    try:
        pid_text, host, start = record.split()
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's process
    stat = _proc_stat(pid)
    if len(stat) <= 19:
        return False
    return stat[0] in ("Z", "X") or (start != "-" and stat[19] != start)


def _read_owner(folder: Path) -> str | None:
    try:
        return (folder / OWNER_FILE).read_text()
    except OSError:
        return None


def _abandoned(folder: Path) -> bool:
    """Whether a run may take over the partial folder of its own name: its owner has ended, or it has no owner file
    and is over a minute old (written before owners were recorded; a live run writes its owner file at once)."""
    record = _read_owner(folder)
    if record is not None:
        return _owner_gone(record)
    try:
        return time.time() - folder.stat().st_mtime > 60
    except OSError:
        return True  # gone meanwhile


def remove_stale_partials(out_dir: Path) -> list[Path]:
    """Remove the ``.partial-*`` folders in ``out_dir`` left by runs whose process has ended (``kill -9``, power
    loss); a live process's folder is never touched, nor one without an owner file (it may belong to a run of an
    older version of decnn still going). Returns the folders removed."""
    removed = []
    for folder in sorted(out_dir.glob(f"{PARTIAL_PREFIX}*")):
        record = _read_owner(folder)
        if record is None or not folder.is_dir() or not _owner_gone(record):
            continue
        # Moved aside first and checked again, so that a run re-creating the same name meanwhile keeps its folder.
        aside = folder.with_name(f".stale-{folder.name[len(PARTIAL_PREFIX) :]}.{secrets.token_hex(4)}")
        try:
            folder.rename(aside)
        except OSError:
            continue
        if _read_owner(aside) == record:
            shutil.rmtree(aside, ignore_errors=True)
            removed.append(folder)
        else:
            with contextlib.suppress(OSError):
                aside.rename(folder)
    return removed


class RunFolder:
    """A run's folder, built under a hidden temporary name and renamed into place only on success.

    A run that fails leaves nothing (``__exit__`` removes its ``.partial-*`` folder); one that is killed leaves a
    ``.partial-*`` folder, which never looks finished and names its process (pid, host, start time) in an owner
    file. Entering a RunFolder removes the partial folders of ``out_dir`` whose process has ended.
    """

    def __init__(self, out_dir: Path, name: str):
        self.out_dir = out_dir
        self.final = out_dir / name
        suffix = 1
        while self.final.exists():
            self.final = out_dir / f"{name}-{suffix}"
            suffix += 1
        self.path = out_dir / f"{PARTIAL_PREFIX}{self.final.name}"

    def __enter__(self) -> RunFolder:
        writable_folder(self.out_dir, "runs folder", "--out")
        if not os.access(self.out_dir, os.W_OK | os.X_OK):
            raise DecnnError(
                f"cannot write in the runs folder {self.out_dir} (permission denied); pass another with --out"
            )
        remove_stale_partials(self.out_dir)
        base, suffix = self.final.name, 1
        while True:
            try:
                self.path.mkdir()
                break
            except FileExistsError:
                if _abandoned(self.path):  # a dead run's: start it afresh
                    shutil.rmtree(self.path, ignore_errors=True)
                    continue
            # Another live process builds a run of this name: take the next free one.
            self.final = self.out_dir / f"{base}-{suffix}"
            while self.final.exists():
                suffix += 1
                self.final = self.out_dir / f"{base}-{suffix}"
            self.path = self.out_dir / f"{PARTIAL_PREFIX}{self.final.name}"
            suffix += 1
        (self.path / OWNER_FILE).write_text(_owner_record())
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            (self.path / OWNER_FILE).unlink(missing_ok=True)
            os.replace(self.path, self.final)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


# --- aggregated tables -------------------------------------------------------------------------------


def _method_rank(name: str) -> tuple[int, str]:
    """The registry's order (the paper's rows) for a method name, or for a model name like 'redecnn (Eq. 8)'."""
    order = list(METHODS)
    base = name.split(" (")[0]
    return (order.index(base) if base in order else len(order), name)


def merge_rows(path: Path, rows: list[dict[str, Any]], key: list[str]) -> pd.DataFrame:
    """Rows of ``path`` (a CSV, if it exists) with those of the same ``key`` replaced by ``rows``.

    Re-running an evaluation on the same runs therefore replaces its rows instead of duplicating them.
    """
    new = pd.DataFrame(rows)
    if path.exists():
        old = pd.read_csv(path)
        if set(key) <= set(old.columns):
            stale = old.set_index(key).index.isin(new.set_index(key).index)
            new = pd.concat([old[~stale], new], ignore_index=True)
    return new.sort_values(key).reset_index(drop=True)


def mean_std_table(frame: pd.DataFrame, value: str, index: str, columns: list[str], digits: int = 3) -> pd.DataFrame:
    """``value`` as "mean (std)" over seeds; ``index`` as rows (methods in the paper's order), ``columns`` across."""
    grouped = frame.groupby([index, *columns])[value].agg(["mean", "std", "count"]).reset_index()

    def cell(row: pd.Series) -> str:
        if pd.isna(row["mean"]):
            return "-"
        std = "" if row["count"] < 2 or pd.isna(row["std"]) else f" ({row['std']:.{digits}f})"
        return f"{row['mean']:.{digits}f}{std}"

    grouped["cell"] = grouped.apply(cell, axis=1)
    table = grouped.pivot_table(index=index, columns=columns, values="cell", aggfunc="first")
    if index in ("method", "model"):
        table = table.reindex(sorted(table.index, key=_method_rank))
    return table.fillna("-")


def markdown_table(table: pd.DataFrame) -> str:
    """A pandas frame as a GitHub Markdown table (no extra dependency)."""
    headers = [str(table.index.name or "")] + [
        " / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in table.columns
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for name, row in table.iterrows():
        lines.append("| " + " | ".join([str(name), *map(str, row.tolist())]) + " |")
    return "\n".join(lines)


def write_tables(
    results_dir: Path,
    name: str,
    rows: list[dict[str, Any]],
    key: list[str],
    sections: list[tuple[str, str, int]],
    columns: list[str],
    preamble: str = "",
    index: str = "model",
) -> tuple[Path, Path]:
    """Merge ``rows`` into ``results/<name>.csv`` (tidy, one row per run and key) and rewrite
    ``results/<name>.md``: one mean (std) table per ``(metric, heading, digits)`` of ``sections``."""
    csv_path, md_path = results_dir / f"{name}.csv", results_dir / f"{name}.md"
    frame = merge_rows(csv_path, rows, key)
    write_text_atomic(csv_path, frame.to_csv(index=False))
    parts = [f"# {name}", ""]
    if preamble:
        parts += [preamble, ""]
    seeds = frame.groupby([index, *columns]).size()
    parts += [f"Mean (std) over {seeds.min()}-{seeds.max()} run(s) per cell; rows from `{csv_path.name}`.", ""]
    for metric, heading, digits in sections:
        if metric in frame.columns and frame[metric].notna().any():
            parts += [f"## {heading}", "", markdown_table(mean_std_table(frame, metric, index, columns, digits)), ""]
    write_text_atomic(md_path, "\n".join(parts))
    return csv_path, md_path
