"""The speech and CelebA recipes end to end on tiny files written in those datasets' real layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from decnn_cli.experiments.reproduce import reproduce
from tests.conftest import write_celeba
from tests.test_speech import write_audiomnist, write_fluent, write_fsdd

pytestmark = pytest.mark.slow  # whole recipes, end to end

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
TINY = [
    "train.epochs=1",
    "train.min_steps=0",  # the CPU recipes' 4,000-step floor would train a 40-image fixture for thousands of epochs
    "eval.samples=2",
    "model.depth=2",
    "model.width=16",
    "model.decoder_width=32",
    "method.recursion_depth=2",
    "method.ensemble_size=2",
]


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_celeba(root, n=40)
    write_audiomnist(root)
    write_fluent(root)
    write_fsdd(root)
    return root


def _reproduce(recipe: str, data_root: Path, tmp_path: Path, extra: tuple[str, ...] = ()):
    """Run ``recipes/<recipe>.toml`` at tiny size on the fixture files; return its comparison table."""
    return reproduce(
        RECIPES / f"{recipe}.toml",
        tmp_path / "results",
        data_root=data_root,
        out_dir=tmp_path / "runs",
        overrides=[*TINY, *extra],
        show_progress=False,
    )


def _measured(frame, kind: str, metric: str):
    return frame[(frame["kind"] == kind) & (frame["metric"] == metric) & (frame["runs"] > 0)]


def test_speech_recipe_runs_end_to_end(fixture_root: Path, tmp_path: Path):
    comparison = _reproduce("table9/cpu", fixture_root, tmp_path)
    accuracy = _measured(comparison, "calibration", "accuracy")
    assert set(accuracy["dataset"]) == {"fsdd"} and len(accuracy) == 7
    assert (accuracy["runs"] == 3).all()
    assert set(accuracy["paper_dataset"]) == {"audiomnist"}  # FSDD stands in for the paper's AudioMNIST
    ood = _measured(comparison, "ood", "auroc_vote_entropy")
    assert set(ood["model"]) == set(accuracy["model"])  # every method, against the corrupted spectrograms
    assert {"corrupt (mean)", "corrupt:fog@3", "corrupt:shot_noise@3"} <= set(ood["outlier"])
    assert "paper Table 9" in (tmp_path / "results" / "table9-cpu.md").read_text()


def test_celeba_holdout_recipe_runs_end_to_end(fixture_root: Path, tmp_path: Path):
    comparison = _reproduce("table3/cpu", fixture_root, tmp_path)
    ood = _measured(comparison, "ood", "auroc_vote_entropy")
    assert set(ood["outlier"]) == {"celeba-holdout:Wearing_Hat", "celeba-holdout:Blond_Hair", "celeba-holdout:Bald"}
    assert set(ood["model"]) == {"redecnn", "mc-dropout", "bayesnn", "ensemble"}
    assert ood["paper"].notna().all()  # every measured cell has its paper number beside it


def test_celeba_fairness_recipe_runs_end_to_end(fixture_root: Path, tmp_path: Path):
    comparison = _reproduce("table8/paper", fixture_root, tmp_path, ("model.decoder=mlp",))
    probe = _measured(comparison, "fairness", "probe_f1")
    assert set(probe["model"]) == {"standard", "redecnn", "redecnn (Eq. 8)"}
