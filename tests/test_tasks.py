"""The task heads' losses against hand computations: the labels' negative log-likelihood per example."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from decnn_cli.config import DataConfig
from decnn_cli.data import DATASETS, load_splits
from decnn_cli.data.splitting import labels_of
from decnn_cli.tasks import MAX_POS_WEIGHT, TaskHead, balanced_pos_weight


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


def test_positive_weights_multiply_the_positive_labels_terms():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    labels = torch.tensor([[1, 0], [0, 1]])
    head = TaskHead("multilabel", (3.0, 0.5))
    example_nll = [3.0 * softplus(-0.0) + softplus(2.0), softplus(-1.0) + 0.5 * softplus(-1.0)]
    assert head.loss(logits, labels).item() == pytest.approx(sum(example_nll) / 2, rel=1e-6)
    # Two classes: class 1's cross-entropy weighted, divided by the examples (2), not by the total weight (5).
    two = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    expected = (4.0 * math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-2.0))) / 2
    assert TaskHead("multiclass", (4.0,)).loss(two, torch.tensor([1, 0])).item() == pytest.approx(expected, rel=1e-6)
    # ... which is the loss of the same task as one sigmoid with logit z1 - z0.
    single = TaskHead("multilabel", (4.0,)).loss(two[:, 1:] - two[:, :1], torch.tensor([[1], [0]]))
    assert single.item() == pytest.approx(expected, rel=1e-6)
    assert TaskHead("multiclass", (1.0,)).loss(two, torch.tensor([1, 0])).item() == pytest.approx(
        TaskHead("multiclass").loss(two, torch.tensor([1, 0])).item()
    )


def test_balanced_weights_are_negatives_over_positives_clipped_and_one_for_a_single_value():
    labels = torch.zeros(202, 4)
    labels[:4, 0] = 1  # 198 / 4
    labels[:1, 1] = 1  # 201 / 1, clipped
    labels[:, 3] = 1  # no negative
    weights, one_valued = balanced_pos_weight(labels, "multilabel")
    assert weights == pytest.approx((49.5, MAX_POS_WEIGHT, 1.0, 1.0)) and one_valued == [2, 3]
    weights, one_valued = balanced_pos_weight(torch.tensor([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]), "multiclass")
    assert weights == pytest.approx((3.0,)) and one_valued == []


def test_labels_of_a_split_are_read_without_its_images(celeba_root):
    splits = load_splits(DataConfig(name="celeba", root=celeba_root, subset=5))
    labels = labels_of(splits.train)  # a Subset of CelebAFaces: its targets, indexed
    assert labels.shape == (5, 40) and torch.equal(labels, torch.stack([splits.train[i][1] for i in range(5)]))
    digits = load_splits(DataConfig(name="digits")).train
    assert torch.equal(labels_of(digits), digits.tensors[1])


def _tiny(*overrides: str):
    from decnn_cli.resolve import build_config

    return build_config(
        overrides=["method.name=standard", "train.epochs=1", "model.depth=2", "model.width=16", *overrides]
    )


def test_a_balanced_run_records_the_weights_counted_on_its_training_split(celeba_root, tmp_path):
    from decnn_cli.experiments.train import train

    cfg = _tiny("data.name=celeba", f"data.root={celeba_root}", "train.pos_weight=balanced", f"out_dir={tmp_path}")
    outcome = train(cfg, show_progress=False)
    weights = outcome.metrics["pos_weight"]
    assert len(weights) == 40 and weights["Wearing_Hat"] == pytest.approx(2.0)  # train: 6 hats in 18 faces
    unweighted = cfg.model_copy(update={"train": cfg.train.model_copy(update={"pos_weight": "none"})})
    plain = train(unweighted, show_progress=False)
    assert plain.metrics["pos_weight"] is None


def test_positive_weights_on_a_ten_class_task_are_one_clear_error(tmp_path):
    from decnn_cli.errors import DecnnError
    from decnn_cli.experiments.train import train

    with pytest.raises(DecnnError, match="only multi-label and two-class tasks.*10 classes"):
        train(_tiny("data.subset=40", "train.pos_weight=balanced", f"out_dir={tmp_path}"), show_progress=False)


def test_an_attribute_without_positives_in_train_keeps_weight_one_with_a_warning():
    from torch.utils.data import TensorDataset

    from decnn_cli.data.spec import DataSpec, Splits
    from decnn_cli.experiments.train import task_head

    spec = DataSpec("toy", (1, 2, 2), 3, "multilabel", ("Bald", "Smiling", "Young"), (0.5,), (0.5,))
    labels = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 1], [0, 0, 0]])
    train = TensorDataset(torch.zeros(4, 1, 2, 2), labels)
    head, notes = task_head(_tiny("train.pos_weight=balanced"), Splits(spec, train, train, train), 32)
    assert head.pos_weight == pytest.approx((1.0, 3.0, 1 / 3))
    assert len(notes) == 1 and notes[0].startswith("train.pos_weight=balanced: Bald has a single value")


def test_a_two_class_task_whose_rare_class_averages_under_one_a_batch_is_pointed_to_class_balanced_drawing():
    from torch.utils.data import TensorDataset

    from decnn_cli.data.spec import DataSpec, Splits
    from decnn_cli.experiments.train import task_head

    spec = DataSpec("toy", (1, 2, 2), 2, "multiclass", ("no (Bald)", "yes (Bald)"), (0.5,), (0.5,))

    def notes_for(positives: int, n: int = 640) -> list[str]:
        labels = (torch.arange(n) < positives).long()
        train = TensorDataset(torch.zeros(n, 1, 2, 2), labels)
        cfg = _tiny("train.pos_weight=balanced", "data.batch_size=32")
        return task_head(cfg, Splits(spec, train, train, train), cfg.data.batch_for(n))[1]

    (note,) = notes_for(10)  # 10 of 640: 0.5 a batch of 32
    assert "yes (Bald) is 10 of 640 training examples, 0.50 a batch of 32" in note
    assert "weight 63.0" in note and "train.group_balance=true" in note
    assert notes_for(20) == []  # 20 of 640: one a batch on average
