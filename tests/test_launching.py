"""decnn reproduce --launcher slurm|local: launcher settings, sbatch scripts, and the jobs' life cycle."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from decnn_cli.cli import app
from decnn_cli.errors import ConfigError, DecnnError
from decnn_cli.experiments.reproduce import launching, load_recipe, plan
from decnn_cli.experiments.reproduce.launching import LauncherSettings, launch, launcher_settings
from tests.test_sharding import Recorder

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "recipes" / "smoke" / "cpu.toml"


def test_launcher_settings_come_from_set_and_reject_misspelt_keys():
    settings = launcher_settings(
        [
            "launcher.partition=gpu",
            "launcher.gpus_per_run=1",
            "launcher.timeout_min=90",
            'launcher.sbatch={exclude = "node[1-4]"}',
            "launcher.sbatch.nice=10",
        ]
    )
    assert (settings.partition, settings.gpus_per_run, settings.timeout_min) == ("gpu", 1, 90)
    assert settings.sbatch == {"exclude": "node[1-4]", "nice": 10}
    assert launcher_settings([]) == LauncherSettings()
    with pytest.raises(ConfigError, match=r"launcher\.partitoin: unknown key; valid keys here: .*'partition'"):
        launcher_settings(["launcher.partitoin=gpu"])
    with pytest.raises(ConfigError, match=r"launcher\.gpus_per_run"):
        launcher_settings(["launcher.gpus_per_run=-1"])
    for field in LauncherSettings.model_fields.values():
        assert field.description, "every launcher setting is documented where it is defined"


def test_launcher_settings_do_not_rename_run_folders(runner, tmp_path: Path):
    args = ["reproduce", str(SMOKE), "--out", str(tmp_path), "--dry-run"]
    plain = runner.invoke(app, args)
    launched = runner.invoke(app, [*args, "--launcher", "slurm", "--set", "launcher.partition=gpu"])
    assert plain.exit_code == launched.exit_code == 0, launched.output
    assert plain.output == launched.output


def test_launcher_options_that_do_not_go_together_are_config_errors(runner):
    cases = [
        (["--set", "launcher.partition=gpu"], "for --launcher slurm or --launcher local"),
        (["--launcher", "slurm", "--shard", "1/2"], "launcher.shards=N"),
        (["--launcher", "local", "--partial"], "leave out --shard and --partial"),
        (["--launcher", "slurm", "--set", "launcher.gpus=1"], "launcher.gpus: unknown key"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, ["reproduce", str(SMOKE), *extra])
        assert result.exit_code == 2 and message in result.output, (extra, result.output)


def test_slurm_jobs_ask_for_what_the_settings_say(tmp_path: Path, monkeypatch):
    pytest.importorskip("submitit")
    from submitit.slurm.slurm import SlurmExecutor

    with pytest.raises(DecnnError, match="found no Slurm here"):  # this machine has no srun
        launching.make_executor("slurm", LauncherSettings(), tmp_path, "decnn-smoke")
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # as if srun were installed
    settings = launcher_settings(
        [
            "launcher.partition=gpu",
            "launcher.gpus_per_run=1",
            "launcher.cpus_per_run=8",
            "launcher.mem_gb=32",
            "launcher.timeout_min=90",
            "launcher.account=lab",
            'launcher.setup=["module load cuda/12.4"]',
            'launcher.sbatch={exclude = "node[1-4]"}',
        ]
    )
    executor = launching.make_executor("slurm", settings, tmp_path / "jobs", "decnn-smoke")
    script = executor._executor._make_submission_file_text("python -m submitit.core._submit", "uid")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --time=90",
        "#SBATCH --account=lab",
        "#SBATCH --exclude='node[1-4]'",  # shell-quoted by submitit
        "#SBATCH --nodes=1",
        "#SBATCH --job-name=decnn-smoke",
        f"#SBATCH --output={tmp_path / 'jobs'}/%j_0_log.out",
        "module load cuda/12.4",
    ):
        assert line in script.splitlines(), line


class FakeJob:
    """A job already run, in this process, with the interface of a submitit job."""

    counter = 0

    def __init__(self, folder: Path, fn, spec):
        FakeJob.counter += 1
        self.job_id = str(FakeJob.counter)
        self.paths = type("Paths", (), {})()
        self.paths.stdout, self.paths.stderr = folder / f"{self.job_id}_0_log.out", folder / f"{self.job_id}_0_log.err"
        self.paths.stdout.write_text(f"job {self.job_id}\n")
        self.paths.stderr.write_text("")
        self.spec, self._result, self._error = spec, None, None
        try:
            self._result = fn(spec)
        except Exception as error:
            self._error = error

    def done(self) -> bool:
        return True

    def exception(self):
        return self._error

    def result(self):
        if self._error is not None:
            raise self._error
        return self._result

    def cancel(self, check: bool = True) -> None:
        pass


class FakeExecutor:
    """Runs each submitted job at once, in this process; records the batches it was given."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.batches: list[list] = []

    @contextmanager
    def batch(self):
        self.batches.append([])
        yield

    def submit(self, fn, spec):
        self.batches[-1].append(spec)
        return FakeJob(self.folder, fn, spec)


@pytest.fixture
def fake(monkeypatch, tmp_path: Path):
    from decnn_cli.experiments import train
    from decnn_cli.experiments.reproduce import evaluations

    record = Recorder()
    monkeypatch.setattr(train, "train", record.train)
    monkeypatch.setattr(evaluations, "run_evaluation", record.evaluate)
    executor = FakeExecutor(tmp_path / "jobs")
    monkeypatch.setattr(launching, "make_executor", lambda *a: executor)
    monkeypatch.setattr(launching.time, "sleep", lambda s: None)
    return record, executor


def test_one_job_per_run_each_once_its_dependencies_are_finished(fake, tmp_path: Path):
    record, executor = fake
    out, results = tmp_path / "runs", tmp_path / "results"
    runs = plan(load_recipe(SMOKE), out_dir=out)
    launch(SMOKE, "local", LauncherSettings(poll_s=0.01), results, out_dir=out, show_progress=False)
    batches = [[spec.run for spec in batch] for batch in executor.batches]
    # The composed runs need the pretrained model: they are submitted once its job has finished it.
    assert batches == [[r.folder.name for r in runs[:7]], [r.folder.name for r in runs[7:]]]
    assert sorted(name for _, name in record.trained) == sorted(r.folder.name for r in runs)
    units = [(kind, name) for _, kind, name in record.evaluated]
    assert len(units) == len(set(units)) and {name for _, name in units} == {r.folder.name for r in runs[1:]}
    for run in runs:  # the job's logs moved into its run folder
        assert [p.suffix for p in sorted((run.folder / "logs").iterdir())] == [".err", ".out"]
    assert "Partial table" not in (results / "smoke.md").read_text()

    executor.batches.clear()  # everything finished and evaluated: nothing to submit
    launch(SMOKE, "local", LauncherSettings(poll_s=0.01), results, out_dir=out, show_progress=False)
    assert executor.batches == []


def test_at_most_array_parallelism_jobs_at_once(fake, tmp_path: Path):
    record, executor = fake
    settings = LauncherSettings(poll_s=0.01, array_parallelism=4)
    launch(SMOKE, "local", settings, tmp_path / "results", out_dir=tmp_path / "runs", show_progress=False)
    assert [len(batch) for batch in executor.batches] == [4, 4, 1]  # 4 jobs, then 4 more once they end, then 1


def test_a_failed_job_is_reported_with_its_log_and_the_tables_are_partial(fake, tmp_path: Path, monkeypatch):
    from decnn_cli.experiments import train as train_module

    record, executor = fake
    out, results = tmp_path / "runs", tmp_path / "results"
    runs = plan(load_recipe(SMOKE), out_dir=out)
    train = record.train

    def fails_on_the_pretrained_model(cfg, *args, name=None, **kwargs):
        if name == runs[0].folder.name:
            raise RuntimeError("CUDA out of memory")
        return train(cfg, *args, name=name, **kwargs)

    monkeypatch.setattr(train_module, "train", fails_on_the_pretrained_model)
    with pytest.raises(DecnnError) as failure:
        launch(SMOKE, "local", LauncherSettings(poll_s=0.01), results, out_dir=out, show_progress=False)
    message = str(failure.value)
    assert f"{runs[0].folder.name} failed (log: {executor.folder}" in message
    assert f"{runs[7].folder.name} needs {runs[0].folder.name}, which failed" in message  # never submitted
    assert all(spec.run not in (runs[7].folder.name, runs[8].folder.name) for b in executor.batches for spec in b)
    assert "**Partial table**" in (results / "smoke.md").read_text()
    assert not (runs[0].folder / "logs").exists() and (runs[1].folder / "logs").is_dir()


def test_a_run_held_by_another_process_is_waited_for_not_submitted(fake, tmp_path: Path, monkeypatch):
    from decnn_cli.experiments.reproduce import locking

    record, executor = fake
    out, results = tmp_path / "runs", tmp_path / "results"
    runs = plan(load_recipe(SMOKE), out_dir=out)
    elsewhere = locking.claim(runs[2].folder)  # another `decnn reproduce` trains it
    polls = []

    def the_other_process_finishes(_seconds: float) -> None:
        polls.append(1)
        if len(polls) == 2:
            runs[2].folder.mkdir(parents=True)
            (runs[2].folder / "metrics.json").write_text("{}")
            elsewhere.release()

    monkeypatch.setattr(launching.time, "sleep", the_other_process_finishes)
    launch(SMOKE, "local", LauncherSettings(poll_s=0.01), results, out_dir=out, show_progress=False)
    submitted = [spec.run for batch in executor.batches for spec in batch]
    assert runs[2].folder.name not in [name for _, name in record.trained]
    assert submitted.count(runs[2].folder.name) == 1  # once finished elsewhere, submitted only to be evaluated
    assert ("calibration", runs[2].folder.name) in {(kind, name) for _, kind, name in record.evaluated}


def test_one_job_per_shard_with_launcher_shards(fake, tmp_path: Path):
    record, executor = fake
    out, results = tmp_path / "runs", tmp_path / "results"
    runs = plan(load_recipe(SMOKE), out_dir=out)
    launch(SMOKE, "local", LauncherSettings(poll_s=0.01, shards=2), results, out_dir=out, show_progress=False)
    assert [[str(spec.shard) for spec in batch] for batch in executor.batches] == [["1/2", "2/2"]]
    assert sorted(name for _, name in record.trained) == sorted(r.folder.name for r in runs)
    assert (results / "smoke.md").is_file()


@pytest.mark.slow
def test_the_smoke_recipe_end_to_end_through_submitits_local_executor(tmp_path: Path, monkeypatch, runner):
    """Each run is a job of submitit's local executor: a process of its own that trains with train() and evaluates;
    this process waits, moves the logs into the run folders and writes the tables."""
    pytest.importorskip("submitit")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out, results = tmp_path / "runs", tmp_path / "results"
    args = ["reproduce", str(SMOKE), "--out", str(out), "--results", str(results), "-q", "--launcher", "local"]
    sets = ["--set", "launcher.poll_s=0.5", "--set", "launcher.array_parallelism=3"]
    result = runner.invoke(app, [*args, *sets])
    assert result.exit_code == 0, result.output
    assert "measured cells compared with the paper" in result.output
    comparison = pd.read_csv(results / "smoke.csv")
    measured = comparison[comparison["runs"] > 0]
    assert {"redecnn (Eq. 7: linear)", "redecnn (direct: linear)", "standard"} <= set(measured["model"])
    assert {"calibration", "attack", "ood"} <= set(measured["kind"])
    for run in plan(load_recipe(SMOKE), out_dir=out):
        assert (run.folder / "metrics.json").is_file()
        assert f"-> {run.folder}" in next((run.folder / "logs").glob("*.err")).read_text()  # the job's own line
        assert "Job completed successfully" in next((run.folder / "logs").glob("*.out")).read_text()  # submitit's
    assert not list(out.glob(".lock-*")) and not list(out.glob(".partial-*"))
