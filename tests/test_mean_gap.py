"""The mean gap on h_L: near zero when every class's groups share one mean, blind to scale, measured within
classes, and a term that moves f towards equal means on every method that passes its hidden activations on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from decnn_cli.adversary import MeanGap, attach_adversary, exact_mean_gap, standardised
from decnn_cli.cli import app
from decnn_cli.experiments.reproduce.planning import folder_name
from decnn_cli.methods import METHODS, LossContext, get_method
from decnn_cli.models import classifiers_of
from decnn_cli.resolve import build_config
from decnn_cli.tasks import TaskHead
from tests.test_adversary import SMALL, SPEC

ON = "method.protect_mean_match_weight=2"


def _running_gap(shift: float, scale: float = 1.0, batches: int = 60) -> float:
    """The gap after ``batches`` batches whose group 1 is moved by ``shift`` on the first unit."""
    torch.manual_seed(0)
    term, y = MeanGap(1.0), torch.arange(64) % 2
    for _ in range(batches):
        groups = (torch.rand(64) < 0.2).long()  # a rare group, as the colour within a class
        features = torch.randn(64, 8) + 3.0 * y.unsqueeze(1)  # the label moves the means
        features[:, 0] += shift * groups
        value = term([scale * features], y, groups)["mean_gap"]
    return float(value)


def test_the_running_gap_is_near_zero_for_shared_means_grows_with_the_shift_and_ignores_scale():
    same, small, large = _running_gap(0.0), _running_gap(1.0), _running_gap(3.0)
    assert same < 0.025  # what 20 batches of a rare group's noise leave
    assert same < small < large
    # The squared shift in units of the batch's standard deviation (about 1.8 with the label's spread), 0.3, on one
    # unit of eight.
    assert 0.025 < small < 0.075
    assert _running_gap(1.0, scale=10.0) == pytest.approx(small, rel=1e-4)


def test_units_far_from_zero_whose_scale_drifts_between_batches_show_no_gap_that_is_not_there():
    # As at initialisation: every unit sits ~200 standard deviations from zero, and each batch's spread differs a
    # little. Group means averaged across batches would mix those batches' scales (a gap of tens); gaps taken
    # within each batch do not.
    torch.manual_seed(0)
    term, y = MeanGap(1.0), torch.arange(32) % 2
    for _ in range(60):
        groups = (torch.rand(32) < 0.2).long()
        features = 1.0 + (0.005 * (1 + 0.2 * torch.rand(())) * torch.randn(32, 8))
        value = float(term([features], y, groups)["mean_gap"])
    assert value < 0.03  # across-batch means: 0.15
    shifted = MeanGap(1.0)
    for _ in range(60):
        groups = (torch.rand(32) < 0.2).long()
        features = 1.0 + (0.005 * (1 + 0.2 * torch.rand(())) * torch.randn(32, 8))
        features[:, 0] += 0.01 * groups  # two standard deviations on one unit of eight
        moved = float(shifted([features], y, groups)["mean_gap"])
    assert moved > 2 * value


def test_the_gap_is_measured_within_classes_so_a_label_correlated_attribute_costs_nothing_beyond_it():
    # Colour agrees with the class in every example: each class holds one group, there is nothing to match.
    y = torch.tensor([0, 0, 1, 1])
    assert MeanGap(1.0)([torch.tensor([[0.0], [0.2], [5.0], [5.2]])], y, y)["mean_gap"] == 0
    # Multi-label targets: each distinct label vector is a class; the label alone moves nothing.
    multi = torch.tensor([[1, 0]] * 4 + [[0, 1]] * 4)
    groups = torch.tensor([0, 1, 0, 1] * 2)
    by_label = torch.tensor([[1.0], [1.1], [1.1], [1.0], [4.0], [4.1], [4.1], [4.0]])
    assert MeanGap(1.0)([by_label], multi, groups)["mean_gap"] == pytest.approx(0.0, abs=1e-6)
    assert MeanGap(1.0)([by_label + 0.5 * groups.unsqueeze(1)], multi, groups)["mean_gap"] > 0.05


def test_the_terms_gradient_is_that_of_the_squared_gap():
    # One batch, no history: the running means are the batch's, so the term is the plain squared gap.
    torch.manual_seed(0)
    y, groups = torch.zeros(32, dtype=torch.long), torch.arange(32) % 2
    features = torch.randn(32, 4, requires_grad=True)
    MeanGap(1.0)([features], y, groups)["mean_gap"].backward()
    scaled = standardised(features).detach()
    gap = scaled[groups == 0].mean(0) - scaled[groups == 1].mean(0)
    plain = torch.zeros(32, 4, requires_grad=True)
    shifted = standardised(features).detach() + plain
    # The value counts both groups' distances to each other (averaged); the gradient halves it (d/dmu of the
    # product with the factor held), which only the weight absorbs: compare directions.
    (0.5 * (shifted[groups == 0].mean(0) - shifted[groups == 1].mean(0)).pow(2).sum()).backward()
    variance = features.detach().var(0, unbiased=False)
    direction = plain.grad / (variance + 1e-2 * variance.mean()).sqrt()
    assert torch.allclose(features.grad / features.grad.norm(), direction / direction.norm(), atol=1e-5)
    assert gap.pow(2).sum() > 0


def test_every_layer_adds_the_gaps_of_the_earlier_layers_that_the_last_alone_does_not_see():
    torch.manual_seed(0)
    y, groups = torch.zeros(64, dtype=torch.long), torch.arange(64) % 2
    first = torch.randn(64, 8)
    first[:, :4] += 2.0 * groups.unsqueeze(1)  # the attribute shows in h_1 ...
    last = torch.randn(64, 8)  # ... and not in h_L
    assert float(MeanGap(1.0)([first, last], y, groups)["mean_gap"]) < 0.1
    every = float(MeanGap(1.0, every_layer=True)([first, last], y, groups)["mean_gap"])
    assert every > 0.5  # h_1's gap, about 4 standard deviations squared on half its units, over two layers
    assert every == pytest.approx(float(MeanGap(1.0)([first], y, groups)["mean_gap"]) / 2, abs=0.1)
    # Only the every-layer term sends h_1 a gradient, and most of it to the units that carry the attribute.
    features, last = first.clone().requires_grad_(True), last.requires_grad_(True)
    MeanGap(1.0)([features, last], y, groups)["mean_gap"].backward()
    assert features.grad is None
    MeanGap(1.0, every_layer=True)([features, last], y, groups)["mean_gap"].backward()
    assert features.grad[:, :4].abs().sum() > 2 * features.grad[:, 4:].abs().sum()


@pytest.mark.parametrize("name", [n for n, s in METHODS.items() if s.accepts_adversary])
def test_every_accepting_method_adds_the_gap_and_a_step_against_it_narrows_it(name: str):
    torch.manual_seed(0)
    cfg = build_config(overrides=[f"method.name={name}", *SMALL, ON])
    method = get_method(name)
    model = method.network(cfg, SPEC)
    ctx = LossContext(method.settings_of(cfg), TaskHead("multiclass"), num_train=100)
    x, y = torch.rand(16, *SPEC.in_shape), torch.arange(16) % 2
    groups = (torch.arange(16) // 2) % 2
    x[groups == 1, 0] += 0.5  # the attribute shows in the input, as the colour does
    assert attach_adversary(ctx, method.adversary_of(cfg), model, SPEC, TensorDataset(x, y, groups), "cpu") is None
    ctx.groups = groups
    plain = method.loss(model, x, y, LossContext(ctx.settings, ctx.task, ctx.num_train))
    terms = method.loss(model, x, y, ctx)
    assert "mean_gap" in terms.parts and "mean_gap" not in plain.parts
    assert terms.parts["mean_gap"] > 0

    # A small step of f down the term's gradient narrows the groups' gap in h_L (same batch, same noise).
    def batch_gap() -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout masks / weight samples before and after the step
        hidden = classifiers_of(model)[0](x)[1]
        return hidden, (hidden[-1][groups == 0].mean(0) - hidden[-1][groups == 1].mean(0)).pow(2).sum()

    model.zero_grad()
    hidden, before = batch_gap()
    term = MeanGap(1.0)
    term(hidden, y, groups)["mean_gap"].backward()
    with torch.no_grad():
        for param in model.parameters():
            if param.grad is not None:
                param -= 1e-3 * param.grad
    assert batch_gap()[1] < before


def test_the_gap_keys_folders_only_once_it_is_on_and_trains_on_coloured_digits(tmp_path: Path, runner):
    def name(*overrides: str) -> str:
        return folder_name(build_config(overrides=["method.name=redecnn", *overrides]))

    assert name("method.protect_mean_match_weight=0") == name()
    assert "__mean-match-2__" in name(ON)
    assert name("method.protect_mean_match_layers=every") == name()  # read only once the gap is on
    assert name(ON, "method.protect_mean_match_layers=every") != name(ON)
    both = name(ON, "method.protect_adversary_weight=0.1")
    assert "__adversary-0.1__mean-match-2__" in both
    result = runner.invoke(
        app,
        [
            "train", "-q", "--method", "standard", "--dataset", "colored-digits", "--subset", "160", "--epochs", "1",
            "--out", str(tmp_path), *[arg for setting in (*SMALL, ON) for arg in ("--set", setting)],
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["history"][0]["parts"]["mean_gap"] > 0
    assert metrics["adversary_group_weights"] is None  # no adversary head: nothing of it is trained or saved


def test_the_exact_gap_of_a_split_is_the_share_weighted_squared_gap_and_needs_two_groups_in_a_class():
    torch.manual_seed(0)
    y, groups = torch.arange(40) % 2, (torch.arange(40) // 2) % 2
    features = torch.randn(40, 6) + 0.7 * groups.unsqueeze(1)
    scaled = standardised(features)
    by_hand = sum(
        0.5 * (scaled[(y == c) & (groups == 0)].mean(0) - scaled[(y == c) & (groups == 1)].mean(0)).pow(2).mean()
        for c in (0, 1)
    )
    assert exact_mean_gap(features, y, groups) == pytest.approx(float(by_hand), rel=1e-5)
    assert exact_mean_gap(features, y, groups) > exact_mean_gap(torch.randn(40, 6), y, groups)
    assert math.isnan(exact_mean_gap(features, y, y))  # each class holds one group: nothing to compare
