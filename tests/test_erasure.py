import numpy as np
import pytest

from decnn_cli.erasure import LinearEraser, cell_balanced_weights
from decnn_cli.experiments.fairness import linear_probe_f1


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ReLU-like features (n, 12) of units on very different scales, one of them dead, with a group (30% of the
    examples) shifted along a mix of units, and a label read off a unit the group does not move."""
    rng = np.random.default_rng(seed)
    groups = (rng.random(n) < 0.3).astype(np.int64)
    labels = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 12))
    x[:, :4] += 2.0 * groups[:, None]
    x[:, 6] += 3.0 * (2 * labels - 1)
    x *= np.array([1e-3, 1.0, 1e3, 1.0, 1.0, 1.0, 1.0, 5.0, 1.0, 1.0, 1.0, 1.0])
    x[:, 11] = 0.0  # a dead unit
    return x, groups, labels


def test_erased_features_leave_a_probe_no_better_than_a_constant_guess():
    x, groups, _ = planted(4000, 0)
    fit, score = slice(0, 2000), slice(2000, 4000)
    assert linear_probe_f1(x[fit], groups[fit], x[score], groups[score])["probe_accuracy"] > 95
    eraser = LinearEraser.fit(x[fit], groups[fit])
    erased = eraser(x)
    gap = erased[fit][groups[fit] == 1].mean(axis=0) - erased[fit][groups[fit] == 0].mean(axis=0)
    assert np.abs(gap / x[fit].std(axis=0).clip(min=1e-12)).max() < 1e-6  # equal means, every unit
    reading = linear_probe_f1(erased[fit], groups[fit], erased[score], groups[score])
    majority = 100 * (1 - groups[score].mean())
    assert reading["probe_accuracy"] <= majority + 1.0


def test_erasure_keeps_what_the_group_does_not_move_and_leaves_a_dead_unit_alone():
    x, groups, labels = planted(4000, 1)
    erased = LinearEraser.fit(x, groups)(x)
    assert np.all(erased[:, 11] == 0.0)
    np.testing.assert_allclose(erased[:, 6], x[:, 6], rtol=0, atol=0.1 * x[:, 6].std())
    assert ((erased[:, 6] > 0) == labels.astype(bool)).mean() > 0.95


def test_without_an_attribute_to_erase_the_eraser_is_the_identity():
    x, _, _ = planted(500, 2)
    eraser = LinearEraser.fit(x, np.zeros(len(x), dtype=np.int64))
    np.testing.assert_allclose(eraser(x), x, atol=1e-9 * np.abs(x).max())


@pytest.mark.parametrize("groups_count", [2, 3])
def test_every_group_mean_is_matched(groups_count: int):
    rng = np.random.default_rng(3)
    groups = rng.integers(0, groups_count, 3000)
    x = rng.normal(size=(3000, 8)) + np.eye(groups_count, 8)[groups] * 2.0
    erased = LinearEraser.fit(x, groups)(x)
    means = np.stack([erased[groups == g].mean(axis=0) for g in range(groups_count)])
    np.testing.assert_allclose(means, means[0:1].repeat(groups_count, axis=0), atol=1e-8)


def test_a_unit_on_a_tiny_scale_is_erased_too():
    # Beside a unit 10^8 times larger, a variance threshold on raw units would skip this one and leave the group
    # for a probe that standardises its inputs.
    rng = np.random.default_rng(4)
    groups = rng.integers(0, 2, 4000)
    x = rng.normal(size=(4000, 3))
    x[:, 0] = (x[:, 0] + 3.0 * groups) * 1e-4
    x[:, 1] *= 1e4
    fit, score = slice(0, 2000), slice(2000, 4000)
    assert linear_probe_f1(x[fit], groups[fit], x[score], groups[score])["probe_accuracy"] > 90
    erased = LinearEraser.fit(x[fit], groups[fit])(x)
    assert linear_probe_f1(erased[fit], groups[fit], erased[score], groups[score])["probe_accuracy"] < 60


def tied(n: int, agreement: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (n, 6): unit 0 reads the label, unit 1 the group, the rest noise; the group agrees with the label on
    ``agreement`` of the examples (0.5: independent)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    groups = np.where(rng.random(n) < agreement, labels, 1 - labels)
    x = rng.normal(size=(n, 6))
    x[:, 0] += 3.0 * labels
    x[:, 1] += 3.0 * groups
    return x, groups, labels


def test_cell_balanced_weights_make_the_group_independent_of_the_label():
    _, groups, labels = tied(5000, 0.95, 5)
    weights = cell_balanced_weights(labels, groups)
    totals = [weights[(labels == y) & (groups == g)].sum() for y in (0, 1) for g in (0, 1)]
    np.testing.assert_allclose(totals, totals[0])


def test_a_balanced_eraser_keeps_the_label_the_attribute_is_tied_to_in_training():
    # Training ties the group to the label (95%), as coloured MNIST ties colour to class; at test they are
    # independent. Fitted on the training split as it is, the eraser takes the label's direction with the group's;
    # with the cells balanced it takes the group alone.
    train_x, train_g, train_y = tied(6000, 0.95, 6)
    test_x, test_g, test_y = tied(4000, 0.5, 7)
    fit, score = slice(0, 2000), slice(2000, 4000)
    label_read, group_read = {}, {}
    for name, weights in [("split", None), ("cells", cell_balanced_weights(train_y, train_g))]:
        eraser = LinearEraser.fit(train_x, train_g, weights)
        train_erased, test_erased = eraser(train_x), eraser(test_x)
        label_read[name] = linear_probe_f1(train_erased, train_y, test_erased, test_y)["probe_accuracy"]
        group_read[name] = linear_probe_f1(test_erased[fit], test_g[fit], test_erased[score], test_g[score])
    assert label_read["split"] < 85 and label_read["cells"] > 90
    assert group_read["cells"]["probe_accuracy"] < 56
