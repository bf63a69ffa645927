"""Metrics as pure functions on arrays. ROC-AUC, AP, F1, NLL and Brier come from scikit-learn.

Conventions: ``probs`` (N, K); ``labels`` (N,) class indices or (N, K) 0/1 attributes for multi-label tasks,
where each attribute decision counts as one binary prediction.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score, roc_curve

from decnn_cli.data.spec import Task


def _decisions(probs: np.ndarray, labels: np.ndarray, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) per decision: per example (multiclass) or per example x attribute (multi-label)."""
    if task == "multiclass":
        return probs.max(axis=-1), (probs.argmax(axis=-1) == labels).astype(float)
    confidence = np.maximum(probs, 1.0 - probs)
    return confidence.ravel(), ((probs > 0.5) == (labels > 0.5)).astype(float).ravel()


def accuracy(probs: np.ndarray, labels: np.ndarray, task: Task) -> float:
    """Share of correct decisions, in percent."""
    return 100.0 * float(_decisions(probs, labels, task)[1].mean())


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE (Naeini et al. 2015) in percent: sum over equal-width confidence bins of |acc - conf| * share.

    Bin b holds confidences in ((b-1)/bins, b/bins]; a confidence of exactly 0 falls in the first bin.
    """
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return 100.0 * total


def ece(probs: np.ndarray, labels: np.ndarray, task: Task, bins: int = 15) -> float:
    """ECE in percent with confidence = max predicted probability (the paper's Table 4a convention)."""
    confidence, correct = _decisions(probs, labels, task)
    return expected_calibration_error(confidence, correct, bins)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, task: Task, bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin mean confidence, accuracy and count, for reliability diagrams."""
    confidence, correct = _decisions(probs, labels, task)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    safe = np.maximum(counts, 1)
    return {
        "edges": np.linspace(0.0, 1.0, bins + 1),
        "confidence": np.bincount(index, weights=confidence, minlength=bins) / safe,
        "accuracy": np.bincount(index, weights=correct, minlength=bins) / safe,
        "count": counts,
    }


def nll(probs: np.ndarray, labels: np.ndarray, task: Task) -> float:
    """Mean negative log-likelihood of the labels (multi-label: averaged over attributes)."""
    if task == "multiclass":
        return float(log_loss(labels, probs, labels=np.arange(probs.shape[1])))
    return float(log_loss(labels.ravel(), probs.ravel(), labels=[0, 1]))


def brier(probs: np.ndarray, labels: np.ndarray, task: Task) -> float:
    """Brier score: mean squared distance to the one-hot label (multi-label: averaged over attributes)."""
    if task == "multiclass":
        return float(brier_score_loss(labels, probs, labels=np.arange(probs.shape[1])))
    return float(brier_score_loss(labels.ravel(), probs.ravel()))


def auroc(scores_negative: np.ndarray, scores_positive: np.ndarray) -> float:
    """ROC-AUC of telling positives from negatives by score, where positives should score HIGHER.

    NaN when either side is empty.
    """
    if len(scores_negative) == 0 or len(scores_positive) == 0:
        return float("nan")
    y = np.r_[np.zeros(len(scores_negative)), np.ones(len(scores_positive))]
    return float(roc_auc_score(y, np.r_[scores_negative, scores_positive]))


def aupr(scores_negative: np.ndarray, scores_positive: np.ndarray) -> float:
    """Average precision with the positives (higher scores) as the positive class."""
    if len(scores_negative) == 0 or len(scores_positive) == 0:
        return float("nan")
    y = np.r_[np.zeros(len(scores_negative)), np.ones(len(scores_positive))]
    return float(average_precision_score(y, np.r_[scores_negative, scores_positive]))


def fpr_at_tpr(scores_negative: np.ndarray, scores_positive: np.ndarray, tpr: float = 0.95) -> float:
    """False-positive rate at the first threshold that reaches ``tpr`` true-positive rate.

    Every threshold is kept (``drop_intermediate=False``): scikit-learn's default drops points that lie on a
    straight segment of the curve, and the first one reaching ``tpr`` can be among them.
    """
    if len(scores_negative) == 0 or len(scores_positive) == 0:
        return float("nan")
    y = np.r_[np.zeros(len(scores_negative)), np.ones(len(scores_positive))]
    fpr, tprs, _ = roc_curve(y, np.r_[scores_negative, scores_positive], drop_intermediate=False)
    return float(fpr[np.searchsorted(tprs, tpr, side="left")])


def misclassification_auroc(probs: np.ndarray, labels: np.ndarray, task: Task, score: np.ndarray) -> float:
    """ROC-AUC of telling wrong predictions (positive) from right ones by an uncertainty score (Table 1b).

    Multiclass: one decision per example, ``score`` (N,). Multi-label: one decision per example and
    attribute, ``score`` (N, K) (e.g. the binary vote entropy of each attribute).
    """
    if task == "multiclass":
        right = probs.argmax(axis=-1) == labels
    else:
        right = ((probs > 0.5) == (labels > 0.5)).ravel()
        score = score.ravel()
    return auroc(score[right], score[~right])


def constant_outputs(probs: np.ndarray, task: Task) -> tuple[list[int], list[int]]:
    """The outputs a model decides the same way for every one of these examples: (never, always).

    Multi-label: the attributes predicted 0 for every example (never) and 1 for every example (always).
    Multiclass: ``([], [c])`` when every example is predicted class c (a constant classifier), else ``([], [])``.
    Decisions are those of ``accuracy``: argmax, or probability above 0.5. No example: nothing is constant.
    """
    if len(probs) == 0:
        return [], []
    if task == "multiclass":
        predicted = probs.argmax(axis=-1)
        return [], [int(predicted[0])] if (predicted == predicted[0]).all() else []
    decided = probs > 0.5  # (N, K)
    never = np.flatnonzero(~decided.any(axis=0))
    always = np.flatnonzero(decided.all(axis=0))
    return never.tolist(), always.tolist()
