"""``decnn eval-calibration``: accuracy, ECE, NLL, Brier and misclassification ROC-AUC (Tables 1a, 1b, 4a)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from decnn_cli import metrics, plots
from decnn_cli.engine import progress_or_new
from decnn_cli.experiments.common import (
    EvalOptions,
    load_run,
    predict_split,
    resolve_runs,
    test_splits,
    warn_constant_outputs,
)
from decnn_cli.results import save_npz_atomic, write_tables
from decnn_cli.uncertainty import SCORES, Predictions, decision_scores

TABLE_SECTIONS = [
    ("accuracy", "Accuracy (%) on the test split (Table 1a)", 2),
    ("misclass_auroc_vote_entropy", "Misclassification ROC-AUC, vote entropy (Eq. 6) as score (Table 1b)", 3),
    ("ece", "Expected calibration error (%), 15 bins (Table 4a)", 2),
    ("nll", "Negative log-likelihood", 4),
    ("brier", "Brier score", 4),
    ("misclass_auroc_predictive_entropy", "Misclassification ROC-AUC, predictive entropy as score", 3),
    ("misclass_auroc_one_minus_max_prob", "Misclassification ROC-AUC, 1 - max probability as score", 3),
    (
        "constant_outputs",
        "Outputs predicted the same for every test input (attributes, or 1: a constant classifier)",
        1,
    ),
]


@dataclass(frozen=True)
class CalibrationOptions(EvalOptions):
    """``samples``: N sampled predictions per input (default: each run's ``eval.samples``); ``split``: the split
    evaluated: "test" for the tables, "val" to choose a setting (N, say) without looking at the test split."""

    table: str = "calibration"
    samples: int | None = None
    split: Literal["test", "val"] = "test"


def evaluate_calibration(
    run_paths: list[Path], options: CalibrationOptions = CalibrationOptions()
) -> list[dict[str, Any]]:
    """Evaluate each run on its test (or validation) split and merge one row per run into
    ``results/<table>.{csv,md}``.

    Each run folder also receives ``calibration.npz`` (labels, predictive and sampled probabilities, votes
    and every uncertainty score per example) and ``reliability.png`` (``calibration_val.npz`` and
    ``reliability_val.png`` for the validation split); ``results/<table>_reliability.png`` shows one diagram per
    dataset and model, seeds pooled.
    """
    o = options
    results_dir, table = o.results_dir, o.table
    suffix = "" if o.split == "test" else f"_{o.split}"  # the test split keeps the files' original names
    rows = []
    pooled: dict[str, list[tuple[np.ndarray, np.ndarray, str, int]]] = {}
    with progress_or_new(o.progress, o.show_progress) as progress:
        for path in resolve_runs(run_paths):
            run = load_run(path, o.device, o.precision)
            n = o.samples if o.samples is not None else run.cfg.eval.samples
            splits = test_splits(run, o.data_root)
            pred = predict_split(run, getattr(splits, o.split), n, progress, f"{path.name[:40]}")
            bins = run.cfg.eval.ece_bins
            probs = pred.probs
            scores = decision_scores(pred)
            row = {
                **run.identity(),
                **({"split": o.split} if suffix else {}),
                "samples": pred.num_samples,
                "predictive": pred.predictive,
                "accuracy": metrics.accuracy(probs, pred.labels, pred.task),
                "ece": metrics.ece(probs, pred.labels, pred.task, bins),
                "nll": metrics.nll(probs, pred.labels, pred.task),
                "brier": metrics.brier(probs, pred.labels, pred.task),
                "constant_outputs": warn_constant_outputs(run, pred, o.split),
            }
            for name in SCORES:
                row[f"misclass_auroc_{name}"] = metrics.misclassification_auroc(
                    probs, pred.labels, pred.task, scores[name]
                )
            rows.append(row)
            pooled.setdefault(f"{row['dataset']}: {row['model']}", []).append((probs, pred.labels, pred.task, bins))
            _save_example_level(path / f"calibration{suffix}.npz", pred, scores)
            plots.save_reliability_diagram(
                metrics.reliability_bins(probs, pred.labels, pred.task, bins),
                f"{run.cfg.method.name} on {run.cfg.data.name} ({o.split}): ECE {row['ece']:.2f}%",
                path / f"reliability{suffix}.png",
            )
    panels = {}
    for title, parts in sorted(pooled.items()):
        probs, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        panels[title] = metrics.reliability_bins(probs, labels, parts[0][2], parts[0][3])
    results_dir.mkdir(parents=True, exist_ok=True)
    plots.save_reliability_grid(panels, results_dir / f"{table}_reliability.png")
    write_tables(
        results_dir,
        table,
        rows,
        key=["run"],
        sections=TABLE_SECTIONS,
        columns=["dataset"],
        preamble="Written by `decnn eval-calibration`. Uncertainty scores: higher = more uncertain; the wrong "
        "predictions are the positive class of the misclassification ROC-AUC. Deterministic methods have one "
        "sample, so their vote entropy is constant (ROC-AUC 0.5).",
    )
    return rows


def _save_example_level(path: Path, pred: Predictions, scores: dict[str, np.ndarray]) -> None:
    save_npz_atomic(
        path,
        labels=pred.labels,
        probs=pred.probs,
        point_probs=pred.point_probs,
        mean_probs=pred.mean_probs,
        votes=pred.votes,
        **{f"score_{k}": v for k, v in scores.items()},
    )
