"""``decnn report``: the training metrics of finished runs as one tidy CSV and mean (std) Markdown tables."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decnn_cli.config import RunConfig, read_toml
from decnn_cli.errors import DecnnError
from decnn_cli.experiments.common import resolve_runs, run_variant
from decnn_cli.results import FINISHED_MARKER, write_tables

SECTIONS = [
    ("test_accuracy", "Test accuracy (%)", 2),
    ("test_ece", "Test ECE (%)", 2),
    ("test_nll", "Test NLL", 4),
    ("seconds_per_epoch", "Seconds per epoch", 2),
]
COLUMNS = [
    "dataset",
    "method",
    "seed",
    "run",
    "epochs",
    "test_accuracy",
    "test_point_accuracy",
    "test_ece",
    "test_nll",
    "constant_outputs",
    "val_accuracy",
    "seconds_per_epoch",
    "parameters",
    "device",
    "git_revision",
]


@dataclass(frozen=True)
class ReportOptions:
    """Where the rows go: ``results_dir/<table>.{csv,md}``."""

    results_dir: Path = Path("results")
    table: str = "training"


def report_runs(run_paths: list[Path], options: ReportOptions = ReportOptions()) -> list[dict[str, Any]]:
    """One row per run from its ``metrics.json`` (no model is loaded); merged into ``results/<table>``."""
    results_dir, table = options.results_dir, options.table
    rows = []
    for path in resolve_runs(run_paths):
        marker = path / FINISHED_MARKER
        if not marker.is_file():
            raise DecnnError(
                f"{path} is not a finished run (no {FINISHED_MARKER}); pass folders written by `decnn train`"
            )
        try:
            raw = json.loads(marker.read_text())
        except json.JSONDecodeError as err:
            raise DecnnError(f"{marker} is not valid JSON ({err}); retrain the run") from None
        missing = [c for c in ("dataset", "method", "seed", "test_accuracy") if c not in raw]
        if missing:
            raise DecnnError(f"{marker} lacks {missing}: it was written by another version of decnn; retrain the run")
        variant = "none"
        if (path / "config.toml").is_file():
            variant = run_variant(RunConfig.model_validate(read_toml(path / "config.toml")))
        model = raw["method"] if variant == "none" else f"{raw['method']} ({variant})"
        rows.append({c: raw.get(c) for c in COLUMNS} | {"run": path.name, "variant": variant, "model": model})
    write_tables(
        results_dir,
        table,
        rows,
        key=["run"],
        sections=SECTIONS,
        columns=["dataset"],
        preamble="Written by `decnn report` from each run's metrics.json.",
    )
    return rows
