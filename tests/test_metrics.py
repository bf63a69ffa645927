"""Metrics on small hand-made arrays whose answers are computed by hand, and against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from decnn_cli import metrics
from decnn_cli.uncertainty import one_minus_max_prob, predictive_entropy, vote_entropy


def test_ece_matches_a_hand_computed_value():
    # 5 bins of width 0.2. Bin (0.8, 1]: confidences 0.95, 0.95, one right -> |0.5 - 0.95| * 2/4 = 0.225.
    # Bin (0.4, 0.6]: 0.55 right -> 0.45 * 1/4 = 0.1125. Bin (0.2, 0.4]: 0.25 wrong -> 0.25 * 1/4 = 0.0625.
    confidence = np.array([0.95, 0.95, 0.55, 0.25])
    correct = np.array([1, 0, 1, 0])
    assert metrics.expected_calibration_error(confidence, correct, bins=5) == pytest.approx(40.0)


def test_ece_is_zero_when_confidence_equals_accuracy():
    confidence = np.full(8, 0.75)
    correct = np.array([1, 1, 1, 0, 1, 1, 1, 0])
    assert metrics.expected_calibration_error(confidence, correct, bins=15) == pytest.approx(0.0)


def test_ece_from_probabilities_uses_the_top_class():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 0, 0])
    # confidences 0.9 (right), 0.8 (wrong), 0.6 (right), each alone in its bin of 15.
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.6)) / 3 * 100
    assert metrics.ece(probs, labels, "multiclass", bins=15) == pytest.approx(expected)


def test_accuracy_nll_brier_on_a_tiny_example():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    labels = np.array([0, 2])
    assert metrics.accuracy(probs, labels, "multiclass") == pytest.approx(50.0)
    assert metrics.nll(probs, labels, "multiclass") == pytest.approx(-(math.log(0.7) + math.log(0.1)) / 2)
    assert metrics.brier(probs, labels, "multiclass") == pytest.approx(
        ((0.09 + 0.04 + 0.01) + (0.01 + 0.64 + 0.81)) / 2
    )


def test_multilabel_accuracy_counts_attribute_decisions():
    probs = np.array([[0.9, 0.2], [0.4, 0.7]])
    labels = np.array([[1, 1], [0, 1]])
    assert metrics.accuracy(probs, labels, "multilabel") == pytest.approx(75.0)


def test_auroc_direction_outliers_scored_higher_gives_near_one():
    rng = np.random.default_rng(0)
    inliers = rng.normal(0.0, 1.0, 500)
    outliers = rng.normal(4.0, 1.0, 500)
    assert metrics.auroc(inliers, outliers) > 0.99
    assert metrics.auroc(outliers, inliers) < 0.01  # reversed roles -> reversed answer
    y = np.r_[np.zeros(500), np.ones(500)]
    assert metrics.auroc(inliers, outliers) == pytest.approx(roc_auc_score(y, np.r_[inliers, outliers]))


def test_fpr_at_95_tpr_and_aupr_on_separable_scores():
    neg, pos = np.array([0.1, 0.2, 0.3]), np.array([0.7, 0.8, 0.9])
    assert metrics.fpr_at_tpr(neg, pos) == 0.0
    assert metrics.aupr(neg, pos) == pytest.approx(1.0)
    assert metrics.fpr_at_tpr(pos, neg) == 1.0


def test_fpr_at_95_tpr_takes_the_first_threshold_on_a_straight_stretch_of_the_curve():
    # 20 outliers (positive), 20 inliers. 18 outliers score 1 (TPR 0.90 at FPR 0); then one outlier and one
    # inlier tie at 0.5 (0.95, 0.05), one of each at 0.4 (1.0, 0.10). The middle point lies on the straight line
    # between its neighbours, which roc_curve drops by default, answering 0.10.
    neg = np.r_[0.5, 0.4, np.zeros(18)]
    pos = np.r_[np.ones(18), 0.5, 0.4]
    assert metrics.fpr_at_tpr(neg, pos) == pytest.approx(0.05)
    assert metrics.fpr_at_tpr(neg, pos, tpr=0.9) == 0.0
    assert metrics.fpr_at_tpr(neg, pos, tpr=0.96) == pytest.approx(0.10)


def test_misclassification_auroc_with_wrong_predictions_positive():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.45, 0.55]])
    labels = np.array([0, 0, 0, 1])  # third prediction is wrong
    score = np.array([0.1, 0.2, 0.9, 0.3])  # the wrong one is the most uncertain
    assert metrics.misclassification_auroc(probs, labels, "multiclass", score) == pytest.approx(1.0)


def test_vote_entropy_extremes():
    agree = np.zeros((8, 3), dtype=int)  # 8 samples, 3 inputs, all vote class 0
    assert np.allclose(vote_entropy(agree, 4), 0.0)
    uniform = np.repeat(np.arange(4), 2)[:, None]  # 8 votes spread evenly over 4 classes
    assert vote_entropy(uniform, 4)[0] == pytest.approx(math.log(4))
    split = np.array([[0], [0], [1], [1]])
    assert vote_entropy(split, 10)[0] == pytest.approx(math.log(2))


def test_vote_entropy_is_bit_identical_under_any_relabelling_of_the_classes():
    rng = np.random.default_rng(0)
    k = 10
    votes = np.minimum(rng.integers(0, k, (32, 300)), rng.integers(0, k, (32, 300)))  # uneven vote patterns
    reference = vote_entropy(votes, k)
    for _ in range(5):
        relabelled = rng.permutation(k)[votes]
        assert np.array_equal(vote_entropy(relabelled, k), reference)  # ==, not approximately
    assert np.array_equal(vote_entropy(k - 1 - votes, k), reference)


def test_multilabel_vote_entropy_is_binary_per_attribute():
    votes = np.array([[[1, 0]], [[0, 0]]])  # (S=2, N=1, K=2): attribute 0 split, attribute 1 agreed
    assert vote_entropy(votes, 2)[0] == pytest.approx(math.log(2) / 2)
    assert vote_entropy(votes, 2, per_attribute=True)[0] == pytest.approx([math.log(2), 0.0])


def test_probability_scores_grow_with_uncertainty():
    sharp, flat = np.array([[0.98, 0.01, 0.01]]), np.array([[0.34, 0.33, 0.33]])
    assert predictive_entropy(flat, "multiclass")[0] > predictive_entropy(sharp, "multiclass")[0]
    assert one_minus_max_prob(flat, "multiclass")[0] > one_minus_max_prob(sharp, "multiclass")[0]
    assert predictive_entropy(flat, "multiclass")[0] == pytest.approx(math.log(3), abs=1e-3)


def test_constant_outputs_names_attributes_decided_one_way_for_every_example():
    probs = np.array(
        [
            [0.1, 0.9, 0.2, 0.6],
            [0.4, 0.8, 0.7, 0.51],
            [0.5, 0.7, 0.1, 0.9],  # 0.5 is not above 0.5: attribute 0 is 'no' throughout
        ]
    )
    assert metrics.constant_outputs(probs, "multilabel") == ([0], [1, 3])
    assert metrics.constant_outputs(probs[:, [2]], "multilabel") == ([], [])


def test_constant_outputs_of_a_classifier_that_predicts_one_class():
    constant = np.array([[0.2, 0.7, 0.1], [0.3, 0.4, 0.3], [0.1, 0.5, 0.4]])
    assert metrics.constant_outputs(constant, "multiclass") == ([], [1])
    varied = np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    assert metrics.constant_outputs(varied, "multiclass") == ([], [])
    assert metrics.constant_outputs(np.zeros((0, 3)), "multiclass") == ([], [])
