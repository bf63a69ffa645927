"""The task heads' losses against hand computations: the labels' negative log-likelihood per example."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from decnn_cli.config import DataConfig
from decnn_cli.data import DATASETS, load_splits
from decnn_cli.tasks import TaskHead


def softplus(z: float) -> float:
    return math.log1p(math.exp(z))


def test_multilabel_loss_sums_the_attributes_binary_cross_entropies_and_averages_the_examples():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    labels = torch.tensor([[1, 0], [0, 1]])
    # -log sigmoid(z) = softplus(-z) for a positive, -log(1 - sigmoid(z)) = softplus(z) for a negative.
    example_nll = [softplus(-0.0) + softplus(2.0), softplus(-1.0) + softplus(-1.0)]
    loss = TaskHead("multilabel").loss(logits, labels)
    assert loss.item() == pytest.approx(sum(example_nll) / 2, rel=1e-6)
    # K times the mean over attributes that it replaces.
    assert loss.item() == pytest.approx(2 * F.binary_cross_entropy_with_logits(logits, labels.float()).item())


def test_multiclass_loss_is_the_mean_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    first = -math.log(math.exp(2.0) / (math.exp(2.0) + 1.0 + math.exp(-1.0)))
    assert TaskHead("multiclass").loss(logits, labels).item() == pytest.approx((first + math.log(3)) / 2, rel=1e-6)


@pytest.mark.parametrize(("target", "task"), [(None, "multilabel"), ("Bald", "multiclass")])
def test_datasets_say_without_loading_whether_a_run_is_multilabel(celeba_root, target, task):
    cfg = DataConfig(name="celeba", root=celeba_root, target=target)
    assert load_splits(cfg).spec.task == task
    assert DATASETS["celeba"].is_multilabel(cfg) == (task == "multilabel")
    for offline in ("digits", "colored-digits"):
        data = DataConfig(name=offline)
        assert load_splits(data).spec.task == "multiclass" and not DATASETS[offline].is_multilabel(data)
