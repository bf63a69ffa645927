"""Evaluation subcommands end to end on tiny runs: eval-calibration, report, eval-ood, attack."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from decnn_cli.cli import app
from decnn_cli.errors import DecnnError
from decnn_cli.experiments.train import train
from decnn_cli.resolve import build_config
from tests.conftest import write_mnist_like

TINY = [
    "data.subset=80",
    "train.epochs=1",
    "model.depth=3",
    "model.width=32",
    "model.decoder_width=64",
    "method.recursion_depth=2",
    "eval.samples=4",
]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny trained run per method family, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("runs")
    data = write_mnist_like(tmp_path_factory.mktemp("data"), "MNIST", n_train=120, n_test=40)
    write_mnist_like(data, "FashionMNIST", n_train=20, n_test=30, seed=3)
    runs = {}
    for method in ("redecnn", "mc-dropout", "standard"):
        cfg = build_config(
            overrides=[f"method.name={method}", "data.name=mnist", f"data.root={data}", f"out_dir={root}", *TINY]
        )
        runs[method] = train(cfg, show_progress=False).run_dir
    runs["data"] = data
    return runs


def test_eval_calibration_writes_rows_tables_and_pictures(runner, tiny_runs, tmp_path: Path):
    results = tmp_path / "results"
    args = ["eval-calibration", str(tiny_runs["redecnn"]), str(tiny_runs["standard"]), "--results", str(results), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(results / "calibration.csv")
    assert set(frame["method"]) == {"redecnn", "standard"}
    assert frame["ece"].between(0, 100).all() and frame["accuracy"].between(0, 100).all()
    markdown = (results / "calibration.md").read_text()
    assert "Table 1b" in markdown and "| redecnn |" in markdown
    assert (tiny_runs["redecnn"] / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert (results / "calibration_reliability.png").read_bytes()[:4] == b"\x89PNG"  # next to the tables
    saved = np.load(tiny_runs["redecnn"] / "calibration.npz")
    assert saved["votes"].shape == (4, len(saved["labels"]))
    # Re-running replaces the rows of the same runs instead of appending duplicates.
    assert runner.invoke(app, args).exit_code == 0
    assert len(pd.read_csv(results / "calibration.csv")) == 2


def test_eval_calibration_on_the_validation_split_keeps_the_test_tables(runner, tiny_runs, tmp_path: Path):
    from decnn_cli.experiments.common import load_run, test_splits

    results, run = tmp_path / "results", tiny_runs["redecnn"]
    args = ["eval-calibration", str(run), "--split", "val", "--data-root", str(tiny_runs["data"])]
    result = runner.invoke(app, [*args, "--results", str(results), "-q"])
    assert result.exit_code == 0, result.output
    assert not (results / "calibration.csv").exists()  # the test split's table is not touched
    frame = pd.read_csv(results / "calibration_val.csv")
    assert frame["split"].tolist() == ["val"]
    splits = test_splits(load_run(run, "cpu"), tiny_runs["data"])
    saved = np.load(run / "calibration_val.npz")
    assert len(saved["labels"]) == len(splits.val) != len(splits.test)
    val_labels = np.array([int(splits.val[i][1]) for i in range(len(splits.val))])
    assert (saved["labels"] == val_labels).all()
    assert (run / "reliability_val.png").read_bytes()[:4] == b"\x89PNG"


def test_report_aggregates_metrics_json(runner, tiny_runs, tmp_path: Path):
    results = tmp_path / "results"
    result = runner.invoke(app, ["report", str(tiny_runs["redecnn"].parent), "--results", str(results)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(results / "training.csv")
    assert len(frame) == 3
    assert "Test accuracy" in (results / "training.md").read_text()


def test_eval_ood_against_another_dataset_and_patches(runner, tiny_runs, tmp_path: Path):
    results = tmp_path / "results"
    result = runner.invoke(
        app,
        [
            "eval-ood",
            str(tiny_runs["redecnn"]),
            "--outlier",
            "fashion",
            "--outlier",
            "patches",
            "--limit",
            "20",
            "--results",
            str(results),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(results / "ood.csv")
    assert set(frame["outlier"]) == {"fashion", "patches"}
    assert frame["auroc_vote_entropy"].between(0, 1).all()
    assert (frame["outliers"] == 20).all()
    assert (tiny_runs["redecnn"] / "roc_patches.png").exists()
    assert (results / "ood_roc_mnist_patches.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_ood_corruptions_report_mean_and_stdev(tiny_runs, tmp_path: Path):
    from decnn_cli.experiments.ood import OODOptions, evaluate_ood

    options = OODOptions(results_dir=tmp_path, outliers=("corrupt:all@2",), limit=10, show_progress=False)
    rows = evaluate_ood([tiny_runs["mc-dropout"]], options)
    outliers = [r["outlier"] for r in rows]
    assert sum(o.startswith("corrupt:") for o in outliers) == 15
    mean = next(r for r in rows if r["outlier"] == "corrupt (mean)")
    per = [r["auroc_vote_entropy"] for r in rows if r["outlier"].startswith("corrupt:")]
    assert mean["auroc_vote_entropy"] == pytest.approx(np.mean(per))


def test_unknown_outlier_and_missing_outlier_files_are_clear_errors(runner, tiny_runs, tmp_path: Path):
    result = runner.invoke(
        app, ["eval-ood", str(tiny_runs["standard"]), "--outlier", "svhn", "-q", "--results", str(tmp_path)]
    )
    assert result.exit_code == 1 and "unknown outlier set 'svhn'" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(
        app,
        [
            "eval-ood",
            str(tiny_runs["standard"]),
            "--outlier",
            "celeba",
            "-q",
            "--data-root",
            str(empty),
            "--results",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1 and "MNIST files are missing" in result.output  # the inliers' own data first
    result = runner.invoke(
        app, ["eval-ood", str(tiny_runs["standard"]), "--outlier", "celeba", "-q", "--results", str(tmp_path)]
    )
    assert result.exit_code == 1 and "celeba" in result.output.lower() and "missing" in result.output


def test_fgsm_with_zero_eps_changes_nothing_and_positive_eps_stays_in_the_ball(tiny_runs):
    from decnn_cli.engine import load_checkpoint
    from decnn_cli.experiments.attack import make_attack

    loaded = load_checkpoint(tiny_runs["standard"] / "model.pt")
    target = loaded.method.point(loaded.model).eval()
    x = torch.rand(8, 1, 28, 28)
    y = torch.randint(10, (8,))
    assert torch.equal(make_attack("fgsm", target, 0.0)(x, y), x)
    for name in ("fgsm", "pgd"):
        adv = make_attack(name, target, 0.1)(x, y)
        assert (adv - x).abs().max() <= 0.1 + 1e-6
        assert adv.min() >= 0.0 and adv.max() <= 1.0
        assert not torch.equal(adv, x)


def test_attack_command_reports_detection(runner, tiny_runs, tmp_path: Path):
    result = runner.invoke(
        app, ["attack", str(tiny_runs["redecnn"]), "--eps", "0.2", "--limit", "16", "--results", str(tmp_path), "-q"]
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "attack.csv")
    assert frame.loc[0, "attack"] == "fgsm" and frame.loc[0, "examples"] == 16
    assert 0 <= frame.loc[0, "auroc_vote_entropy"] <= 1
    bad = runner.invoke(
        app, ["attack", str(tiny_runs["redecnn"]), "--attack", "deepfoo", "-q", "--results", str(tmp_path)]
    )
    assert bad.exit_code == 1 and "unknown attack 'deepfoo'" in bad.output and "pgd" in bad.output


def test_broken_run_folders_are_clear_errors(runner, tiny_runs, tmp_path: Path):
    from decnn_cli.experiments.common import load_run

    copy = tmp_path / "copy"
    shutil.copytree(tiny_runs["standard"], copy)
    (copy / "model.pt").unlink()
    with pytest.raises(DecnnError, match="no model.pt"):
        load_run(copy)
    (copy / "metrics.json").unlink()
    with pytest.raises(DecnnError, match="not a finished run"):
        load_run(copy)
    result = runner.invoke(app, ["eval-calibration", str(tmp_path / "nope"), "--results", str(tmp_path)])
    assert result.exit_code == 1 and "does not exist" in result.output
    other = tmp_path / "other"
    shutil.copytree(tiny_runs["standard"], other)
    payload = torch.load(other / "model.pt", weights_only=True)
    payload["format"] = 0
    torch.save(payload, other / "model.pt")
    result = runner.invoke(app, ["eval-calibration", str(other), "--results", str(tmp_path)])
    assert result.exit_code == 1 and "not written by this version" in result.output


def test_figures_decode_chosen_layers_and_sort_inputs_by_uncertainty(runner, tiny_runs, tmp_path: Path, monkeypatch):
    from decnn_cli import plots

    drawn = {}
    real_grid = plots.save_image_grid

    def recording_grid(grid, path, **labels):
        drawn[Path(path).name] = (tuple(grid.shape), labels)
        real_grid(grid, path, **labels)

    monkeypatch.setattr(plots, "save_image_grid", recording_grid)
    result = runner.invoke(
        app,
        [
            "figures",
            str(tiny_runs["redecnn"]),
            str(tiny_runs["standard"]),
            "--out",
            str(tmp_path),
            "--inputs",
            "3",
            "--layer",
            "1",
            "--layer",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    shape, labels = drawn[f"{tiny_runs['redecnn'].name}_decodings.png"]
    assert shape == (3, 3, 1, 28, 28)  # 3 inputs x (input + 2 chosen layers)
    assert labels["column_titles"] == ["input", "g(h_1)", "g(h_3)"]
    assert (tmp_path / f"{tiny_runs['redecnn'].name}_decodings.png").stat().st_size > 0
    shape, labels = drawn[f"{tiny_runs['redecnn'].name}_uncertainty.png"]
    assert shape[:2] == (2, 3)
    low, high = ([float(c.split("\n")[-1]) for c in row] for row in labels["captions"])
    assert max(low) <= min(high)  # top row: the least uncertain inputs; bottom row: the most
    assert (tmp_path / f"{tiny_runs['standard'].name}_uncertainty.png").exists()
    assert not (tmp_path / f"{tiny_runs['standard'].name}_decodings.png").exists()  # no decoder to show
    bad = runner.invoke(app, ["figures", str(tiny_runs["redecnn"]), "--out", str(tmp_path), "--layer", "9"])
    assert bad.exit_code == 1 and "--layer must lie in 1..3" in bad.output


def _constant_copy(run: Path, tmp_path: Path, cls: int) -> Path:
    """A copy of ``run`` whose output layer is zeroed but for a bias towards class ``cls``: it predicts cls always."""
    from decnn_cli import engine

    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    loaded = engine.load_checkpoint(copy / "model.pt")
    last = [m for m in loaded.model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[cls] = 5.0
    engine.save_checkpoint(copy / "model.pt", loaded.model, loaded.cfg, loaded.spec)
    return copy


def test_evaluations_warn_about_a_model_that_predicts_one_class(runner, tiny_runs, tmp_path: Path):
    constant = _constant_copy(tiny_runs["standard"], tmp_path, 3)
    results = tmp_path / "results"
    args = ["eval-calibration", str(constant), str(tiny_runs["redecnn"]), "--results", str(results), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # rich wraps long lines
    assert f"warning: {constant.name}: predicts '3 - three' for every one of the 40 test images" in said
    assert said.count("warning:") == 1  # the trained run predicts more than one class
    frame = pd.read_csv(results / "calibration.csv").set_index("method")
    assert frame.loc["standard", "constant_outputs"] == 1 and frame.loc["redecnn", "constant_outputs"] == 0
    result = runner.invoke(app, ["attack", str(constant), "--limit", "8", "--results", str(results), "-q"])
    assert result.exit_code == 0, result.output
    assert "predicts '3 - three' for every one of the 8 test images" in " ".join(result.output.split())
    assert pd.read_csv(results / "attack.csv")["constant_outputs"].tolist() == [1]


def test_train_warns_about_attributes_predicted_never_and_records_them(celeba_root: Path, tmp_path: Path, monkeypatch):
    import io

    from rich.console import Console

    from decnn_cli.experiments import train as train_module

    real = train_module.predict

    def bald_never(*args, **kwargs):
        pred = real(*args, **kwargs)
        probs = np.where(np.arange(len(pred.labels))[:, None] % 2 == 0, 0.2, 0.8) * np.ones((1, 40))
        probs[:, 4] = 0.1  # Bald: 'no' for every test image; every other attribute varies
        pred.point_probs = pred.mean_probs = probs
        return pred

    monkeypatch.setattr(train_module, "predict", bald_never)
    cfg = build_config(
        overrides=["method.name=standard", "data.name=celeba", f"data.root={celeba_root}", f"out_dir={tmp_path}", *TINY]
    )
    said = io.StringIO()
    outcome = train(cfg, console=Console(file=said, width=400), show_progress=False)
    assert outcome.metrics["constant_outputs"] == 1
    assert (
        f"warning: {outcome.run_dir.name}: predicts 'no' for every one of the 6 test images on 1 of 40 attributes "
        "(Bald)" in said.getvalue()
    )
    assert "consider --set train.pos_weight=balanced" in said.getvalue()


def test_the_constant_output_warning_names_up_to_eight_attributes_and_each_direction():
    from decnn_cli.data.spec import DataSpec
    from decnn_cli.experiments.common import constant_output_warning
    from decnn_cli.uncertainty import Predictions

    names = tuple(f"a{k}" for k in range(12))
    spec = DataSpec("toy", (1, 2, 2), 12, "multilabel", names, (0.5,), (0.5,))
    probs = np.full((3, 12), 0.1)  # a0..a9 'no' throughout
    probs[:, 10] = 0.9  # a10 'yes' throughout
    probs[:, 11] = [0.2, 0.7, 0.4]  # a11 varies
    pred = Predictions("multilabel", np.zeros((3, 12)), probs, probs, np.zeros((1, 3, 12)), "point")
    count, message = constant_output_warning("run", pred, spec, "balanced")
    assert count == 11
    assert message == (
        "run: predicts 'no' for every one of the 3 test images on 10 of 12 attributes (a0, a1, a2, a3, a4, a5, a6, "
        "a7, ...), and 'yes' on 1 of 12 attributes (a10): such an attribute says nothing about the image "
        "(its F1 is 0 where it is 'no')"
    )  # already balanced: no advice to balance
    varied = Predictions("multilabel", np.zeros((3, 1)), probs[:, 11:], probs[:, 11:], np.zeros((1, 3, 1)), "point")
    assert constant_output_warning("run", varied, spec, "none") == (0, None)
    _, on_val = constant_output_warning("run", pred, spec, "balanced", split="val")
    assert on_val.startswith("run: predicts 'no' for every one of the 3 val images on 10 of 12 attributes")
