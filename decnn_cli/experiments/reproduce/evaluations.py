"""The evaluations a recipe can ask for, by kind, and how ``decnn reproduce`` runs one over its runs.

``EVALUATIONS`` maps a kind to what runs it on a run folder, the name of its shared staging table and which of
its settings matter. Every run's evaluation is claimed like a training run, so two ``decnn reproduce``
processes that share runs split the evaluations between them instead of doing them twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from decnn_cli.experiments.reproduce.locking import claim, release

if TYPE_CHECKING:
    from rich.progress import Progress

    from decnn_cli.experiments.common import EvalOptions
    from decnn_cli.experiments.reproduce.planning import PlannedRun
    from decnn_cli.experiments.reproduce.recipe import Evaluation


def _n(evaluation: Evaluation) -> str:
    return f"_n{evaluation.samples}" if evaluation.samples else ""


def _l(evaluation: Evaluation) -> str:
    return f"_l{evaluation.limit}" if evaluation.limit else ""


def _calibration(evaluation: Evaluation, folders: list[Path], outliers: list[str], shared: EvalOptions) -> None:
    from decnn_cli.experiments.calibration import CalibrationOptions, evaluate_calibration

    evaluate_calibration(folders, CalibrationOptions(**vars(shared), samples=evaluation.samples))


def _ood(evaluation: Evaluation, folders: list[Path], outliers: list[str], shared: EvalOptions) -> None:
    from decnn_cli.experiments.ood import OODOptions, evaluate_ood

    options = OODOptions(**vars(shared), outliers=tuple(outliers), samples=evaluation.samples, limit=evaluation.limit)
    evaluate_ood(folders, options)


def _attack(evaluation: Evaluation, folders: list[Path], outliers: list[str], shared: EvalOptions) -> None:
    from decnn_cli.experiments.attack import AttackOptions, evaluate_attack

    options = AttackOptions(
        **vars(shared), attack=evaluation.attack, eps=evaluation.eps, samples=evaluation.samples, limit=evaluation.limit
    )
    evaluate_attack(folders, options)


def _fairness(evaluation: Evaluation, folders: list[Path], outliers: list[str], shared: EvalOptions) -> None:
    from decnn_cli.experiments.fairness import FairnessOptions, evaluate_fairness

    evaluate_fairness(folders, FairnessOptions(**vars(shared), protected=evaluation.protected))


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
    "ood": EvaluationKind(_ood, lambda ev: f"ood{_l(ev)}{_n(ev)}", per_outlier_set=True),
    "attack": EvaluationKind(
        _attack, lambda ev: f"attack_{ev.attack}_eps{ev.eps:g}{_l(ev)}{_n(ev)}", outlier=lambda ev: ev.attack
    ),
    "fairness": EvaluationKind(_fairness, lambda ev: f"fairness_{ev.protected or 'color'}"),
    "training": EvaluationKind(_training, lambda ev: f"training{_n(ev)}"),
}


def staging_name(evaluation: Evaluation) -> str:
    """The shared table an evaluation's per-run rows go to (under ``results/evaluations/``)."""
    return EVALUATIONS[evaluation.kind].staging(evaluation)


def run_evaluation(evaluation: Evaluation, folders: list[Path], outliers: list[str], shared: EvalOptions) -> None:
    """Evaluate ``folders`` as ``evaluation`` asks, adding their rows to ``shared.table``."""
    EVALUATIONS[evaluation.kind].run(evaluation, folders, outliers, shared)


def evaluate(
    evaluation: Evaluation,
    runs: list[PlannedRun],
    staging: Path,
    data_root: Path | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Run one evaluation over ``runs`` (skipping runs already in its staging table); return all its rows."""
    import pandas as pd

    from decnn_cli.experiments.common import EvalOptions

    kind = EVALUATIONS[evaluation.kind]
    table = kind.staging(evaluation)
    csv_path = staging / f"{table}.csv"
    groups: dict[tuple[str, str], list[PlannedRun]] = {}
    for run in runs:
        groups.setdefault((run.dataset, run.variant), []).append(run)
    shared = EvalOptions(results_dir=staging, table=table, data_root=data_root, device=device, progress=progress)
    pending: list[tuple[list[str], list[Path]]] = []  # (outlier sets, run folders) per (dataset, variant)
    for (dataset, variant), group in groups.items():
        outliers = next((evaluation.outliers[k] for k in (variant, dataset, "*") if k in evaluation.outliers), [])
        if not kind.per_outlier_set or outliers:
            pending.append((outliers, [r.folder for r in group]))
    attempted: set[Path] = set()
    while pending:
        existing = pd.read_csv(csv_path) if csv_path.exists() else pd.DataFrame(columns=["run"])
        pending = [
            (outliers, [f for f in folders if f not in attempted and not _has_rows(existing, f.name, kind, outliers)])
            for outliers, folders in pending
        ]
        pending = [(outliers, folders) for outliers, folders in pending if folders]
        # One run at a time, so that a second process can take the next one.
        claimed = next(
            ((o, f) for o, folders in pending for f in folders if claim(staging / f"{table}__{f.name}")), None
        )
        if claimed is None:
            if pending:  # the rest are being evaluated by another `decnn reproduce`: wait for their rows
                time.sleep(10)
            continue
        outliers, folder = claimed
        attempted.add(folder)
        try:
            run_evaluation(evaluation, [folder], outliers, shared)
        finally:
            release(staging / f"{table}__{folder.name}")
    rows: list[dict[str, Any]] = []
    if csv_path.exists():
        frame = pd.read_csv(csv_path)
        wanted = {r.folder.name: r for r in runs}
        for row in frame.to_dict("records"):
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


def _has_rows(existing: Any, run: str, kind: EvaluationKind, outliers: list[str]) -> bool:
    """Whether ``existing`` (a DataFrame) already holds this run's rows (per outlier set: one for each)."""
    mine = existing[existing["run"] == run]
    if mine.empty:
        return False
    if not kind.per_outlier_set:
        return True
    from decnn_cli.data.corruptions import parse_corruption_spec

    expected = set()
    for outlier in outliers:
        if outlier.startswith("corrupt:"):
            expected |= {f"corrupt:{name}@{severity}" for name, severity in parse_corruption_spec(outlier)}
        else:
            expected.add(outlier)
    return expected <= set(mine["outlier"])
