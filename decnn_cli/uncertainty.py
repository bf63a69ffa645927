"""N sampled predictions per input, and the uncertainty scores computed from them.

Every score says which way is up: **higher = more uncertain**. In OOD detection the outliers are the
positive class, and in misclassification detection the wrong predictions are, so a useful score has
ROC-AUC above 0.5.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from torch import nn
from torch.utils.data import DataLoader

from decnn_cli.data.spec import Task
from decnn_cli.engine import Resolved, autocast
from decnn_cli.methods import MethodSettings, MethodSpec
from decnn_cli.results import save_npz_atomic
from decnn_cli.tasks import TaskHead


@dataclass
class Predictions:
    """Per-example predictions of one method on one dataset split.

    labels (N,) class indices, or (N, K) 0/1 attributes; point_probs (N, K) from f's own forward pass;
    mean_probs (N, K) averaged over the S sampled classifiers; votes (S, N) predicted classes of each
    sampled classifier (multi-label: (S, N, K) 0/1). ``predictive`` names which of point/mean the method
    predicts with.
    """

    task: Task
    labels: np.ndarray
    point_probs: np.ndarray
    mean_probs: np.ndarray
    votes: np.ndarray
    predictive: str

    @property
    def probs(self) -> np.ndarray:
        """The method's predictive distribution (N, K)."""
        return self.point_probs if self.predictive == "point" else self.mean_probs

    @property
    def num_samples(self) -> int:
        return self.votes.shape[0]

    def save(self, path: Path) -> None:
        save_npz_atomic(
            path,
            task=self.task,
            labels=self.labels,
            point_probs=self.point_probs,
            mean_probs=self.mean_probs,
            votes=self.votes,
            predictive=self.predictive,
        )

    @classmethod
    def load(cls, path: Path) -> Predictions:
        with np.load(path) as data:
            return cls(
                task=str(data["task"]),
                labels=data["labels"],
                point_probs=data["point_probs"],
                mean_probs=data["mean_probs"],
                votes=data["votes"],
                predictive=str(data["predictive"]),
            )


@torch.no_grad()
def predict(
    model: nn.Module,
    method: MethodSpec,
    loader: DataLoader,
    settings: MethodSettings,
    samples: int,
    task: TaskHead,
    device: torch.device,
    progress: Progress | None = None,
    description: str = "predict",
    transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    precision: Resolved = "fp32",
) -> Predictions:
    """Run f and the method's sampler over ``loader`` in ``precision`` ('bf16': autocast); ``transform(x, y)``
    (e.g. an attack) maps inputs first, in full precision."""
    model.eval()
    point = method.point(model)
    labels, point_probs, mean_probs, votes = [], [], [], []
    task_id = progress.add_task(description, total=len(loader), status="") if progress is not None else None
    for batch in loader:
        x, y = batch[0].to(device), batch[1]
        if transform is not None:
            with torch.enable_grad():
                x = transform(x, y.to(device)).detach()
        with autocast(device, precision):
            point_logits, sampled_logits = point(x), method.sample(model, x, samples, settings)  # (B, K), (S, B, K)
        p_point = task.probs(point_logits.float())
        p_samples = task.probs(sampled_logits.float())
        labels.append(y.numpy())
        point_probs.append(p_point.cpu().numpy())
        mean_probs.append(p_samples.mean(0).cpu().numpy())
        votes.append(task.predict(p_samples).to(torch.int16).cpu().numpy())
        if progress is not None:
            progress.advance(task_id)
    if progress is not None:
        progress.remove_task(task_id)
    return Predictions(
        task=task.kind,
        labels=np.concatenate(labels),
        point_probs=np.concatenate(point_probs),
        mean_probs=np.concatenate(mean_probs),
        votes=np.concatenate(votes, axis=1),
        predictive=method.predictive,
    )


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=axis)


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    return _entropy(np.stack([p, 1.0 - p], axis=-1))


def vote_entropy(votes: np.ndarray, num_classes: int, per_attribute: bool = False) -> np.ndarray:
    """Eq. 6: entropy of the empirical distribution of the S sampled predictions, per example.

    votes (S, N) class indices -> (N,); 0 when all agree, log K when spread evenly over K classes.
    Multi-label votes (S, N, K) 0/1 -> binary vote entropy per attribute, averaged over attributes.
    (``per_attribute`` keeps the (N, K) values.) Higher = more uncertain. It depends only on the multiset of
    vote counts: permuting the class labels leaves it bit-identical.
    """
    if votes.ndim == 3:
        per = _binary_entropy(votes.mean(axis=0))  # (N, K)
        return per if per_attribute else per.mean(axis=-1)
    counts = np.stack([(votes == c).sum(axis=0) for c in range(num_classes)], axis=-1)  # (N, K)
    # Sorted, so equal vote patterns over different classes sum in the same order and tie exactly in a ROC.
    return _entropy(np.sort(counts, axis=-1) / votes.shape[0])


def predictive_entropy(probs: np.ndarray, task: Task) -> np.ndarray:
    """Entropy of the (mean) predicted distribution (N, K) -> (N,); higher = more uncertain."""
    return _entropy(probs) if task == "multiclass" else _binary_entropy(probs).mean(axis=-1)


def one_minus_max_prob(probs: np.ndarray, task: Task) -> np.ndarray:
    """1 - max_c p(c) (multi-label: 1 - confidence of each attribute's decision, averaged); higher = more uncertain."""
    if task == "multiclass":
        return 1.0 - probs.max(axis=-1)
    return (1.0 - np.maximum(probs, 1.0 - probs)).mean(axis=-1)


SCORES: dict[str, str] = {
    "vote_entropy": "entropy of the N sampled predictions' votes (Eq. 6)",
    "predictive_entropy": "entropy of the mean sampled probability",
    "one_minus_max_prob": "1 - max of the mean sampled probability",
}


def uncertainty_scores(pred: Predictions) -> dict[str, np.ndarray]:
    """Every score of ``SCORES`` for each example (N,); higher = more uncertain."""
    num_classes = pred.mean_probs.shape[-1]
    return {
        "vote_entropy": vote_entropy(pred.votes, num_classes),
        "predictive_entropy": predictive_entropy(pred.mean_probs, pred.task),
        "one_minus_max_prob": one_minus_max_prob(pred.mean_probs, pred.task),
    }


def decision_scores(pred: Predictions) -> dict[str, np.ndarray]:
    """Scores per decision for misclassification detection: (N,) multiclass; (N, K) per attribute multi-label."""
    if pred.task == "multiclass":
        return uncertainty_scores(pred)
    p = pred.mean_probs
    return {
        "vote_entropy": vote_entropy(pred.votes, p.shape[-1], per_attribute=True),
        "predictive_entropy": _binary_entropy(p),
        "one_minus_max_prob": 1.0 - np.maximum(p, 1.0 - p),
    }
