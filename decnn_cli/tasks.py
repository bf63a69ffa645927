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
        """Mean negative log-likelihood: cross-entropy, or binary cross-entropy averaged over attributes."""
        if self.kind == "multiclass":
            return F.cross_entropy(logits, y)
        return F.binary_cross_entropy_with_logits(logits, y.float())

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
