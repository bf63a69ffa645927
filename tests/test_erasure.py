import numpy as np
import pytest

from decnn_cli.erasure import LinearEraser
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
