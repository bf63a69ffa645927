"""What the outputs mean: K-way classification (softmax) or K binary attributes (one sigmoid each)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from decnn_cli.data.spec import Task

# The largest weight "balanced" gives the positives of an output: an attribute with 1 positive in 10,000 training
# images would otherwise have each positive count as 10,000 examples, and its gradient swamp every other attribute's.
MAX_POS_WEIGHT = 100.0


def balanced_pos_weight(labels: torch.Tensor, kind: Task) -> tuple[tuple[float, ...], list[int]]:
    """Weights of the positive labels: n_negative / n_positive in ``labels``, at most ``MAX_POS_WEIGHT``.

    ``labels``: (N, K) 0/1 attributes (multilabel: one weight per attribute) or (N,) class indices of a two-class
    task (multiclass: one weight, of class 1). An output whose labels hold one value only (no positive, or no
    negative) gets weight 1. Returns the weights and the indices of those one-valued outputs.
    """
    labels = labels.float()
    if kind == "multiclass":
        labels = labels.unsqueeze(1)  # (N, 1): class 1 is the positive label
    positive = labels.sum(0)  # (K,)
    negative = labels.shape[0] - positive
    one_valued = (positive == 0) | (negative == 0)
    weight = (negative / positive.clamp_min(1)).clamp(max=MAX_POS_WEIGHT)
    weight = torch.where(one_valued, torch.ones_like(weight), weight)
    return tuple(weight.tolist()), one_valued.nonzero().squeeze(1).tolist()


@dataclass(frozen=True)
class TaskHead:
    """Loss, probabilities and predictions for logits (..., K) of one task kind.

    ``pos_weight`` multiplies the loss of positive labels: one weight per attribute (multilabel), or one weight of
    class 1 of a two-class task (multiclass; class 0 keeps weight 1). None: every label weighs 1. It changes the
    training loss only; probabilities and predictions are read as they are.
    """

    kind: Task
    pos_weight: tuple[float, ...] | None = None
    _weights: dict[torch.device, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind == "multiclass" and self.pos_weight is not None and len(self.pos_weight) != 1:
            raise ValueError("a multiclass task takes one positive weight, of class 1 of a two-class task")

    def _weight(self, device: torch.device) -> torch.Tensor:
        """Per-attribute positive weights (K,), or the two class weights (1, w); made once per device, so that
        the training loop copies nothing to the device per step."""
        if device not in self._weights:
            values = (1.0, *self.pos_weight) if self.kind == "multiclass" else self.pos_weight
            self._weights[device] = torch.tensor(values, dtype=torch.float32, device=device)
        return self._weights[device]

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood -log p(y | f(x)) of each example's labels, averaged over the examples.

        Multiclass: the cross-entropy. Multi-label: the binary cross-entropies of the K attributes summed (the
        attributes are independent given f(x), so the log-likelihood of an example's labels is the sum of theirs;
        Eq. 1's log p(y | f(x))). A mean over the attributes instead would divide the task term by K against the
        other terms of a method's loss (reconstruction, KL), which nothing divides; the training loss of a
        multi-label run is therefore on the scale of K binary decisions.

        With ``pos_weight`` the term of each positive label is multiplied by its weight, and the sum is still
        divided by the number of examples (not by the total weight, as ``F.cross_entropy``'s weighted mean would),
        so that a two-class task and its one-sigmoid form have the same loss.
        """
        if self.kind == "multiclass":
            if self.pos_weight is None:
                return F.cross_entropy(logits, y)
            return F.cross_entropy(logits, y, weight=self._weight(logits.device), reduction="none").mean()
        pos_weight = None if self.pos_weight is None else self._weight(logits.device)
        nll = F.binary_cross_entropy_with_logits(logits, y.float(), pos_weight=pos_weight, reduction="none")
        return nll.sum(-1).mean()  # (..., K) -> the mean over examples of each one's sum over attributes

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(-1) if self.kind == "multiclass" else logits.sigmoid()

    def predict(self, probs: torch.Tensor) -> torch.Tensor:
        """Class index (...,) for multiclass; 0/1 per attribute (..., K) for multilabel."""
        return probs.argmax(-1) if self.kind == "multiclass" else (probs > 0.5).long()

    def correct(self, probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Float 0/1 per prediction: (B,) for multiclass, (B, K) for multilabel."""
        return (self.predict(probs) == y.long()).float()

    def hits(self, probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example accuracy (B,): 0/1, or the share of attributes right for multi-label tasks."""
        correct = self.correct(probs, y)
        return correct if self.kind == "multiclass" else correct.mean(-1)
