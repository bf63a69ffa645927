"""What the outputs mean: K-way classification (softmax) or K binary attributes (one sigmoid each)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from decnn_cli.data.spec import Task


@dataclass(frozen=True)
class TaskHead:
    """Loss, probabilities and predictions for logits (..., K) of one task kind."""

    kind: Task

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood -log p(y | f(x)) of each example's labels, averaged over the examples.

        Multiclass: the cross-entropy. Multi-label: the binary cross-entropies of the K attributes summed (the
        attributes are independent given f(x), so the log-likelihood of an example's labels is the sum of theirs;
        Eq. 1's log p(y | f(x))). A mean over the attributes instead would divide the task term by K against the
        other terms of a method's loss (reconstruction, KL), which nothing divides; the training loss of a
        multi-label run is therefore on the scale of K binary decisions.
        """
        if self.kind == "multiclass":
            return F.cross_entropy(logits, y)
        nll = F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")  # (..., K)
        return nll.sum(-1).mean()

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
