"""decnn reproduce --shard K/N: deterministic slices of a grid that never train or evaluate anything twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from decnn_cli.cli import app
from decnn_cli.errors import ConfigError
from decnn_cli.experiments.reproduce import Shard, load_recipe, plan, reproduce

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "recipes" / "smoke" / "cpu.toml"


def test_shard_parses_k_of_n_and_owns_every_nth_run():
    shard = Shard.parse(" 2/3 ")
    assert (shard.index, shard.count, str(shard)) == (2, 3, "2/3")
    assert [p for p in range(8) if shard.owns(p)] == [1, 4, 7]
    for bad in ("0/2", "3/2", "2", "a/b", "1/0"):
        with pytest.raises(ConfigError, match="--shard"):
            Shard.parse(bad)


def test_dry_run_of_the_shards_lists_disjoint_slices_covering_the_grid(runner, tmp_path: Path):
    listed = []
    for k in (1, 2, 3):
        result = runner.invoke(app, ["reproduce", str(SMOKE), "--out", str(tmp_path), "--shard", f"{k}/3", "--dry-run"])
        assert result.exit_code == 0, result.output
        assert f"3 runs in shard {k}/3, 3 to train" in result.output
        listed.append({line.split()[-1] for line in result.output.splitlines() if line.startswith("todo")})
    everything = {r.folder.name for r in plan(load_recipe(SMOKE), out_dir=tmp_path)}
    assert set.union(*listed) == everything and sum(map(len, listed)) == len(everything)
    bad = runner.invoke(app, ["reproduce", str(SMOKE), "--shard", "3/2", "--dry-run"])
    assert bad.exit_code == 2 and "between 1 and N" in bad.output
    both = runner.invoke(app, ["reproduce", str(SMOKE), "--shard", "1/2", "--partial"])
    assert both.exit_code == 2 and "without --shard" in both.output


class Recorder:
    """Stands in for train() and for the evaluations, recording what each shard did."""

    def __init__(self) -> None:
        self.shard = ""
        self.trained: list[tuple[str, str]] = []
        self.evaluated: list[tuple[str, str, str]] = []

    def train(self, cfg, console=None, show_progress=True, progress=None, name=None):
        folder = cfg.out_dir / name
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text("{}")
        self.trained.append((self.shard, name))

    def evaluate(self, evaluation, folders, outliers, shared) -> None:
        from decnn_cli.results import merge_rows

        for folder in folders:
            self.evaluated.append((self.shard, evaluation.kind, folder.name))
        rows = [
            {"run": f.name, "dataset": "digits", "accuracy": 90.0, "auroc_vote_entropy": 0.5, "outlier": o}
            for f in folders
            for o in outliers or [""]
        ]
        path = shared.results_dir / f"{shared.table}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        merge_rows(path, rows, ["run", "outlier"]).to_csv(path, index=False)


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    from decnn_cli.experiments import train
    from decnn_cli.experiments.reproduce import evaluations

    record = Recorder()
    monkeypatch.setattr(train, "train", record.train)
    monkeypatch.setattr(evaluations, "run_evaluation", record.evaluate)
    return record


def test_shards_train_and_evaluate_each_run_once_and_the_last_writes_the_tables(recorder: Recorder, tmp_path: Path):
    out, results = tmp_path / "runs", tmp_path / "results"
    runs = plan(load_recipe(SMOKE), out_dir=out)
    names = [r.folder.name for r in runs]
    # Run 0 (the pretrained model of stage "pretrained") is shard 1's; shard 2's composed run 7 needs it.
    assert runs[7].needs == (runs[0].folder,) and runs[8].needs == (runs[0].folder,)

    recorder.shard = "2/2"  # started first, alone: it trains what its runs need, since no process has claimed it
    assert reproduce(SMOKE, results, out_dir=out, show_progress=False, shard=Shard(2, 2)) is None
    assert [n for _, n in recorder.trained] == [names[i] for i in (1, 3, 5, 0, 7)]
    assert not (results / "smoke.csv").exists()  # shard 1's runs are missing: no tables yet

    recorder.shard = "1/2"
    comparison = reproduce(SMOKE, results, out_dir=out, show_progress=False, shard=Shard(1, 2))
    assert [n for s, n in recorder.trained if s == "1/2"] == [names[i] for i in (2, 4, 6, 8)]
    assert sorted(n for _, n in recorder.trained) == sorted(names)  # every run trained, none twice

    units = [(kind, name) for _, kind, name in recorder.evaluated]
    assert len(units) == len(set(units))  # no evaluation done twice
    table_runs = {names[i] for i in range(1, 9)}  # the pretrained stage is not in the tables
    assert {name for _, name in units if _ == "calibration"} == table_runs
    assert {name for kind, name in units if kind == "attack"} == {names[i] for i in (3, 4, 7, 8)}  # redecnn only
    for shard, _, name in recorder.evaluated:  # a shard evaluates its own runs
        assert names.index(name) % 2 == (0 if shard == "1/2" else 1)
    assert comparison is not None and (results / "smoke.csv").is_file() and (results / "smoke.md").is_file()
    assert "Partial table" not in (results / "smoke.md").read_text()

    before = (list(recorder.trained), list(recorder.evaluated))
    for k in (1, 2):  # shards run again find everything done
        assert reproduce(SMOKE, results, out_dir=out, show_progress=False, shard=Shard(k, 2)) is not None
    assert (recorder.trained, recorder.evaluated) == before


def test_a_shard_waits_for_a_run_it_needs_that_another_process_trains(recorder: Recorder, tmp_path: Path, monkeypatch):
    from decnn_cli.experiments.reproduce import locking, running

    out, results = tmp_path / "runs", tmp_path / "results"
    runs = plan(load_recipe(SMOKE), out_dir=out)
    elsewhere = locking.claim(runs[0].folder)  # shard 1 is training the pretrained model

    def shard_one_finishes(_seconds: float) -> None:
        runs[0].folder.mkdir(parents=True)
        (runs[0].folder / "metrics.json").write_text("{}")
        elsewhere.release()

    monkeypatch.setattr(running.time, "sleep", shard_one_finishes)
    recorder.shard = "2/2"
    reproduce(SMOKE, results, out_dir=out, show_progress=False, shard=Shard(2, 2))
    assert [n for _, n in recorder.trained] == [runs[i].folder.name for i in (1, 3, 5, 7)]


@pytest.mark.slow
def test_two_shard_processes_on_a_shared_folder_give_the_tables_of_one_reproduce(tmp_path: Path):
    """Two `--shard` processes, each in a working directory of its own (as on two machines), share one results
    folder; their tables must equal those of one `decnn reproduce` byte for byte. The smoke tables hold no timing
    (no seconds_per_epoch row: Table 10 is not among its paper tables) and no timestamps, so every byte must agree."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env["OMP_NUM_THREADS"] = "1"  # the same arithmetic in every process

    def reproduce_in(cwd: Path, out: Path, results: Path, *extra: str) -> subprocess.Popen:
        cwd.mkdir(parents=True)
        command = [sys.executable, "-m", "decnn_cli", "reproduce", str(SMOKE), "--out", str(out)]
        command += ["--results", str(results), "-q", *extra]
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    shared_out, shared_results = tmp_path / "shared" / "runs", tmp_path / "shared" / "results"
    shards = [reproduce_in(tmp_path / f"host{k}", shared_out, shared_results, "--shard", f"{k}/2") for k in (1, 2)]
    single = reproduce_in(tmp_path / "single", tmp_path / "single" / "runs", tmp_path / "single" / "results")
    outputs = [process.communicate(timeout=900)[0] for process in [*shards, single]]
    for process, output in zip([*shards, single], outputs, strict=True):
        assert process.returncode == 0, output
    assert any("measured cells" in output for output in outputs[:2])  # the shard that ended last wrote the tables

    comparison = pd.read_csv(shared_results / "smoke.csv")
    assert "seconds_per_epoch" not in set(comparison["metric"]) and comparison["runs"].gt(0).any()
    for name in ("smoke.csv", "smoke.md"):
        assert (shared_results / name).read_bytes() == (tmp_path / "single" / "results" / name).read_bytes(), name

    # Nothing was trained twice (a second training of a run would have left a "<name>-1" folder) or evaluated twice.
    planned = {r.folder.name for r in plan(load_recipe(SMOKE), out_dir=shared_out)}
    assert {p.name for p in shared_out.iterdir()} == planned  # no partial folder, no lock left either
    staging = shared_results / "evaluations"
    for table in staging.glob("*.csv"):
        rows = pd.read_csv(table)
        key = ["run", "outlier"] if "outlier" in rows else ["run"]
        assert not rows.duplicated(key).any(), table.name
    assert not [p.name for p in staging.iterdir() if p.name.startswith(".")]
