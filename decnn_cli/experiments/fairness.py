"""``decnn fairness``: per-group F1, AP and ECE of the task (Table 7), a linear probe for the protected attribute on
the frozen last hidden layer (Table 8) and, for runs with a decoder, what a protected-attribute classifier m reads
off the decodings g(h_l) (the decoded-image diagnosis of Eq. 8); with ``erase``, the probe and a refitted task head
after the attribute is linearly erased from h_L by an eraser fitted on the training split (``decnn_cli.erasure``).

A group that the evaluated split lacks (CelebA's official test partition has no bald person) is named in a warning
and in the row's ``missing_groups``; everything that can be computed without it is reported, the rest is NaN."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import Dataset

from decnn_cli import metrics
from decnn_cli.adversary import exact_mean_gap
from decnn_cli.composition import load_frozen
from decnn_cli.data import load_splits
from decnn_cli.data.splitting import groups_of as split_groups
from decnn_cli.data.splitting import labels_of, make_loader
from decnn_cli.engine import progress_or_new
from decnn_cli.erasure import LinearEraser, cell_balanced_weights
from decnn_cli.errors import DecnnError
from decnn_cli.experiments.common import (
    EvalOptions,
    Run,
    data_config,
    load_run,
    predict_split,
    resolve_runs,
    warn,
    warn_constant_outputs,
)
from decnn_cli.methods import PretrainedTerms
from decnn_cli.models.bayesian import use_posterior_mean
from decnn_cli.results import write_tables

SECTIONS = [
    ("f1_group0", "Task F1, group 0 (Table 7)", 3),
    ("f1_group1", "Task F1, group 1 (Table 7)", 3),
    ("f1_gap", "Task F1 gap |group 1 - group 0| (lower = more even)", 3),
    ("accuracy_group0", "Task accuracy (%), group 0", 2),
    ("accuracy_group1", "Task accuracy (%), group 1", 2),
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
    (
        "prediction_probe_accuracy",
        "Accuracy (%) of the same probe fitted on the prediction alone (the task's log-probabilities and the true "
        "label) instead of h_L: how much of the attribute the model's use of it in predicting carries (none = "
        "label_probe_accuracy)",
        1,
    ),
    (
        "label_probe_accuracy",
        "Accuracy (%) of the same probe fitted on the true label alone: what the prediction probe reads when the "
        "prediction carries nothing about the attribute (the larger group's share where label and attribute are "
        "independent, more where the label gives the attribute away)",
        1,
    ),
    (
        "hidden_mean_gap",
        "Gap between the groups' means of the last hidden layer within each task class (standardised units, mean "
        "square per unit; 0 = no linear reader beats a constant one; method.protect_mean_match_weight lowers it)",
        4,
    ),
    (
        "erased_probe_f1",
        "Probe F1 after the protected attribute is linearly erased from h_L (LEACE fitted on the training split; "
        "--erase): what no linear trace seen in training accounts for",
        3,
    ),
    ("refit_accuracy", "Task accuracy (%) of a linear head refitted on the training split's h_L (--erase)", 2),
    ("erased_accuracy", "Task accuracy (%) of a linear head refitted on the erased h_L (--erase)", 2),
    ("erased_f1_gap", "Task F1 gap between the groups of the head on the erased h_L (--erase)", 3),
    (
        "protector_balanced_accuracy_decoded",
        "m's balanced accuracy on the protected attribute from the decodings g(h_l), mean over layers (0.5 = chance)",
        3,
    ),
    ("protector_balanced_accuracy_input", "m's balanced accuracy on the protected attribute from the inputs", 3),
]


def task_f1(labels: np.ndarray, probs: np.ndarray) -> float:
    """F1 of the positive class for binary tasks (NaN where no label is positive: recall is undefined there, and so
    is AP), macro F1 over classes otherwise."""
    predictions = probs.argmax(-1)
    if probs.shape[1] == 2:
        return float(f1_score(labels, predictions, zero_division=0)) if labels.any() else float("nan")
    return float(f1_score(labels, predictions, average="macro", labels=np.arange(probs.shape[1]), zero_division=0))


def task_ap(labels: np.ndarray, probs: np.ndarray) -> float:
    """Average precision (%) of the positive class (binary) or macro one-vs-rest (multiclass)."""
    if probs.shape[1] == 2:
        return 100.0 * float(average_precision_score(labels, probs[:, 1])) if labels.any() else float("nan")
    onehot = np.eye(probs.shape[1])[labels]
    return 100.0 * float(average_precision_score(onehot, probs, average="macro"))


def groups_of(dataset: Dataset, whose: str = "this dataset") -> np.ndarray:
    """The protected-attribute group label of every example (the third item of each example)."""
    groups = split_groups(dataset)
    if groups is None:
        raise DecnnError(
            f"{whose}, which has no protected groups: fairness reads celeba (with --protected ATTRIBUTE) or "
            "colored-digits / colored-mnist (the colour); evaluate a run trained on one of those"
        )
    return groups.numpy()


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
    """Fit logistic regression (standardised features) to predict the group; F1 (positive group, or macro) on test.

    NaN when the fitting half holds a single group (nothing to tell apart; the caller names the missing group)."""
    if len(np.unique(train_g)) < 2:
        return {"probe_f1": float("nan"), "probe_accuracy": float("nan")}
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_x, train_g)
    predicted = probe.predict(test_x)
    average = "binary" if len(np.unique(np.r_[train_g, test_g])) == 2 else "macro"
    return {
        "probe_f1": float(f1_score(test_g, predicted, average=average, zero_division=0)),
        "probe_accuracy": 100.0 * float((predicted == test_g).mean()),
    }


def prediction_probe_accuracy(
    probs: np.ndarray, labels: np.ndarray, groups: np.ndarray, fit: np.ndarray, score: np.ndarray
) -> float:
    """Accuracy (%) of the linear probe for the group fitted on the prediction alone: the task's log-probabilities
    beside the one-hot true label (NaN where the fitting half holds one group). Given the label, the prediction
    moves with the attribute only where the model uses the attribute to predict."""
    features = np.c_[np.log(np.clip(probs, 1e-12, 1.0)), np.eye(probs.shape[1])[labels]]
    return linear_probe_f1(features[fit], groups[fit], features[score], groups[score])["probe_accuracy"]


def label_probe_accuracy(
    labels: np.ndarray, groups: np.ndarray, fit: np.ndarray, score: np.ndarray, classes: int
) -> float:
    """``prediction_probe_accuracy`` of a prediction that says nothing (uniform): the baseline it is read against."""
    return prediction_probe_accuracy(np.full((len(labels), classes), 1.0 / classes), labels, groups, fit, score)


def erased_reading(
    run: Run,
    train: Dataset,
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    fit: np.ndarray,
    score: np.ndarray,
    balanced: bool = False,
) -> dict[str, float]:
    """The protected attribute erased from h_L after training: a LEACE eraser fitted on the training split's h_L
    and groups (``balanced``: every (label, group) cell weighted equally, so that the eraser removes what moves with
    the attribute within each class and leaves the label's own direction), applied to the evaluated split's
    ``features``; the probe refitted on the erased halves, and the
    task's linear head refitted on the training split's h_L, raw and erased (the cost of the erasure to the task,
    apart from the cost of refitting the head). If the attribute's trace in the evaluated split is the linear one it
    has in training, the erased probe reads no more than a constant guess."""
    train_features = last_hidden(run, train)
    train_labels = labels_of(train).numpy()
    train_groups = groups_of(train, f"run {run.path.name}'s training split")
    weights = cell_balanced_weights(train_labels, train_groups) if balanced else None
    eraser = LinearEraser.fit(train_features, train_groups, weights)
    erased = eraser(features)
    probe = linear_probe_f1(erased[fit], groups[fit], erased[score], groups[score])
    row = {
        "erase_fit": "cells balanced" if balanced else "training split",
        "erased_probe_f1": probe["probe_f1"],
        "erased_probe_accuracy": probe["probe_accuracy"],
    }
    for name, train_x, x in [("refit", train_features, features), ("erased", eraser(train_features), erased)]:
        head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(train_x, train_labels)
        probs = np.zeros((len(x), run.spec.num_outputs))
        probs[:, head.classes_] = head.predict_proba(x)
        row[f"{name}_accuracy"] = metrics.accuracy(probs, labels, "multiclass")
        if name == "erased":
            f1 = [task_f1(labels[groups == g], probs[groups == g]) for g in (0, 1)]
            row["erased_f1_gap"] = abs(f1[1] - f1[0])
    return row


def probe_halves(n: int, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint index halves of ``n`` test examples (each at most ``limit``): fit, then score."""
    order = np.random.default_rng(seed).permutation(n)
    half = min(n // 2, limit)
    return order[:half], order[half : 2 * half]


def balanced_accuracy(groups: np.ndarray, predicted: np.ndarray) -> float:
    """Mean over the groups present of the share of each group predicted as itself (0.5 = chance for two groups,
    whatever their sizes)."""
    return float(np.mean([(predicted[groups == g] == g).mean() for g in np.unique(groups)]))


@torch.no_grad()
def decoded_reading(run: Run, dataset: Dataset, protector: torch.nn.Module, groups: np.ndarray) -> dict[str, float]:
    """What the protected-attribute classifier m reads from the inputs and from every layer's decoding g(h_l):
    balanced accuracy (0.5 = chance) per layer and their mean. Eq. 8 asks m to read nothing from g(h_l); the probe
    asks whether h_L still holds the attribute."""
    run.model.eval()
    inputs, decoded = [], []
    for batch in make_loader(dataset, 128, shuffle=False):
        x = batch[0].to(run.device)
        hidden = run.model(x)[1]
        images = run.model.decoder.decode_all(hidden)  # (L, B, C, H, W)
        inputs.append(protector(x).argmax(-1).cpu())
        decoded.append(protector(images.flatten(0, 1)).argmax(-1).view(len(hidden), -1).cpu())  # (L, B)
    on_inputs, per_layer = torch.cat(inputs).numpy(), torch.cat(decoded, dim=1).numpy()
    layers = [balanced_accuracy(groups, predicted) for predicted in per_layer]
    row = {
        "protector_balanced_accuracy_input": balanced_accuracy(groups, on_inputs),
        "protector_balanced_accuracy_decoded": float(np.mean(layers)),
    }
    return row | {f"protector_balanced_accuracy_l{i + 1}": value for i, value in enumerate(layers)}


@dataclass(frozen=True)
class FairnessOptions(EvalOptions):
    """``protected`` names the attribute (CelebA; the coloured datasets always carry their colour); ``split``: the
    split evaluated ("test", or "val"); ``probe_examples``: examples of that split in each half (fit / score) of the
    linear probe; ``protector``: checkpoint of a protected-attribute classifier m for the decoded-image diagnosis of
    runs with a decoder (default: the m a run was trained against by Eq. 8, if any); ``erase``: the linear erasure
    reading, its eraser fitted on the training split as it is or, with ``erase_balanced``, with every (label, group)
    cell weighted equally."""

    table: str = "fairness"
    protected: str | None = None
    split: Literal["test", "val"] = "test"
    probe_examples: int = 5000
    protector: Path | None = None
    erase: bool = False
    erase_balanced: bool = False


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
            if run.cfg.data.name != "celeba" and protected not in (None, "color"):
                raise DecnnError(
                    f"run {path.name} is on {run.cfg.data.name}, which has no attribute {protected!r}: --protected "
                    "names a CelebA attribute (the colored datasets' protected attribute is their colour); drop it"
                )
            if run.cfg.data.name == "celeba":
                if protected is None:
                    raise DecnnError("name the protected CelebA attribute with --protected, e.g. --protected Bald")
                changes["protected"] = protected
                if run.cfg.data.split == "identity":  # the groups change, the run's split does not
                    changes["stratify"] = run.cfg.data.stratified_on
            splits = load_splits(data_config(run, o.data_root, **changes))
            dataset = splits.test if o.split == "test" else splits.val
            groups = groups_of(dataset, f"run {path.name} is on {run.cfg.data.name}")
            # Only the predictive distribution is needed: sample just for methods that predict with a sample mean.
            samples = run.cfg.eval.samples if run.method.predictive == "sample-mean" else 1
            pred = predict_split(run, dataset, samples, progress, f"{path.name[:40]}")
            names = splits.spec.group_names
            positive = splits.spec.output_names[-1]
            row: dict[str, Any] = {
                **run.identity(),
                "protected": protected or "color",
                "split": o.split,
                "accuracy": metrics.accuracy(pred.probs, pred.labels, "multiclass"),
                "constant_outputs": warn_constant_outputs(run, pred, o.split),
            }
            missing = []
            for g in (0, 1):
                members = groups == g
                labels, probs = pred.labels[members], pred.probs[members]
                row[f"n_group{g}"] = int(members.sum())
                if not members.any():
                    missing.append(names[g])
                    for metric in ("f1", "ap", "ece", "accuracy"):
                        row[f"{metric}_group{g}"] = float("nan")
                    continue
                if probs.shape[1] == 2 and not labels.any():
                    warn(
                        f"{path.name}: group {names[g]!r} has no {positive!r} example in the {o.split} split; its "
                        "task F1 and AP are undefined (NaN)"
                    )
                row[f"f1_group{g}"] = task_f1(labels, probs)
                row[f"ap_group{g}"] = task_ap(labels, probs)
                row[f"ece_group{g}"] = metrics.ece(probs, labels, "multiclass")
                row[f"accuracy_group{g}"] = metrics.accuracy(probs, labels, "multiclass")
            row["f1_gap"] = abs(row["f1_group1"] - row["f1_group0"])
            row["missing_groups"] = " / ".join(missing)
            if missing:
                warn(
                    f"{path.name}: the {o.split} split holds no example of group {' / '.join(map(repr, missing))} "
                    f"of {protected or 'color'}; only the other group's metrics are reported, and no probe can be "
                    "fitted (CelebA: --set data.split=identity splits by person, stratified on the attribute)"
                )
            # The probe is fitted on one half of the evaluated split and scored on the other: in the coloured
            # datasets' training split the colour is correlated with the label, so a probe fitted there could
            # find it through the label alone; at test the two are independent.
            features = last_hidden(run, dataset)
            fit, score = probe_halves(len(groups), o.probe_examples, run.cfg.data.split_seed)
            row |= linear_probe_f1(features[fit], groups[fit], features[score], groups[score])
            row["prediction_probe_accuracy"] = prediction_probe_accuracy(pred.probs, pred.labels, groups, fit, score)
            row["label_probe_accuracy"] = label_probe_accuracy(pred.labels, groups, fit, score, pred.probs.shape[1])
            row["hidden_mean_gap"] = exact_mean_gap(
                torch.as_tensor(features), torch.as_tensor(pred.labels), torch.as_tensor(groups)
            )
            if (o.erase or o.erase_balanced) and not missing:
                row |= erased_reading(run, splits.train, features, pred.labels, groups, fit, score, o.erase_balanced)
            if not missing and np.isnan(row["probe_f1"]):
                warn(f"{path.name}: the probe's fitting half holds a single group; its F1 is NaN (use more examples)")
            protector = o.protector or PretrainedTerms.of(run.cfg.method).protect_with
            if run.method.uses_decoder and protector is not None:
                m = load_frozen(Path(protector), run.spec, run.device, "protected-attribute model", same_classes=False)
                row |= decoded_reading(run, dataset, m, groups)
            row["group_names"] = " / ".join(names)
            rows.append(row)
    write_tables(
        results_dir,
        table,
        rows,
        key=["run"],
        sections=SECTIONS,
        columns=["dataset"],
        preamble="Written by `decnn fairness`. Groups are the values of the protected attribute (group 1 has it). "
        "The probe is a logistic regression on the frozen last hidden layer, fitted on one half of the evaluated "
        "split (test unless --split val) and scored on the other (in the coloured datasets the colour is "
        "independent of the label at test, so the probe cannot find it through the label). A group the split "
        "lacks is named in `missing_groups` and its metrics are NaN.",
    )
    return rows
