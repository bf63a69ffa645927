"""Run folders and result files: traceable names, atomic writes, nothing half-written left behind."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import pandas as pd

from decnn_cli.config import RunConfig

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


@contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """An open temporary file beside ``path``, renamed onto ``path`` when the block ends without an error.

    The temporary file has a unique hidden name (concurrent writers never share one) and is created as ``open``
    creates files, with mode 0666 less the umask (0644 under umask 022); ``tempfile.mkstemp`` would make it 0600.
    On an error it is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
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
    """``<dataset>__<method>__seed<k>__<YYYYmmdd-HHMMSS>``."""
    stamp = (when or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{cfg.data.name}__{cfg.method.name}__seed{cfg.train.seed}__{stamp}"


class RunFolder:
    """A run's folder, built under a hidden temporary name and renamed into place only on success.

    A run that fails (or is killed) leaves at most a ``.partial-*`` folder, which never looks finished;
    ``__exit__`` removes it on ordinary errors.
    """

    def __init__(self, out_dir: Path, name: str):
        self.out_dir = out_dir
        self.final = out_dir / name
        suffix = 1
        while self.final.exists():
            self.final = out_dir / f"{name}-{suffix}"
            suffix += 1
        self.path = out_dir / f".partial-{self.final.name}"

    def __enter__(self) -> RunFolder:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            os.replace(self.path, self.final)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


# --- aggregated tables -------------------------------------------------------------------------------

METHOD_ORDER = ["standard", "decnn", "redecnn", "dropout", "mc-dropout", "bayesnn", "ensemble"]


def _method_rank(name: str) -> tuple[int, str]:
    """Paper order for a method name, or for a model name like 'redecnn (Eq. 8)'."""
    base = name.split(" (")[0]
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), name)


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
