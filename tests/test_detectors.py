"""Post-hoc detectors: which way their scores point (on hand-made tensors), that they read the right layer of every
method's single classifier, and that their ROC-AUCs agree with pytorch-ood's own OODMetrics on the same scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from decnn_cli.cli import app
from decnn_cli.data.spec import DataSpec
from decnn_cli.detectors import (
    DETECTORS,
    Detectors,
    PointOutputs,
    fit_vim,
    head_of,
    parse_detectors,
    point_outputs,
    vim_dimension,
)
from decnn_cli.errors import DecnnError
from decnn_cli.experiments.ood import OODOptions, evaluate_ood
from decnn_cli.experiments.train import train
from decnn_cli.methods import METHODS, get_method
from decnn_cli.resolve import build_config
from tests.conftest import write_mnist_like

SMALL = [
    "model.depth=3",
    "model.width=16",
    "model.decoder_width=32",
    "method.recursion_depth=2",
    "method.ensemble_size=2",
]
SPEC = DataSpec("toy", (1, 8, 8), 4, "multiclass", tuple("abcd"), (0.5,), (0.5,))


def _hand_made(n: int = 200, d: int = 6, k: int = 3, seed: int = 0) -> tuple[PointOutputs, PointOutputs, PointOutputs]:
    """Training, inlier and outlier outputs: inliers' features sit near their class centre and their logits pick
    one class; outliers' features lie far from every centre (and off the centres' subspace) and their logits are
    flat; outliers are also decoded worse."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.zeros(k, d)
    centres[:, :k] = 4.0 * torch.eye(k)
    weight = torch.cat([torch.eye(k), torch.zeros(k, d - k)], dim=1)  # logits = the first k features

    def inliers(m: int) -> PointOutputs:
        y = torch.arange(m) % k
        z = centres[y] + 0.3 * torch.randn(m, d, generator=g)
        return PointOutputs(z @ weight.T, z, 0.01 + 0.005 * torch.rand(m, 2, generator=g), y)

    z = 6.0 * torch.randn(n, d, generator=g)
    z[:, :k] = 0.3 * torch.randn(n, k, generator=g)  # off the class centres, flat logits
    outliers = PointOutputs(z @ weight.T, z, 0.05 + 0.005 * torch.rand(n, 2, generator=g), torch.full((n,), -1))
    return inliers(3 * n), inliers(n), outliers


def test_every_detector_scores_hand_made_outliers_higher_than_inliers():
    fit, inliers, outliers = _hand_made()
    detectors = Detectors(parse_detectors(["all"]), fit)
    assert detectors.names == list(DETECTORS) and not detectors.skipped
    neg, pos = detectors.scores(inliers), detectors.scores(outliers)
    assert set(neg) == {*DETECTORS, "recon_error_l1", "recon_error_l2"}
    for name in neg:
        assert neg[name].shape == (200,) and np.isfinite(neg[name]).all(), name
        # Higher = more OOD: every outlier above every inlier.
        assert pos[name].min() > neg[name].max(), f"{name}: outliers do not score higher"


def test_logit_scores_are_the_formulas_they_name():
    logits = torch.tensor([[4.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    outputs = PointOutputs(logits, None, None, torch.tensor([0, 1]))
    scores = Detectors(("msp", "energy", "maxlogit"), outputs).scores(outputs)
    np.testing.assert_allclose(scores["msp"], -logits.softmax(1).max(1).values.numpy(), rtol=1e-6)
    np.testing.assert_allclose(scores["energy"], -torch.logsumexp(logits, 1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(scores["maxlogit"], [-4.0, -1.0])
    assert scores["msp"][1] > scores["msp"][0]  # the flat prediction is the more uncertain


def test_detectors_that_cannot_act_on_a_run_are_skipped_with_the_reason():
    fit, _, _ = _hand_made()
    no_layers = PointOutputs(fit.logits, None, None, fit.labels)
    detectors = Detectors(parse_detectors(["all"]), no_layers)
    assert detectors.names == ["msp", "energy", "maxlogit"]
    assert detectors.skipped["recon_error"] == "the method has no decoder"
    assert "no hidden layer" in detectors.skipped["knn"]
    multilabel = Detectors(parse_detectors(["all"]), fit, multilabel=True)
    assert multilabel.names == ["recon_error"] and "multi-label" in multilabel.skipped["msp"]


def test_detector_names_are_checked_and_all_expands_in_registry_order():
    assert parse_detectors(["knn", "msp", "knn"]) == ("msp", "knn")
    assert parse_detectors(["all", "msp"]) == tuple(DETECTORS)
    with pytest.raises(DecnnError, match="unknown detector 'odin'.*'all'"):
        parse_detectors(["odin"])


def test_mahalanobis_names_the_classes_it_has_no_examples_of():
    fit, _, _ = _hand_made()
    keep = fit.labels != 1
    partial = PointOutputs(fit.logits[keep], fit.features[keep], None, fit.labels[keep])
    with pytest.raises(DecnnError, match=r"classes \[1\] have none"):
        Detectors(("mahalanobis",), partial)


def test_the_head_is_recovered_exactly_even_with_units_that_never_fire():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 3)
    features = torch.relu(torch.randn(50, 8))
    features[:, [2, 5]] = 0.0  # dead units
    weight, bias = head_of(features, head(features).detach())
    torch.testing.assert_close(features @ weight.T + bias, head(features).detach(), atol=1e-5, rtol=1e-5)
    assert weight[:, [2, 5]].abs().max() < 1e-6  # the minimum-norm answer on directions h_L never takes
    with pytest.raises(DecnnError, match="not linear|linear in the last hidden layer"):
        head_of(features, torch.sin(head(features).detach() * 5))
    assert [vim_dimension(w) for w in (4096, 2048, 1024, 768, 256, 1)] == [1000, 1000, 512, 512, 128, 1]


def test_vim_fits_the_covariance_of_a_layer_of_mostly_dead_units():
    from pytorch_ood.detector import ViM

    g = torch.Generator().manual_seed(0)
    features = torch.zeros(200, 256)
    features[:, :20] = torch.rand(200, 20, generator=g) * 0.1
    logits = features @ torch.randn(256, 10, generator=g) + 0.5
    vim, note = fit_vim(ViM, features, logits, torch.arange(200) % 10)
    assert vim.d == 10 and "span only 20 dimensions" in note  # d = 128 would leave no training residual
    scores = vim.predict_features(torch.cat([features[:5], torch.ones(5, 256)]))
    assert torch.isfinite(scores).all() and scores[5:].min() > scores[:5].max()


@pytest.mark.parametrize("name", [n for n, s in METHODS.items() if s.needs_hidden_layers or n == "standard"])
def test_features_are_the_last_hidden_layer_of_each_methods_single_classifier(name: str):
    cfg = build_config(overrides=[f"method.name={name}", *SMALL])
    method = get_method(name)
    torch.manual_seed(0)
    model = method.network(cfg, SPEC).eval()
    data = torch.utils.data.TensorDataset(torch.rand(40, *SPEC.in_shape), torch.arange(40) % 4)
    outputs = point_outputs(model, method, data, torch.device("cpu"), batch_size=16)
    assert outputs.features.shape == (40, 16) and outputs.logits.shape == (40, 4)
    # The logits are the point classifier's, and linear in the features read: they come from its last layer.
    torch.testing.assert_close(outputs.logits, method.point(model)(data.tensors[0]).detach())
    weight, bias = head_of(outputs.features, outputs.logits)
    torch.testing.assert_close(outputs.features @ weight.T + bias, outputs.logits, atol=1e-4, rtol=1e-4)
    assert (outputs.recon is not None) is method.uses_decoder
    if method.uses_decoder:
        assert outputs.recon.shape == (40, 3) and (outputs.recon > 0).all()


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    data = write_mnist_like(tmp_path_factory.mktemp("data"), "MNIST", n_train=200, n_test=60)
    write_mnist_like(data, "FashionMNIST", n_train=20, n_test=60, seed=3)
    out = tmp_path_factory.mktemp("runs")
    runs = {"data": data}
    for method in ("standard", "redecnn"):
        overrides = [f"method.name={method}", "data.name=mnist", f"data.root={data}", f"out_dir={out}"]
        cfg = build_config(overrides=[*overrides, *SMALL, "train.epochs=2", "eval.samples=4"])
        runs[method] = train(cfg, show_progress=False).run_dir
    return runs


@pytest.mark.filterwarnings("ignore:AUTC is undefined")  # a constant score (vote entropy of one vote) has no AUTC
def test_detector_roc_aucs_agree_with_pytorch_oods_own_metrics(tiny_runs, tmp_path: Path):
    from pytorch_ood.metrics import OODMetrics

    options = OODOptions(
        results_dir=tmp_path, outliers=("fashion", "attack:fgsm@0.2"), detectors=("all",), show_progress=False
    )
    rows = evaluate_ood([tiny_runs["redecnn"]], options)
    assert {r["outlier"] for r in rows} == {"fashion", "attack:fgsm@0.2"}
    for row in rows:
        saved = np.load(tiny_runs["redecnn"] / f"ood_{row['outlier'].replace(':', '-').replace('@', '-')}.npz")
        for name in [*DETECTORS, "recon_error_l1", "vote_entropy"]:
            neg, pos = saved[f"inlier_{name}"], saved[f"outlier_{name}"]
            reference = OODMetrics()
            scores = torch.from_numpy(np.r_[neg, pos])
            reference.update(scores, torch.from_numpy(np.r_[np.zeros(len(neg)), -np.ones(len(pos))]).long())
            measured = reference.compute()
            assert row[f"auroc_{name}"] == pytest.approx(measured["AUROC"], abs=1e-6), name
            assert row[f"fpr95_{name}"] == pytest.approx(measured["FPR95TPR"], abs=1e-6), name
            # (AUPR is not compared: the suite reports scikit-learn's average precision, pytorch-ood an area.)
    frame = pd.read_csv(tmp_path / "ood.csv")
    assert {f"auroc_{n}" for n in DETECTORS} <= set(frame.columns)
    markdown = (tmp_path / "ood.md").read_text()
    assert "OOD ROC-AUC, mahalanobis" in markdown and "OOD ROC-AUC, recon_error" in markdown


def test_eval_ood_with_detectors_on_a_network_without_a_decoder(runner, tiny_runs, tmp_path: Path):
    args = ["eval-ood", str(tiny_runs["standard"]), "-o", "fashion", "-D", "energy", "-D", "recon_error"]
    result = runner.invoke(app, [*args, "--fit-examples", "50", "--results", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert "no recon_error (the method has no decoder)" in result.output
    frame = pd.read_csv(tmp_path / "ood.csv")
    assert frame["auroc_energy"].between(0, 1).all() and "auroc_recon_error" not in frame


def test_eval_ood_detectors_only_scores_without_sampling_and_keeps_the_sampled_scores(runner, tiny_runs, tmp_path):
    run = tiny_runs["redecnn"]
    sampled = ["eval-ood", str(run), "-o", "fashion", "--results", str(tmp_path / "sampled"), "-q"]
    assert runner.invoke(app, sampled).exit_code == 0
    args = ["eval-ood", str(run), "-o", "fashion", "-D", "recon_error", "--detectors-only", "-q"]
    result = runner.invoke(app, [*args, "--results", str(tmp_path / "detected")])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "detected" / "ood.csv")
    assert frame["auroc_recon_error"].between(0, 1).all()
    assert not [c for c in frame if "vote_entropy" in c or "predictive_entropy" in c] and "samples" not in frame
    with np.load(run / "ood_fashion.npz") as scores:  # the sampled evaluation's scores stay beside the new ones
        assert {"inlier_vote_entropy", "outlier_vote_entropy", "inlier_recon_error"} <= set(scores.files)
    alone = runner.invoke(app, ["eval-ood", str(run), "-o", "fashion", "--detectors-only", "-q"])
    assert alone.exit_code != 0 and "--detectors-only scores nothing without a detector" in alone.output


def test_detectors_only_skips_a_run_none_of_whose_detectors_can_act_on_it(runner, tiny_runs, tmp_path: Path):
    # recon_error needs a decoder: the standard run has no score to give, the ReDecNN run does.
    both = [str(tiny_runs["standard"]), str(tiny_runs["redecnn"])]
    args = ["eval-ood", *both, "-o", "fashion", "-D", "recon_error", "--detectors-only", "-q"]
    result = runner.invoke(app, [*args, "--results", str(tmp_path / "both")])
    assert result.exit_code == 0, result.output
    assert f"{tiny_runs['standard'].name}: skipped, no detector asked for can act on it" in result.output
    frame = pd.read_csv(tmp_path / "both" / "ood.csv")
    assert set(frame["method"]) == {"redecnn"} and frame["auroc_recon_error"].between(0, 1).all()
    alone = ["eval-ood", str(tiny_runs["standard"]), "-o", "fashion", "-D", "recon_error", "--detectors-only", "-q"]
    result = runner.invoke(app, [*alone, "--results", str(tmp_path / "alone")])
    assert result.exit_code != 0 and "no run could be scored" in result.output
    assert not (tmp_path / "alone" / "ood.csv").exists()
