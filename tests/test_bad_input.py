"""Bad input to the commands: one clear sentence and a non-zero exit, never a traceback or a silently wrong row."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from decnn_cli.cli import app
from decnn_cli.errors import DecnnError
from decnn_cli.experiments.calibration import CalibrationOptions, evaluate_calibration
from tests.conftest import write_mnist_like

TINY = ["--subset", "64", "--epochs", "1", "--quiet", "--set", "model.depth=3", "--set", "model.width=32"]
TINY_REDECNN = [*TINY, "--set", "method.recursion_depth=2", "--set", "eval.samples=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = CliRunner().invoke(app, ["train", "--method", "redecnn", "--out", str(out), *TINY_REDECNN])
    assert result.exit_code == 0, result.output
    [folder] = [p for p in out.iterdir() if not p.name.startswith(".")]
    return folder


def _fails(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


@pytest.mark.parametrize(
    "args",
    [
        ["eval-ood", "{run}", "-o", "patches", "--limit", "0"],
        ["attack", "{run}", "--limit", "0"],
        ["eval-calibration", "{run}", "-n", "-1"],
        ["eval-calibration", "{run}", "-n", "0"],
        ["attack", "{run}", "--eps", "5"],
    ],
)
def test_out_of_range_numbers_are_refused_before_anything_runs(runner, run: Path, tmp_path: Path, args: list[str]):
    result = runner.invoke(app, [a.format(run=run) for a in args] + ["--results", str(tmp_path / "results"), "-q"])
    _fails(result, 2, "Invalid value")
    assert not (tmp_path / "results").exists(), "nothing is written"


def test_the_api_refuses_zero_samples_instead_of_taking_the_default(run: Path, tmp_path: Path):
    with pytest.raises(DecnnError, match="samples must be at least 1, not 0"):
        evaluate_calibration([run], CalibrationOptions(results_dir=tmp_path, samples=0, show_progress=False))


def test_a_results_folder_that_is_a_file_or_cannot_be_made_is_one_sentence(runner, run: Path, tmp_path: Path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    result = runner.invoke(app, ["eval-calibration", str(run), "--results", str(a_file), "-q"])
    _fails(result, 1, "is a file; pass a folder with --results")
    result = runner.invoke(app, ["eval-calibration", str(run), "--results", str(a_file / "below"), "-q"])
    _fails(result, 1, "cannot create the results folder", "pass a writable folder with --results")
    assert a_file.read_text() == "not a folder"


def test_a_runs_folder_that_is_a_file_is_one_sentence(runner, tmp_path: Path):
    a_file = tmp_path / "runs"
    a_file.write_text("")
    _fails(runner.invoke(app, ["train", "--out", str(a_file), *TINY]), 1, "is a file; pass a folder with --out")


def test_a_checkpoint_given_as_the_run_names_its_folder(runner, run: Path):
    result = runner.invoke(app, ["eval-calibration", str(run / "model.pt"), "-q"])
    _fails(result, 1, "is a run's checkpoint; pass its run folder", run.name)


def test_a_target_the_dataset_does_not_have_is_refused(runner, tmp_path: Path):
    result = runner.invoke(app, ["train", "--target", "Smiling", "--out", str(tmp_path), *TINY])
    _fails(result, 2, "dataset 'digits' has no target to choose")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_compose_with_takes_a_run_folder_and_warns_about_another_dataset(runner, tmp_path: Path):
    out = tmp_path / "runs"
    m = runner.invoke(app, ["train", "--method", "standard", "--arch", "linear", "--out", str(out / "m"), *TINY])
    assert m.exit_code == 0, m.output
    [m_folder] = list((out / "m").iterdir())
    root = write_mnist_like(tmp_path / "data", "MNIST")
    composed = ["train", "--dataset", "mnist", "--data-root", str(root), "--compose-with", str(m_folder)]
    result = runner.invoke(app, [*composed, "--out", str(out / "f"), *TINY_REDECNN])
    assert result.exit_code == 0, result.output
    assert "was trained on digits, this run's data is mnist" in result.output
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    result = runner.invoke(app, [*composed[:-1], str(empty), "--out", str(out / "g"), *TINY_REDECNN])
    _fails(result, 2, "is a folder without model.pt")


def test_fairness_on_a_dataset_without_groups_says_which_datasets_have_them(runner, run: Path, tmp_path: Path):
    results = tmp_path / "results"
    named = runner.invoke(app, ["fairness", str(run), "--protected", "Bald", "--results", str(results), "-q"])
    _fails(named, 1, f"run {run.name} is on digits, which has no attribute 'Bald'", "drop it")
    unnamed = runner.invoke(app, ["fairness", str(run), "--results", str(results), "-q"])
    _fails(unnamed, 1, "which has no protected groups", "celeba (with --protected ATTRIBUTE)")
    assert "pass --protected" not in unnamed.output  # the old message asked for the option that cannot help
    assert not results.exists() or not any(results.iterdir())
