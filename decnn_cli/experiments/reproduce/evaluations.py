"""The evaluations a recipe can ask for, by kind, and how ``decnn reproduce`` runs one over its runs.

``EVALUATIONS`` maps a kind to what runs it on a run folder, the name of its shared staging table and which of
its settings matter. Every run's evaluation is claimed like a training run, so ``decnn reproduce`` processes that
share runs (on one machine or many) split the evaluations between them instead of doing them twice, and each
merges its rows into the shared staging table under a lock.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from decnn_cli.experiments.reproduce.locking import claim

if TYPE_CHECKING:
    from rich.progress import Progress

    from decnn_cli.experiments.common import EvalOptions
    from decnn_cli.experiments.reproduce.planning import PlannedRun
    from decnn_cli.experiments.reproduce.recipe import Evaluation


def _n(evaluation: Evaluation) -> str:
    return f"_n{evaluation.samples}" if evaluation.samples else ""


def _l(evaluation: Evaluation) -> str:
    return f"_l{evaluation.limit}" if evaluation.limit else ""


def _d(evaluation: Evaluation) -> str:
    """The detectors' part of a staging table's name: rows with detector columns are not those without."""
    from decnn_cli.detectors import DETECTORS

    if not evaluation.detectors:
        return ""
    names = "_detectors" if set(evaluation.detectors) == set(DETECTORS) else "_d-" + "-".join(evaluation.detectors)
    return names if evaluation.sampled else f"{names}_only"


def _calibration(evaluation: Evaluation, folders: list[Path], outliers: list[str], shared: EvalOptions) -> None:
    from decnn_cli.experiments.calibration import CalibrationOptions, evaluate_calibration

    evaluate_calibration(folders, CalibrationOptions(**vars(shared), samples=evaluation.samples))


def _ood(evaluation: Evaluation, folders: list[Path], outliers: list[str], shared: EvalOptions) -> None:
    from decnn_cli.experiments.ood import OODOptions, evaluate_ood

    options = OODOptions(
        **vars(shared),
        outliers=tuple(outliers),
        samples=evaluation.samples,
        limit=evaluation.limit,
        detectors=tuple(evaluation.detectors),
        sampled=evaluation.sampled,
    )
    evaluate_ood(folders, options)


def _attack(evaluation: Evaluation, folders: list[Path], outliers: list[str], shared: EvalOptions) -> None:
    from decnn_cli.experiments.attack import AttackOptions, evaluate_attack

    options = AttackOptions(
        **vars(shared), attack=evaluation.attack, eps=evaluation.eps, samples=evaluation.samples, limit=evaluation.limit
    )
    evaluate_attack(folders, options)


def _fairness(evaluation: Evaluation, folders: list[Path], outliers: list[str], shared: EvalOptions) -> None:
    from decnn_cli.experiments.fairness import FairnessOptions, evaluate_fairness

    evaluate_fairness(folders, FairnessOptions(**vars(shared), protected=evaluation.protected, split=evaluation.split))


def _training(evaluation: Evaluation, folders: list[Path], outliers: list[str], shared: EvalOptions) -> None:
    from decnn_cli.experiments.report import ReportOptions, report_runs

    report_runs(folders, ReportOptions(results_dir=shared.results_dir, table=shared.table))


@dataclass(frozen=True)
class EvaluationKind:
    """One kind of ``[[evaluations]]``: ``run(evaluation, run folders, outlier sets, shared options)`` adds rows
    to the staging table ``staging(evaluation)``; with ``per_outlier_set`` a run is evaluated only against the
    outlier sets the recipe names for it, and its rows are complete once every set has one; ``outlier`` names the
    column ``outlier`` of its rows in the comparison with the paper."""

    run: Callable[[Evaluation, list[Path], list[str], EvalOptions], None]
    staging: Callable[[Evaluation], str]
    per_outlier_set: bool = False
    outlier: Callable[[Evaluation], str] = lambda evaluation: ""


# The staging table's name holds the evaluation's settings, so two recipes asking for the same evaluation of the
# same run share the rows, and different settings never mix.
EVALUATIONS: dict[str, EvaluationKind] = {
    "calibration": EvaluationKind(_calibration, lambda ev: f"calibration{_n(ev)}"),
    "ood": EvaluationKind(_ood, lambda ev: f"ood{_l(ev)}{_n(ev) if ev.sampled else ''}{_d(ev)}", per_outlier_set=True),
    "attack": EvaluationKind(
        _attack, lambda ev: f"attack_{ev.attack}_eps{ev.eps:g}{_l(ev)}{_n(ev)}", outlier=lambda ev: ev.attack
    ),
    "fairness": EvaluationKind(
        _fairness, lambda ev: f"fairness_{ev.protected or 'color'}{'' if ev.split == 'test' else '_' + ev.split}"
    ),
    "training": EvaluationKind(_training, lambda ev: f"training{_n(ev)}"),
}


def staging_name(evaluation: Evaluation) -> str:
    """The shared table an evaluation's per-run rows go to (under ``results/evaluations/``)."""
    return EVALUATIONS[evaluation.kind].staging(evaluation)


def run_evaluation(evaluation: Evaluation, folders: list[Path], outliers: list[str], shared: EvalOptions) -> None:
    """Evaluate ``folders`` as ``evaluation`` asks, adding their rows to ``shared.table``."""
    EVALUATIONS[evaluation.kind].run(evaluation, folders, outliers, shared)


# Seconds between looks at a run's rows while another process evaluates it.
POLL_S = 10.0


def evaluate(
    evaluation: Evaluation,
    runs: list[PlannedRun],
    staging: Path,
    data_root: Path | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Run one evaluation over ``runs`` (skipping runs already in its staging table, waiting for those another
    process is evaluating); return the rows of ``runs``."""
    kind = EVALUATIONS[evaluation.kind]
    table = kind.staging(evaluation)
    csv_path = staging / f"{table}.csv"
    pending = _units(evaluation, runs)
    attempted: set[Path] = set()
    while pending:
        existing = _staged(csv_path)
        pending = [(o, f) for o, f in pending if f not in attempted and not _has_rows(existing, f.name, kind, o)]
        # One run at a time, so that a second process can take the next one.
        for outliers, folder in pending:
            held = claim(staging / f"{table}__{folder.name}")
            if held is None:
                continue
            with held:
                attempted.add(folder)
                if not _has_rows(_staged(csv_path), folder.name, kind, outliers):  # not done meanwhile
                    _evaluate_one(evaluation, folder, outliers, staging, data_root, device, progress)
            break
        else:
            if pending:  # the rest are being evaluated by another process: wait for their rows
                time.sleep(POLL_S)
    return staged_rows(evaluation, runs, staging)


def lacking(evaluation: Evaluation, runs: list[PlannedRun], staging: Path) -> list[PlannedRun]:
    """The runs of ``runs`` that ``evaluation`` sees whose rows its staging table lacks."""
    kind = EVALUATIONS[evaluation.kind]
    existing = _staged(staging / f"{kind.staging(evaluation)}.csv")
    folders = {f for outliers, f in _units(evaluation, runs) if not _has_rows(existing, f.name, kind, outliers)}
    return [r for r in runs if r.folder in folders]


def staged_rows(evaluation: Evaluation, runs: list[PlannedRun], staging: Path) -> list[dict[str, Any]]:
    """The rows of ``runs`` in the evaluation's staging table, with the columns the comparison groups by."""
    kind = EVALUATIONS[evaluation.kind]
    csv_path = staging / f"{kind.staging(evaluation)}.csv"
    if not csv_path.exists():
        return []
    import pandas as pd

    wanted = {r.folder.name: r for r in runs}
    rows: list[dict[str, Any]] = []
    for row in pd.read_csv(csv_path).to_dict("records"):
        if row["run"] in wanted:
            planned = wanted[row["run"]]
            rows.append(
                row
                | {
                    "kind": evaluation.kind,
                    "model": planned.model,
                    "variant": planned.variant,
                    "outlier": row.get("outlier", kind.outlier(evaluation)),
                }
            )
    return rows


def _units(evaluation: Evaluation, runs: list[PlannedRun]) -> list[tuple[list[str], Path]]:
    """(outlier sets, run folder) for every run the evaluation evaluates: with ``per_outlier_set``, only the runs
    the recipe names outlier sets for (by variant label, inlier dataset or '*')."""
    kind = EVALUATIONS[evaluation.kind]
    units = []
    for run in runs:
        outliers = outlier_sets(evaluation, run)
        if not kind.per_outlier_set or outliers:
            units.append((outliers, run.folder))
    return units


def outlier_sets(evaluation: Evaluation, run: PlannedRun) -> list[str]:
    """The outlier sets the recipe names for ``run`` (by variant label, inlier dataset or '*'; else none)."""
    return next((evaluation.outliers[k] for k in (run.variant, run.dataset, "*") if k in evaluation.outliers), [])


def _staged(csv_path: Path) -> Any:
    """The staging table as a DataFrame (empty, with a ``run`` column, before its first row)."""
    import pandas as pd

    return pd.read_csv(csv_path) if csv_path.exists() else pd.DataFrame(columns=["run"])


def _evaluate_one(
    evaluation: Evaluation,
    folder: Path,
    outliers: list[str],
    staging: Path,
    data_root: Path | None,
    device: str,
    progress: Progress | None,
) -> None:
    """Evaluate one run into a folder of its own, then merge its rows into the shared staging table.

    Processes evaluating other runs at the same time each merge under a short lock on the table, so that no
    process overwrites rows another has just added. The evaluation's pictures (a run's ROC curves, an outlier
    sheet) replace those in ``staging``; its one-run Markdown summary is dropped (the recipe's tables are the
    summary).
    """
    from decnn_cli.experiments.common import EvalOptions
    from decnn_cli.results import merge_rows, write_text_atomic

    kind = EVALUATIONS[evaluation.kind]
    table = kind.staging(evaluation)
    work = staging / f".work-{table}__{folder.name}.{secrets.token_hex(4)}"
    try:
        shared = EvalOptions(
            results_dir=work,
            table=table,
            data_root=data_root,
            device=device,
            show_progress=progress is not None,
            progress=progress,
        )
        run_evaluation(evaluation, [folder], outliers, shared)
        produced = work / f"{table}.csv"
        if produced.exists():
            rows = _staged(produced).to_dict("records")
            key = ["run", "outlier"] if kind.per_outlier_set else ["run"]
            with _merging(staging / f"{table}.csv"):
                merged = merge_rows(staging / f"{table}.csv", rows, key)
                write_text_atomic(staging / f"{table}.csv", merged.to_csv(index=False))
        for path in work.iterdir() if work.is_dir() else ():
            if path.is_file() and path.suffix not in (".csv", ".md"):
                os.replace(path, staging / path.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _merging(table: Path) -> Iterator[None]:
    """Hold the staging table's lock (another process merging its rows keeps it for a moment)."""
    while (held := claim(table)) is None:
        time.sleep(0.05)
    with held:
        yield


def _has_rows(existing: Any, run: str, kind: EvaluationKind, outliers: list[str]) -> bool:
    """Whether ``existing`` (a DataFrame) already holds this run's rows (per outlier set: one for each)."""
    mine = existing[existing["run"] == run]
    if mine.empty:
        return False
    if not kind.per_outlier_set:
        return True
    from decnn_cli.data.sources import outlier_rows

    expected = {row for outlier in outliers for row in outlier_rows(outlier)}
    return expected <= set(mine["outlier"])
