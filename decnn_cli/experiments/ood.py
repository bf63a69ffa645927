"""``decnn eval-ood``: ROC-AUC, AUPR and FPR at 95% TPR of telling outliers from inliers by uncertainty (Tables 2, 3).

Inliers (the run's test split) are the negative class, outliers the positive class; every score is oriented
so that higher = more uncertain, so a useful score has ROC-AUC above 0.5. Besides the sampled scores
(``uncertainty.SCORES``), post-hoc detectors (``decnn_cli.detectors``: MSP, Energy, MaxLogit, Mahalanobis, ViM,
KNN from pytorch-ood, and the decoder's reconstruction error) add their own columns when asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve
from torch.utils.data import Dataset, Subset

from decnn_cli import metrics, plots
from decnn_cli.data.outliers import OutlierSet, build_outliers, unlabelled
from decnn_cli.data.sources import ATTACK, check_outliers, dataset_label, parse_attack_spec
from decnn_cli.data.splitting import cap, make_loader
from decnn_cli.detectors import DETECTORS, FIT_EXAMPLES, Detectors, parse_detectors, point_outputs
from decnn_cli.engine import progress_or_new, seed_everything
from decnn_cli.errors import DecnnError
from decnn_cli.experiments.common import (
    EvalOptions,
    Run,
    load_run,
    predict_split,
    resolve_runs,
    test_splits,
    warn,
    warn_constant_outputs,
)
from decnn_cli.results import save_npz_atomic, write_tables
from decnn_cli.uncertainty import uncertainty_scores

SECTIONS = [
    ("auroc_vote_entropy", "OOD ROC-AUC, vote entropy (Eq. 6) as score (Table 2)", 3),
    ("auroc_predictive_entropy", "OOD ROC-AUC, predictive entropy as score", 3),
    ("auroc_one_minus_max_prob", "OOD ROC-AUC, 1 - max probability as score", 3),
    ("aupr_vote_entropy", "OOD AUPR (outliers positive), vote entropy", 3),
    ("fpr95_vote_entropy", "FPR at 95% TPR, vote entropy (lower is better)", 3),
]


def detector_sections(detectors: tuple[str, ...]) -> list[tuple[str, str, int]]:
    """The Markdown sections of the detectors' ROC-AUCs."""
    return [(f"auroc_{name}", f"OOD ROC-AUC, {name}: {DETECTORS[name].summary}", 3) for name in detectors]


def separation_row(inlier_scores: dict[str, np.ndarray], outlier_scores: dict[str, np.ndarray]) -> dict[str, float]:
    """ROC-AUC, AUPR and FPR@95%TPR for every score (higher = more uncertain), outliers positive."""
    row = {}
    for name in inlier_scores:
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
    """``outliers``: outlier sets (``decnn_cli.data.sources``); ``samples``: N sampled predictions per input
    (default: each run's ``eval.samples``); ``limit``: cap the inlier and each outlier set (the first examples);
    ``detectors``: post-hoc detectors (``decnn_cli.detectors``, or ``all``), fitted on at most ``fit_examples``
    examples of each run's training split; ``sampled``: whether the sampled scores (``uncertainty.SCORES``) are
    computed: without them a run costs one forward pass per input, and its rows hold the detectors' columns only
    (for a table whose sampled scores come from another evaluation at a larger N)."""

    table: str = "ood"
    outliers: tuple[str, ...] = ()
    samples: int | None = None
    limit: int | None = None
    detectors: tuple[str, ...] = ()
    fit_examples: int = FIT_EXAMPLES
    sampled: bool = True


class RunDetectors:
    """The detectors of one run, fitted on (at most ``fit_examples`` of) its training split."""

    def __init__(self, run: Run, train: Dataset, names: tuple[str, ...], fit_examples: int, progress) -> None:
        self.run, self.progress = run, progress
        fit = cap(train, fit_examples, run.cfg.data.split_seed)
        self.detectors = Detectors(names, self.outputs(fit, "fit detectors"), run.spec.task == "multilabel")
        for name, reason in self.detectors.skipped.items():
            warn(f"{run.path.name}: no {name} ({reason})")
        for note in self.detectors.notes:
            warn(f"{run.path.name}: {note}")

    def outputs(self, dataset: Dataset, description: str):
        run = self.run
        return point_outputs(
            run.model, run.method, dataset, run.device, run.cfg.eval.batch_size, self.progress, description
        )

    def scores(self, dataset: Dataset, description: str) -> dict[str, np.ndarray]:
        if not self.detectors.names:
            return {}
        return self.detectors.scores(self.outputs(dataset, description))


def adversarial_set(outlier: str, run: Run, inliers: Dataset) -> OutlierSet:
    """``attack:<name>[@eps]``: the inliers (the first test inputs), attacked with torchattacks against the run's single
    deterministic classifier (``MethodSpec.point``), as ``decnn attack`` attacks them; seeded by the run's seed."""
    import torch

    from decnn_cli.experiments.attack import make_attack

    name, eps = parse_attack_spec(outlier)
    if run.spec.task != "multiclass":
        raise DecnnError(f"run {run.path.name} is multi-label; {outlier} needs a single-label classifier")
    adversary = make_attack(name, run.method.point(run.model).eval(), eps)
    seed_everything(run.cfg.train.seed)
    crafted = []
    for batch in make_loader(inliers, run.cfg.eval.batch_size, shuffle=False):
        x, y = batch[0].to(run.device), batch[1].to(run.device)
        with torch.enable_grad():
            crafted.append(adversary(x, y).detach().cpu())
    x = torch.cat(crafted)
    how = (
        f"the {len(x)} inliers attacked by {name} at eps {eps:g} (L-inf, inputs in [0, 1]) against the run's classifier"
    )
    return OutlierSet(f"attack:{name}@{eps:g}", unlabelled(x), how)


def evaluate_ood(run_paths: list[Path], options: OODOptions) -> list[dict[str, Any]]:
    """Score every run's inliers and each outlier set; merge rows into ``results/<table>.{csv,md}``.

    Each run folder receives ``ood_<outlier>.npz`` (per-example scores of inliers and outliers) and
    ``roc_<outlier>.png``. The outlier sets and detectors are checked before any run or data is loaded.
    """
    o = options
    results_dir, table, outliers, limit, data_root = o.results_dir, o.table, list(o.outliers), o.limit, o.data_root
    check_outliers(outliers)
    detectors = parse_detectors(o.detectors)
    if not o.sampled and not detectors:
        raise DecnnError("--detectors-only scores nothing without a detector: add --detector NAME (or all)")
    rows: list[dict[str, Any]] = []
    pooled: dict[tuple[str, str], dict[str, list]] = {}
    with progress_or_new(o.progress, o.show_progress) as progress:
        for path in resolve_runs(run_paths):
            run = load_run(path, o.device, o.precision)
            n = (o.samples if o.samples is not None else run.cfg.eval.samples) if o.sampled else 1
            splits = test_splits(run, data_root)
            inliers = _first(splits.test, limit)
            scorer = RunDetectors(run, splits.train, detectors, o.fit_examples, progress) if detectors else None
            if not o.sampled and not scorer.detectors.names:
                warn(f"{path.name}: skipped, no detector asked for can act on it")
                continue
            inlier_pred = predict_split(run, inliers, n, progress, f"{path.name[:32]} inliers")
            inlier_scores = uncertainty_scores(inlier_pred) if o.sampled else {}
            constant = warn_constant_outputs(run, inlier_pred)
            if scorer is not None:
                inlier_scores |= scorer.scores(inliers, "detectors: inliers")
            run_rows = []
            for outlier in outliers:
                data_cfg = run.cfg.data if data_root is None else run.cfg.data.model_copy(update={"root": data_root})
                if outlier.startswith(ATTACK):
                    sets = [adversarial_set(outlier, run, inliers)]
                else:
                    sets = build_outliers(outlier, run.spec, data_cfg, splits.test, limit, run.cfg.train.seed)
                for oset in sets:
                    neg = inlier_scores
                    if oset.inliers is not None:
                        neg = {}
                        if o.sampled:
                            neg = uncertainty_scores(predict_split(run, oset.inliers, n, progress, "held-in"))
                        if scorer is not None:
                            neg |= scorer.scores(oset.inliers, "detectors: held-in")
                    pos = {}
                    if o.sampled:
                        pos = uncertainty_scores(predict_split(run, oset.outliers, n, progress, oset.name[:40]))
                    if scorer is not None:
                        pos |= scorer.scores(oset.outliers, f"detectors: {oset.name[:30]}")
                    row = {
                        **run.identity(),
                        "outlier": oset.name,
                        "conversion": oset.conversion,
                        "inliers": len(next(iter(neg.values()))),
                        "outliers": len(next(iter(pos.values()))),
                        **({"samples": inlier_pred.num_samples} if o.sampled else {}),
                        "constant_outputs": constant,
                        **separation_row(neg, pos),
                    }
                    if oset.warning is not None:
                        warn(f"{path.name}: {oset.warning}")
                        row["warning"] = oset.warning
                    run_rows.append(row)
                    save_run_scores(run, oset.name, neg, pos)
                    if o.sampled:
                        curves = pooled.setdefault((run.cfg.data.name, oset.name), {})
                        curves.setdefault(row["model"], []).append((neg["vote_entropy"], pos["vote_entropy"]))
            rows += run_rows + corruption_summary(run_rows, run.identity())
            if any(o.startswith("corrupt:") for o in outliers):
                from decnn_cli.data.corruptions import corruption_sheet
                from decnn_cli.data.outliers import images_of

                results_dir.mkdir(parents=True, exist_ok=True)
                corruption_sheet(
                    images_of(splits.test, 1)[0],
                    results_dir / f"{table}_corruptions_{dataset_label(run.cfg.data.name)}.png",
                )
    if not rows:
        raise DecnnError(
            f"no run could be scored: none of the detectors {', '.join(detectors)} acts on these runs; "
            "name another with --detector, or drop --detectors-only"
        )
    save_pooled_roc_curves(pooled, results_dir, table)
    write_tables(
        results_dir,
        table,
        rows,
        key=["run", "outlier"],
        sections=(SECTIONS if o.sampled else []) + detector_sections(detectors),
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
        slug = _slug(f"{dataset_label(dataset)}_{outlier}")
        plots.save_roc_curves(curves, f"{dataset} vs {outlier} (vote entropy)", results_dir / f"{table}_roc_{slug}.png")


def _slug(name: str) -> str:
    """A filesystem-safe form of a dataset or outlier name, for file names."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("@", "-"))


def save_run_scores(run: Run, name: str, neg: dict[str, np.ndarray], pos: dict[str, np.ndarray]) -> None:
    """``ood_<name>.npz`` (every score of every inlier and outlier) and ``roc_<name>.png`` (a ROC curve per score;
    the reconstruction error's per-layer scores are in the npz only) in the run folder."""
    slug = _slug(name)
    arrays = {f"inlier_{k}": v for k, v in neg.items()} | {f"outlier_{k}": v for k, v in pos.items()}
    path = run.path / f"ood_{slug}.npz"
    if path.exists():
        # Another evaluation's scores of the same sets (the sampled ones, say, beside a detectors-only run) stay;
        # scores of sets of another size are replaced.
        sizes = {"inlier": len(next(iter(neg.values()))), "outlier": len(next(iter(pos.values())))}
        with np.load(path) as kept:
            same = all(len(kept[k]) == sizes[k.split("_")[0]] for k in kept.files)
            arrays = ({k: kept[k] for k in kept.files} if same else {}) | arrays
    save_npz_atomic(path, **arrays)
    curves = {}
    for score in neg:
        if re.fullmatch(r"recon_error_l\d+", score):
            continue
        fpr, tpr = roc_points(neg[score], pos[score])
        curves[score] = (fpr, tpr, metrics.auroc(neg[score], pos[score]))
    plots.save_roc_curves(curves, f"{run.cfg.method.name}: {run.cfg.data.name} vs {name}", run.path / f"roc_{slug}.png")
