"""``decnn eval-ood``: ROC-AUC, AUPR and FPR at 95% TPR of telling outliers from inliers by uncertainty (Tables 2, 3).

Inliers (the run's test split) are the negative class, outliers the positive class; every score is oriented
so that higher = more uncertain, so a useful score has ROC-AUC above 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve
from torch.utils.data import Subset

from decnn_cli import metrics, plots
from decnn_cli.data.outliers import build_outliers
from decnn_cli.engine import progress_or_new
from decnn_cli.experiments.common import EvalOptions, Run, load_run, predict_split, resolve_runs, test_splits
from decnn_cli.results import save_npz_atomic, write_tables
from decnn_cli.uncertainty import SCORES, uncertainty_scores

SECTIONS = [
    ("auroc_vote_entropy", "OOD ROC-AUC, vote entropy (Eq. 6) as score (Table 2)", 3),
    ("auroc_predictive_entropy", "OOD ROC-AUC, predictive entropy as score", 3),
    ("auroc_one_minus_max_prob", "OOD ROC-AUC, 1 - max probability as score", 3),
    ("aupr_vote_entropy", "OOD AUPR (outliers positive), vote entropy", 3),
    ("fpr95_vote_entropy", "FPR at 95% TPR, vote entropy (lower is better)", 3),
]


def separation_row(inlier_scores: dict[str, np.ndarray], outlier_scores: dict[str, np.ndarray]) -> dict[str, float]:
    """ROC-AUC, AUPR and FPR@95%TPR for every score, outliers positive."""
    row = {}
    for name in SCORES:
        neg, pos = inlier_scores[name], outlier_scores[name]
        row[f"auroc_{name}"] = metrics.auroc(neg, pos)
        row[f"aupr_{name}"] = metrics.aupr(neg, pos)
        row[f"fpr95_{name}"] = metrics.fpr_at_tpr(neg, pos)
    return row


def roc_points(neg: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    fpr, tpr, _ = roc_curve(y, np.r_[neg, pos])
    return fpr, tpr


def corruption_summary(rows: list[dict[str, Any]], identity: dict[str, Any]) -> list[dict[str, Any]]:
    """Table 2's "Corrupt (Mean)" and "(Stdev)" rows: mean and std over the corruptions of one run."""
    corrupt = [r for r in rows if r["outlier"].startswith("corrupt:")]
    if len(corrupt) < 2:
        return []
    summary = []
    for stat, fn in (("corrupt (mean)", np.mean), ("corrupt (stdev)", np.std)):
        row = {**identity, "outlier": stat, "conversion": f"{stat[9:-1]} over {len(corrupt)} corruptions"}
        for key in corrupt[0]:
            if key.startswith(("auroc_", "aupr_", "fpr95_")):
                row[key] = float(fn([r[key] for r in corrupt]))
        summary.append(row)
    return summary


def _first(dataset, limit: int | None):
    return dataset if limit is None or limit >= len(dataset) else Subset(dataset, range(limit))


@dataclass(frozen=True)
class OODOptions(EvalOptions):
    """``outliers``: outlier sets (``decnn_cli.data.outliers``); ``samples``: N sampled predictions per input
    (default: each run's ``eval.samples``); ``limit``: cap the inlier and each outlier set (the first examples)."""

    table: str = "ood"
    outliers: tuple[str, ...] = ()
    samples: int | None = None
    limit: int | None = None


def evaluate_ood(run_paths: list[Path], options: OODOptions) -> list[dict[str, Any]]:
    """Score every run's inliers and each outlier set; merge rows into ``results/<table>.{csv,md}``.

    Each run folder receives ``ood_<outlier>.npz`` (per-example scores of inliers and outliers) and
    ``roc_<outlier>.png``.
    """
    o = options
    results_dir, table, outliers, limit, data_root = o.results_dir, o.table, list(o.outliers), o.limit, o.data_root
    rows: list[dict[str, Any]] = []
    pooled: dict[tuple[str, str], dict[str, list]] = {}
    with progress_or_new(o.progress, o.show_progress) as progress:
        for path in resolve_runs(run_paths):
            run = load_run(path, o.device, o.precision)
            n = o.samples or run.cfg.eval.samples
            splits = test_splits(run, data_root)
            inlier_pred = predict_split(run, _first(splits.test, limit), n, progress, f"{path.name[:32]} inliers")
            inlier_scores = uncertainty_scores(inlier_pred)
            run_rows = []
            for outlier in outliers:
                data_cfg = run.cfg.data if data_root is None else run.cfg.data.model_copy(update={"root": data_root})
                for oset in build_outliers(outlier, run.spec, data_cfg, splits.test, limit, run.cfg.train.seed):
                    neg = inlier_scores
                    if oset.inliers is not None:
                        neg = uncertainty_scores(predict_split(run, oset.inliers, n, progress, "held-in"))
                    pos_pred = predict_split(run, oset.outliers, n, progress, oset.name[:40])
                    pos = uncertainty_scores(pos_pred)
                    row = {
                        **run.identity(),
                        "outlier": oset.name,
                        "conversion": oset.conversion,
                        "inliers": len(neg["vote_entropy"]),
                        "outliers": len(pos["vote_entropy"]),
                        "samples": inlier_pred.num_samples,
                        **separation_row(neg, pos),
                    }
                    run_rows.append(row)
                    save_run_scores(run, oset.name, neg, pos)
                    curves = pooled.setdefault((run.cfg.data.name, oset.name), {})
                    curves.setdefault(row["model"], []).append((neg["vote_entropy"], pos["vote_entropy"]))
            rows += run_rows + corruption_summary(run_rows, run.identity())
            if any(o.startswith("corrupt:") for o in outliers):
                from decnn_cli.data.corruptions import corruption_sheet
                from decnn_cli.data.outliers import images_of

                results_dir.mkdir(parents=True, exist_ok=True)
                corruption_sheet(
                    images_of(splits.test, 1)[0], results_dir / f"{table}_corruptions_{run.cfg.data.name}.png"
                )
    save_pooled_roc_curves(pooled, results_dir, table)
    write_tables(
        results_dir,
        table,
        rows,
        key=["run", "outlier"],
        sections=SECTIONS,
        columns=["dataset", "model"],
        index="outlier",
        preamble="Written by `decnn eval-ood`. Inliers (the run's test split) are negatives, outliers positives; "
        "scores: higher = more uncertain. Outliers from another dataset are converted to the model's input shape "
        "(see the `conversion` column of the CSV).",
    )
    return rows


def save_pooled_roc_curves(pooled: dict[tuple[str, str], dict[str, list]], results_dir: Path, table: str) -> None:
    """``results/<table>_roc_<dataset>_<outlier>.png``: one vote-entropy ROC curve per model, seeds pooled."""
    results_dir.mkdir(parents=True, exist_ok=True)
    for (dataset, outlier), by_model in pooled.items():
        curves = {}
        for model, pairs in sorted(by_model.items()):
            neg, pos = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
            fpr, tpr = roc_points(neg, pos)
            curves[model] = (fpr, tpr, metrics.auroc(neg, pos))
        slug = f"{dataset}_{outlier}".replace(":", "-").replace("@", "-")
        plots.save_roc_curves(curves, f"{dataset} vs {outlier} (vote entropy)", results_dir / f"{table}_roc_{slug}.png")


def save_run_scores(run: Run, name: str, neg: dict[str, np.ndarray], pos: dict[str, np.ndarray]) -> None:
    slug = name.replace(":", "-").replace("@", "-")
    save_npz_atomic(
        run.path / f"ood_{slug}.npz",
        **{f"inlier_{k}": v for k, v in neg.items()},
        **{f"outlier_{k}": v for k, v in pos.items()},
    )
    curves = {}
    for score in SCORES:
        fpr, tpr = roc_points(neg[score], pos[score])
        curves[score] = (fpr, tpr, metrics.auroc(neg[score], pos[score]))
    plots.save_roc_curves(curves, f"{run.cfg.method.name}: {run.cfg.data.name} vs {name}", run.path / f"roc_{slug}.png")
