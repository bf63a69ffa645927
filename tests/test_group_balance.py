"""Group-balanced sampling (train.group_balance): every (label, protected group) cell drawn equally often (the
classes alone without groups), the adversary's group weights left even, folders keyed only when it is on, and one
clear error where it cannot work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from decnn_cli.cli import app
from decnn_cli.data.splitting import group_balanced_sampler
from decnn_cli.errors import DecnnError
from decnn_cli.experiments.reproduce.planning import folder_name
from decnn_cli.resolve import build_config
from tests.test_adversary import SMALL

ON = "train.group_balance=true"


def _correlated(n: int = 2000) -> TensorDataset:
    """Labels 0/1; the group agrees with the label in 95% of the examples, as the coloured datasets' colour does."""
    torch.manual_seed(0)
    y = torch.arange(n) % 2
    groups = torch.where(torch.rand(n) < 0.95, y, 1 - y)
    return TensorDataset(torch.zeros(n, 1), y, groups)


def test_every_label_and_group_cell_is_drawn_about_equally_often():
    data = _correlated()
    y, groups = data.tensors[1], data.tensors[2]
    sampler, note = group_balanced_sampler(data, seed=0, label_names=("0-4", "5-9"), group_names=("red", "green"))
    drawn = torch.tensor(list(sampler))
    assert len(drawn) == len(data)
    cells = torch.bincount(2 * y[drawn] + groups[drawn], minlength=4).float() / len(drawn)
    assert torch.allclose(cells, torch.full((4,), 0.25), atol=0.04)  # the split itself: 0.475 / 0.025 / 0.025 / 0.475
    assert torch.equal(drawn, torch.tensor(list(group_balanced_sampler(data, seed=0)[0])))  # seeded
    assert not torch.equal(drawn, torch.tensor(list(group_balanced_sampler(data, seed=1)[0])))
    sizes = torch.bincount(2 * y + groups, minlength=4)
    smallest = int(sizes.argmin())
    cell = f"{('0-4', '5-9')[smallest // 2]}, {('red', 'green')[smallest % 2]}"
    assert f"4 (label, group) cells of 2,000 training examples, from {int(sizes.min())} ({cell})" in note
    assert f"drawn about {2000 / (4 * int(sizes.min())):.1f} times a pass" in note


def test_without_groups_it_draws_the_classes_evenly():
    torch.manual_seed(0)
    y = (torch.rand(3000) < 0.05).long()  # 5% positives, as a rare attribute
    sampler, note = group_balanced_sampler(TensorDataset(torch.zeros(3000, 1), y), seed=0, label_names=("no", "yes"))
    drawn = torch.tensor(list(sampler))
    assert abs(float(y[drawn].float().mean()) - 0.5) < 0.04
    positives = int(y.sum())
    assert (
        f"class-balanced sampling (no protected groups): 2 classes of 3,000 training examples, from {positives} (yes)"
        in note
    )


def test_a_split_with_many_labels_per_example_is_one_clear_error():
    multi = TensorDataset(torch.zeros(4, 1), torch.ones(4, 3), torch.arange(4) % 2)
    with pytest.raises(DecnnError, match="data.target"):
        group_balanced_sampler(multi, seed=0)


def test_it_keys_folders_only_once_on_and_refuses_a_second_class_weighting(runner):
    def name(*overrides: str) -> str:
        return folder_name(build_config(overrides=["method.name=redecnn", *overrides]))

    assert name("train.group_balance=false") == name()
    assert "__group-balanced__" in name(ON)
    result = runner.invoke(
        app, ["train", "--dataset", "colored-digits", "--set", ON, "--set", "train.pos_weight=balanced"]
    )
    assert result.exit_code != 0
    assert "train.group_balance" in result.output and "pos_weight" in result.output


def test_a_group_balanced_run_trains_from_the_sampler_with_even_adversary_weights(tmp_path: Path, runner, monkeypatch):
    import decnn_cli.experiments.train as training

    made = []

    def recording(*args, **kwargs):
        made.append(group_balanced_sampler(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(training, "group_balanced_sampler", recording)
    args = [
        "train", "-q", "--method", "standard", "--dataset", "colored-digits", "--subset", "200", "--epochs", "1",
        "--out", str(tmp_path),
        *[arg for s in (*SMALL, ON, "method.protect_adversary_weight=0.1") for arg in ("--set", s)],
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    assert "__group-balanced__" in run.name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["adversary_group_weights"] == {"red": 1.0, "green": 1.0}
    ((sampler, note),) = made
    assert note in metrics["data_notes"]
    assert sampler.generator.initial_seed() == 0  # the run's seed
    # Training drew from it: its generator has moved on from the seed.
    assert not torch.equal(sampler.generator.get_state(), torch.Generator().manual_seed(0).get_state())


def test_a_dataset_without_groups_trains_class_balanced(tmp_path: Path, runner):
    args = ["train", "-q", "--dataset", "digits", "--subset", "100", "--epochs", "1", "--out", str(tmp_path)]
    args += ["--set", ON]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    notes = json.loads((run / "metrics.json").read_text())["data_notes"]
    assert any(note.startswith("class-balanced sampling (no protected groups): 10 classes") for note in notes)
