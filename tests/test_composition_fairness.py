"""Eq. 7 / Eq. 8 terms, frozen pretrained models, coloured digits and the fairness evaluation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from decnn_cli import composition, engine
from decnn_cli.cli import app
from decnn_cli.config import DataConfig
from decnn_cli.data import load_splits
from decnn_cli.data.splitting import make_loader
from decnn_cli.errors import DecnnError
from decnn_cli.experiments.fairness import (
    FairnessOptions,
    evaluate_fairness,
    label_probe_accuracy,
    linear_probe_f1,
    prediction_probe_accuracy,
    task_f1,
)
from decnn_cli.experiments.train import train
from decnn_cli.methods import LossContext, get_method
from decnn_cli.resolve import build_config
from decnn_cli.tasks import TaskHead
from tests.conftest import write_celeba

TINY = [
    "train.epochs=1",
    "model.depth=3",
    "model.width=32",
    "model.decoder_width=64",
    "method.recursion_depth=2",
    "eval.samples=4",
    "data.subset=120",
]


def test_agreement_term_is_zero_exactly_when_f_agrees_with_m():
    logits = torch.randn(5, 4)
    assert composition.agreement_term(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert composition.agreement_term(logits, torch.randn(5, 4)).item() > 0


def test_uniformity_term_is_zero_exactly_when_m_is_uniform():
    assert composition.uniformity_term(torch.zeros(3, 2)).item() == pytest.approx(0.0, abs=1e-7)
    confident = torch.tensor([[5.0, -5.0]])
    assert composition.uniformity_term(confident).item() > 1.0
    # KL(uniform || p) for p = softmax([5, -5]): mean of -log p minus log 2
    p = torch.softmax(confident, -1)[0]
    assert composition.uniformity_term(confident).item() == pytest.approx(
        (-(p.log()).mean() - math.log(2)).item(), rel=1e-5
    )


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict[str, Path]:
    """Tiny pretrained models on the bundled digits: a linear m for the task, an MLP for the colour."""
    out = tmp_path_factory.mktemp("pretrained")
    linear = train(
        build_config(overrides=["method.name=standard", "model.arch=linear", f"out_dir={out}", *TINY]),
        show_progress=False,
    ).run_dir
    colour = train(
        build_config(
            overrides=["method.name=standard", "data.name=colored-digits", "data.target=color", f"out_dir={out}", *TINY]
        ),
        show_progress=False,
    ).run_dir
    return {"linear": linear / "model.pt", "colour": colour / "model.pt", "out": out}


def test_pretrained_model_stays_frozen_while_redecnn_trains(pretrained, monkeypatch):
    captured = {}
    original = composition.load_frozen

    def spy(*args, **kwargs):
        captured["m"] = original(*args, **kwargs)
        return captured["m"]

    monkeypatch.setattr(composition, "load_frozen", spy)
    cfg = build_config(overrides=["method.name=redecnn", f"method.compose_with={pretrained['linear']}", *TINY])
    splits = load_splits(cfg.data)
    method = get_method("redecnn")
    model = method.network(cfg, splits.spec)
    ctx = LossContext(method.settings_of(cfg), TaskHead("multiclass"), len(splits.train))
    composition.attach_pretrained_terms(ctx, method.terms_of(cfg), splits.spec, torch.device("cpu"))
    before = {k: v.clone() for k, v in captured["m"].state_dict().items()}
    history = engine.fit(
        model,
        method,
        ctx,
        make_loader(splits.train, 32, True),
        make_loader(splits.val, 64, False),
        cfg.train,
        torch.device("cpu"),
    )
    assert "compose" in history[0].parts and history[0].parts["compose"] > 0
    after = captured["m"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in captured["m"].parameters())
    assert not captured["m"].training


@pytest.mark.parametrize("target", ["reconstruction", "direct"])
def test_composed_runs_train_from_the_cli(runner, pretrained, tmp_path: Path, target: str):
    result = runner.invoke(
        app,
        [
            "train",
            "-q",
            "--method",
            "redecnn",
            "--compose-with",
            str(pretrained["linear"]),
            "--compose-target",
            target,
            "--out",
            str(tmp_path),
            "--subset",
            "120",
            "--epochs",
            "1",
            "--set",
            "model.depth=3",
            "--set",
            "model.width=32",
            "--set",
            "method.recursion_depth=2",
        ],
    )
    assert result.exit_code == 0, result.output


def test_protected_model_with_wrong_input_shape_is_a_clear_error(pretrained, tmp_path: Path):
    # The colour classifier takes 3x28x28 inputs; plain digits are 1x28x28.
    cfg = build_config(
        overrides=["method.name=redecnn", f"method.protect_with={pretrained['colour']}", f"out_dir={tmp_path}", *TINY]
    )
    with pytest.raises(DecnnError, match=r"takes inputs of shape \(3, 28, 28\)"):
        train(cfg, show_progress=False)
    assert not list(tmp_path.glob("*"))


def test_composition_with_another_class_count_is_a_clear_error(pretrained, tmp_path: Path):
    cfg = build_config(
        overrides=[
            "method.name=redecnn",
            "data.name=colored-digits",
            "data.target=digit",
            f"method.compose_with={pretrained['colour']}",
            f"out_dir={tmp_path}",
            *TINY,
        ]
    )
    with pytest.raises(DecnnError, match="predicts 2 classes but this task has 10"):
        train(cfg, show_progress=False)


def test_composition_needs_a_decodable_method(pretrained, tmp_path: Path):
    with pytest.raises(DecnnError, match="use them with decnn or redecnn"):
        cfg = build_config(
            overrides=[
                "method.name=standard",
                f"method.compose_with={pretrained['linear']}",
                f"out_dir={tmp_path}",
                *TINY,
            ]
        )
        train(cfg, show_progress=False)


def test_colored_digits_correlate_in_training_and_balance_at_test():
    splits = load_splits(DataConfig(name="colored-digits", color_correlation=0.9))
    x, y, colour = splits.train.tensors
    assert x.shape[1:] == (3, 28, 28) and float(x.max()) <= 1.0
    assert 0.85 < float((colour == y).float().mean()) < 0.95
    _, y_test, colour_test = splits.test.tensors
    assert abs(float((colour_test == y_test).float().mean()) - 0.5) < 0.1
    # Each image is painted in its group's colour: red images have no more green than red.
    red = x[colour == 0]
    assert float(red[:, 0].sum()) > float(red[:, 1].sum())
    colours = load_splits(DataConfig(name="colored-digits", target="color"))
    assert torch.equal(colours.train.tensors[1], colours.train.tensors[2])
    with pytest.raises(DecnnError, match="choose from"):
        load_splits(DataConfig(name="colored-digits", target="shape"))


def test_linear_probe_recovers_a_planted_attribute_and_not_an_absent_one():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 2, 600)
    planted = rng.normal(size=(600, 16)) + 3.0 * groups[:, None] * (np.arange(16) == 3)
    scores = linear_probe_f1(planted[:400], groups[:400], planted[400:], groups[400:])
    assert scores["probe_f1"] > 0.9
    absent = rng.normal(size=(600, 16))
    assert linear_probe_f1(absent[:400], groups[:400], absent[400:], groups[400:])["probe_f1"] < 0.7


def test_the_prediction_probe_reads_an_attribute_only_where_it_moves_the_prediction():
    rng = np.random.default_rng(0)
    labels, groups = rng.integers(0, 2, 2000), rng.integers(0, 2, 2000)  # independent, as at coloured test
    fit, score = np.arange(1000), np.arange(1000, 2000)

    def probs(logit: np.ndarray) -> np.ndarray:
        p1 = 1 / (1 + np.exp(-logit))
        return np.c_[1 - p1, p1]

    shape = 3.0 * (2 * labels - 1) + rng.normal(size=2000)
    used = prediction_probe_accuracy(probs(shape + 2.0 * (2 * groups - 1)), labels, groups, fit, score)
    unused = prediction_probe_accuracy(probs(shape), labels, groups, fit, score)
    assert used > 80 and 40 < unused < 60
    one_group = np.where(np.arange(2000) < 1000, 0, groups)  # the fitting half holds one group: nothing to fit
    assert np.isnan(prediction_probe_accuracy(probs(shape), labels, one_group, fit, score))


def test_the_label_baseline_is_what_a_prediction_without_the_attribute_reads_when_the_label_gives_it_away():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 2000)
    groups = np.where(labels == 1, 1, rng.random(2000) < 0.2).astype(int)  # every positive in group 1, as Bearded/Male
    fit, score = np.arange(1000), np.arange(1000, 2000)
    baseline = label_probe_accuracy(labels, groups, fit, score, 2)
    expected = 100 * np.mean(groups[score] == labels[score])  # the best reading of the label: group = label
    assert baseline == pytest.approx(expected) and baseline > 85
    confident = np.c_[0.9 - 0.8 * labels, 0.1 + 0.8 * labels]  # follows the label and nothing else
    assert prediction_probe_accuracy(confident, labels, groups, fit, score) == pytest.approx(baseline)


def test_fairness_command_reports_groups_and_probe(runner, tmp_path: Path):
    run = train(
        build_config(
            overrides=["method.name=redecnn", "data.name=colored-digits", f"out_dir={tmp_path / 'runs'}", *TINY]
        ),
        show_progress=False,
    ).run_dir
    result = runner.invoke(app, ["fairness", str(run), "--results", str(tmp_path / "res"), "-q"])
    assert result.exit_code == 0, result.output
    row = pd.read_csv(tmp_path / "res" / "fairness.csv").iloc[0]
    assert row["n_group0"] + row["n_group1"] == 120
    assert 0 <= row["probe_f1"] <= 1 and row["f1_gap"] == pytest.approx(abs(row["f1_group1"] - row["f1_group0"]))
    assert 0 <= row["prediction_probe_accuracy"] <= 100 and 0 <= row["label_probe_accuracy"] <= 100
    assert "Table 8" in (tmp_path / "res" / "fairness.md").read_text()
    assert "erased_probe_f1" not in row

    erase = ["fairness", str(run), "--erase", "--results", str(tmp_path / "res"), "--table", "erased", "-q"]
    result = runner.invoke(app, erase)
    assert result.exit_code == 0, result.output
    erased = pd.read_csv(tmp_path / "res" / "erased.csv").iloc[0]
    assert erased["probe_f1"] == pytest.approx(row["probe_f1"])  # the raw probe is unchanged by --erase
    assert 0 <= erased["erased_probe_f1"] <= 1 and 0 <= erased["erased_f1_gap"] <= 1
    assert 0 <= erased["refit_accuracy"] <= 100 and 0 <= erased["erased_accuracy"] <= 100
    assert erased["erase_fit"] == "training split"

    balanced = ["fairness", str(run), "--erase-balanced", "--results", str(tmp_path / "res"), "--table", "cells", "-q"]
    result = runner.invoke(app, balanced)
    assert result.exit_code == 0, result.output
    cells = pd.read_csv(tmp_path / "res" / "cells.csv").iloc[0]
    assert cells["erase_fit"] == "cells balanced" and 0 <= cells["erased_probe_f1"] <= 1
    assert cells["refit_accuracy"] == pytest.approx(erased["refit_accuracy"])  # the raw head does not change


@pytest.mark.parametrize("method_name", ["decnn", "redecnn"])
@pytest.mark.parametrize("trains_decoder", [True, False])
def test_eq8_term_reaches_the_decoder_only_when_asked(pretrained, method_name: str, trains_decoder: bool):
    cfg = build_config(
        overrides=[
            f"method.name={method_name}",
            "data.name=colored-digits",
            f"method.protect_with={pretrained['colour']}",
            f"method.protect_trains_decoder={str(trains_decoder).lower()}",
            *TINY,
            "method.recursion_depth=1",  # deeper, the term also reaches g through the path's earlier decodes
        ]
    )
    splits = load_splits(cfg.data)
    method = get_method(method_name)
    model = method.network(cfg, splits.spec)
    ctx = LossContext(method.settings_of(cfg), TaskHead("multiclass"), len(splits.train))
    composition.attach_pretrained_terms(ctx, method.terms_of(cfg), splits.spec, torch.device("cpu"))
    terms = ctx.decoded_terms + ctx.fixed_decoder_terms
    assert len(terms) == 1
    recorded: list[torch.Tensor] = []

    def recording(x, x_hat, logits_hat):
        out = terms[0](x, x_hat, logits_hat)
        recorded.append(out["protect"])
        return out

    (ctx.decoded_terms if trains_decoder else ctx.fixed_decoder_terms)[0] = recording
    x, y, _ = next(iter(make_loader(splits.train, 16, False)))
    method.loss(model, x, y, ctx)
    eq8 = sum(recorded)

    def gradient_size(module: torch.nn.Module) -> float:
        grads = torch.autograd.grad(eq8, list(module.parameters()), allow_unused=True, retain_graph=True)
        return sum(g.abs().sum().item() for g in grads if g is not None)

    size = {"decoder": gradient_size(model.decoder), "classifier": gradient_size(model.classifier)}
    assert size["classifier"] > 0  # the Eq. 8 gradient always reaches f, through the decoded activation
    assert (size["decoder"] > 0) is trains_decoder
    assert all(p.requires_grad for p in model.decoder.parameters())  # held only for the term, then released


def test_task_f1_is_undefined_for_a_group_without_positives():
    probs = np.array([[0.8, 0.2], [0.3, 0.7]])
    assert np.isnan(task_f1(np.array([0, 0]), probs))
    assert task_f1(np.array([0, 1]), probs) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def celeba_without_bald_test(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny Bearded run on CelebA files whose official test partition holds no bald person (people 8-9)."""
    root = write_celeba(tmp_path_factory.mktemp("data"), bald_people=(0, 2, 6))
    cfg = build_config(
        overrides=[
            "method.name=redecnn",
            "data.name=celeba",
            f"data.root={root}",
            "data.target=Bearded",
            "data.protected=Bald",
            f"out_dir={tmp_path_factory.mktemp('runs')}",
            *TINY,
        ]
    )
    return root, train(cfg, show_progress=False).run_dir


def test_fairness_reports_the_group_a_split_holds_and_names_the_missing_one(celeba_without_bald_test, tmp_path, runner):
    root, run = celeba_without_bald_test
    result = runner.invoke(
        app, ["fairness", str(run), "--protected", "Bald", "--data-root", str(root), "--results", str(tmp_path), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "no example of group 'Bald'" in result.output
    row = pd.read_csv(tmp_path / "fairness.csv").iloc[0]
    assert row["missing_groups"] == "Bald" and row["split"] == "test"
    assert (row["n_group0"], row["n_group1"]) == (6, 0)
    assert np.isnan(row["f1_group1"]) and np.isnan(row["ece_group1"]) and np.isnan(row["f1_gap"])
    assert 0.0 <= row["ece_group0"] <= 100.0 and 0.0 <= row["accuracy_group0"] <= 100.0
    assert np.isnan(row["probe_f1"])  # a probe needs both groups
    # The validation partition holds one bald person (three images): the user can read it instead.
    options = ["--protected", "Bald", "--split", "val", "--data-root", str(root), "--results", str(tmp_path / "val")]
    result = runner.invoke(app, ["fairness", str(run), *options, "-q"])
    assert result.exit_code == 0, result.output
    row = pd.read_csv(tmp_path / "val" / "fairness.csv").iloc[0]
    assert (row["n_group0"], row["n_group1"], row["split"]) == (3, 3, "val")
    assert pd.isna(row["missing_groups"])


def test_fairness_reads_what_m_finds_in_the_decodings(pretrained, tmp_path: Path):
    run = train(
        build_config(
            overrides=[
                "method.name=redecnn",
                "data.name=colored-digits",
                f"method.protect_with={pretrained['colour']}",
                f"out_dir={tmp_path / 'runs'}",
                *TINY,
            ]
        ),
        show_progress=False,
    ).run_dir
    (row,) = evaluate_fairness([run], FairnessOptions(results_dir=tmp_path / "res", show_progress=False))
    layers = [row[f"protector_balanced_accuracy_l{i}"] for i in (1, 2, 3)]  # model.depth=3
    assert all(0.0 <= value <= 1.0 for value in layers)
    assert row["protector_balanced_accuracy_decoded"] == pytest.approx(np.mean(layers))
    assert 0.0 <= row["protector_balanced_accuracy_input"] <= 1.0
