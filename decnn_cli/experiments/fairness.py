"""``decnn fairness``: per-group F1, AP and ECE of the task (Table 7) and a linear probe for the protected
attribute on the frozen last hidden layer (Table 8)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import Dataset, TensorDataset

from decnn_cli import metrics
from decnn_cli.data import load_splits
from decnn_cli.data.splitting import make_loader
from decnn_cli.engine import progress_or_new
from decnn_cli.errors import DecnnError
from decnn_cli.experiments.common import (
    EvalOptions,
    Run,
    data_config,
    load_run,
    predict_split,
    resolve_runs,
    warn_constant_outputs,
)
from decnn_cli.models.bayesian import use_posterior_mean
from decnn_cli.results import write_tables

SECTIONS = [
    ("f1_group0", "Task F1, group 0 (Table 7)", 3),
    ("f1_group1", "Task F1, group 1 (Table 7)", 3),
    ("f1_gap", "Task F1 gap |group 1 - group 0| (lower = more even)", 3),
    ("ap_group0", "Task AP (%), group 0", 1),
    ("ap_group1", "Task AP (%), group 1", 1),
    ("ece_group0", "Task ECE (%), group 0", 2),
    ("ece_group1", "Task ECE (%), group 1", 2),
    (
        "probe_f1",
        "Linear probe F1 for the protected attribute on the last hidden layer (Table 8; lower = less used)",
        3,
    ),
    ("accuracy", "Task accuracy (%)", 2),
]


def task_f1(labels: np.ndarray, probs: np.ndarray) -> float:
    """F1 of the positive class for binary tasks, macro F1 over classes otherwise."""
    predictions = probs.argmax(-1)
    if probs.shape[1] == 2:
        return float(f1_score(labels, predictions, zero_division=0))
    return float(f1_score(labels, predictions, average="macro", labels=np.arange(probs.shape[1]), zero_division=0))


def task_ap(labels: np.ndarray, probs: np.ndarray) -> float:
    """Average precision (%) of the positive class (binary) or macro one-vs-rest (multiclass)."""
    if probs.shape[1] == 2:
        return 100.0 * float(average_precision_score(labels, probs[:, 1])) if labels.any() else float("nan")
    onehot = np.eye(probs.shape[1])[labels]
    return 100.0 * float(average_precision_score(onehot, probs, average="macro"))


def groups_of(dataset: Dataset) -> np.ndarray:
    """The protected-attribute group label of every example (the third item of each example)."""
    if isinstance(dataset, TensorDataset):
        if len(dataset.tensors) < 3:
            raise DecnnError("this dataset carries no group labels; pass --protected ATTRIBUTE")
        return dataset.tensors[2].numpy()
    return np.array([int(dataset[i][2]) for i in range(len(dataset))])


@torch.no_grad()
def last_hidden(run: Run, dataset: Dataset) -> np.ndarray:
    """Features h_L (N, width) of the run's frozen classifier (posterior mean for BayesNN, member 0 of an
    ensemble); convolutional maps are averaged over space."""
    run.model.eval()
    use_posterior_mean(run.model, True)
    try:
        features = []
        for batch in make_loader(dataset, run.cfg.eval.batch_size, shuffle=False):
            h = run.model(batch[0].to(run.device))[1]
            if not h:
                raise DecnnError(f"run {run.path.name} has no hidden layers to probe (arch {run.cfg.model.arch})")
            last = h[-1].float()
            features.append((last.mean(dim=(-2, -1)) if last.dim() == 4 else last).cpu().numpy())
    finally:
        use_posterior_mean(run.model, False)
    return np.concatenate(features)


def linear_probe_f1(
    train_x: np.ndarray, train_g: np.ndarray, test_x: np.ndarray, test_g: np.ndarray
) -> dict[str, float]:
    """Fit logistic regression (standardised features) to predict the group; F1 (positive group, or macro) on test."""
    if len(np.unique(train_g)) < 2:
        raise DecnnError("the probe's training split holds a single group; use more examples (drop --subset)")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_x, train_g)
    predicted = probe.predict(test_x)
    average = "binary" if len(np.unique(np.r_[train_g, test_g])) == 2 else "macro"
    return {
        "probe_f1": float(f1_score(test_g, predicted, average=average, zero_division=0)),
        "probe_accuracy": 100.0 * float((predicted == test_g).mean()),
    }


def probe_halves(n: int, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint index halves of ``n`` test examples (each at most ``limit``): fit, then score."""
    order = np.random.default_rng(seed).permutation(n)
    half = min(n // 2, limit)
    return order[:half], order[half : 2 * half]


@dataclass(frozen=True)
class FairnessOptions(EvalOptions):
    """``protected`` names the attribute (CelebA; the coloured datasets always carry their colour);
    ``probe_examples``: test examples in each half (fit / score) of the linear probe."""

    table: str = "fairness"
    protected: str | None = None
    probe_examples: int = 5000


def evaluate_fairness(run_paths: list[Path], options: FairnessOptions = FairnessOptions()) -> list[dict[str, Any]]:
    """Group metrics of the task and the protected-attribute probe for every run; rows into ``results/<table>``."""
    o = options
    protected, results_dir, table = o.protected, o.results_dir, o.table
    rows = []
    with progress_or_new(o.progress, o.show_progress) as progress:
        for path in resolve_runs(run_paths):
            run = load_run(path, o.device, o.precision)
            if run.spec.task != "multiclass":
                raise DecnnError(
                    f"run {path.name} is multi-label; fairness needs one task attribute (--set data.target=...)"
                )
            changes: dict[str, Any] = {}
            if run.cfg.data.name == "celeba":
                if protected is None:
                    raise DecnnError("name the protected CelebA attribute with --protected, e.g. --protected Bald")
                changes["protected"] = protected
            splits = load_splits(data_config(run, o.data_root, **changes))
            # Only the predictive distribution is needed: sample just for methods that predict with a sample mean.
            samples = run.cfg.eval.samples if run.method.predictive == "sample-mean" else 1
            pred = predict_split(run, splits.test, samples, progress, f"{path.name[:40]}")
            groups = groups_of(splits.test)
            row: dict[str, Any] = {
                **run.identity(),
                "protected": protected or "color",
                "accuracy": metrics.accuracy(pred.probs, pred.labels, "multiclass"),
                "constant_outputs": warn_constant_outputs(run, pred),
            }
            for g in (0, 1):
                members = groups == g
                labels, probs = pred.labels[members], pred.probs[members]
                row[f"n_group{g}"] = int(members.sum())
                row[f"f1_group{g}"] = task_f1(labels, probs) if members.any() else float("nan")
                row[f"ap_group{g}"] = task_ap(labels, probs) if members.any() else float("nan")
                row[f"ece_group{g}"] = metrics.ece(probs, labels, "multiclass") if members.any() else float("nan")
            row["f1_gap"] = abs(row["f1_group1"] - row["f1_group0"])
            # The probe is fitted on one half of the test split and scored on the other: in the coloured
            # datasets' training split the colour is correlated with the label, so a probe fitted there could
            # find it through the label alone; at test the two are independent.
            features = last_hidden(run, splits.test)
            fit, score = probe_halves(len(groups), o.probe_examples, run.cfg.data.split_seed)
            row |= linear_probe_f1(features[fit], groups[fit], features[score], groups[score])
            row["group_names"] = " / ".join(splits.spec.group_names)
            rows.append(row)
    write_tables(
        results_dir,
        table,
        rows,
        key=["run"],
        sections=SECTIONS,
        columns=["dataset"],
        preamble="Written by `decnn fairness`. Groups are the values of the protected attribute (group 1 has it). "
        "The probe is a logistic regression on the frozen last hidden layer, fitted on one half of the test "
        "split and scored on the other (in the coloured datasets the colour is independent of the label at test, "
        "so the probe cannot find it through the label).",
    )
    return rows
