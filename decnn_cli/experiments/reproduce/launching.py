"""``decnn reproduce RECIPE --launcher slurm``: a recipe's runs as cluster jobs, through submitit.

Each job trains one run with ``train()`` and evaluates it, on its node (or, with ``launcher.shards=N``, is one shard
of the grid, as ``--shard K/N``), claiming both as every ``decnn reproduce`` process does. This process submits the
jobs of the runs whose dependencies are finished, at most ``array_parallelism`` at a time, waits for them with a
progress bar, moves each finished run's job logs into its run folder (``logs/``) and writes the tables; it evaluates
nothing itself, so it may run on a login node. ``--launcher local`` runs the same jobs as processes of this machine
(submitit's local executor), which needs no cluster.

The launcher settings come from ``--set launcher.key=value``; they say where runs are computed, not what they
learn, so they are no part of a run's config and never change a run folder's name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from decnn_cli.config import deep_merge, parse_override
from decnn_cli.errors import ConfigError, DecnnError
from decnn_cli.experiments.reproduce.sharding import Shard

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console
    from rich.progress import Progress

    from decnn_cli.experiments.reproduce.planning import PlannedRun
    from decnn_cli.experiments.reproduce.recipe import Recipe

Cluster = Literal["slurm", "local"]


class LauncherSettings(BaseModel):
    """How runs become jobs (``--set launcher.<key>=<value>``). Slurm-only keys are ignored by ``--launcher local``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = Field(
        None, description="Slurm partition (sbatch --partition); None: the cluster's default."
    )
    account: str | None = Field(None, description="Slurm account charged for the jobs (sbatch --account).")
    qos: str | None = Field(None, description="Slurm quality of service (sbatch --qos).")
    constraint: str | None = Field(None, description="Slurm node features required (sbatch --constraint).")
    gpus_per_run: int = Field(
        0, ge=0, description="GPUs of each job (sbatch --gpus-per-node; one node per job); a run trains on one."
    )
    cpus_per_run: int = Field(4, ge=1, description="CPU cores of each job (sbatch --cpus-per-task).")
    mem_gb: float | None = Field(None, gt=0, description="Memory of each job in GB (sbatch --mem); None: the default.")
    timeout_min: int = Field(
        240,
        ge=1,
        description="Wall-clock limit of each job in minutes (sbatch --time). A run cut short is left unfinished and "
        "is trained afresh by the next `decnn reproduce`.",
    )
    array_parallelism: int = Field(32, ge=1, description="Most jobs submitted and not yet ended at any time.")
    shards: int | None = Field(
        None,
        ge=1,
        description="Submit N jobs, each one shard of the grid (--shard K/N), instead of one job per run: fewer, "
        "longer jobs for grids of many short runs. A shard's logs stay in the job folder.",
    )
    folder: Path | None = Field(
        None,
        description="Folder of submitit's job files, and of the logs of jobs that finished no run (default: .jobs "
        "beside the run folders). A finished run's job logs move into its run folder, under logs/.",
    )
    setup: list[str] = Field(
        default_factory=list, description="Shell lines each Slurm job runs first, e.g. ['module load cuda/12.4']."
    )
    sbatch: dict[str, str | int] = Field(
        default_factory=dict,
        description='Any other sbatch option by name, e.g. {exclude = "node[1-4]"} (submitit\'s '
        "slurm_additional_parameters).",
    )
    poll_s: float = Field(10.0, gt=0, description="Seconds between looks at the jobs' states.")


LAUNCHER_PREFIX = "launcher."


def split_launcher_overrides(overrides: list[str] | None) -> tuple[list[str], list[str]]:
    """``--set`` overrides split into those of the runs' config and those of ``launcher.``."""
    runs, launcher = [], []
    for text in overrides or []:
        (launcher if text.strip().startswith(LAUNCHER_PREFIX) else runs).append(text)
    return runs, launcher


def launcher_settings(overrides: list[str]) -> LauncherSettings:
    """The launcher settings of ``launcher.key=value`` overrides; a misspelt key or bad value is one ConfigError."""
    merged: dict[str, Any] = {}
    for text in overrides:
        merged = deep_merge(merged, parse_override(text))
    try:
        return LauncherSettings.model_validate(merged.get("launcher", {}))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(["launcher", *(str(p) for p in first["loc"])])
        if first["type"] == "extra_forbidden":
            message = f"unknown key; valid keys here: {sorted(LauncherSettings.model_fields)}"
        else:
            message = first["msg"]
        raise ConfigError(f"invalid setting at {where}: {message}") from None


@dataclass(frozen=True)
class JobSpec:
    """What one job does: train and evaluate the run folder ``run``, or be ``shard`` of the grid. Paths are as
    the user gave them, resolved from ``cwd`` (a run's folder name is keyed on them, so they are not made absolute)."""

    cwd: Path
    recipe: Path
    results_dir: Path
    out_dir: Path | None
    data_root: Path | None
    device: str
    overrides: tuple[str, ...]
    run: str | None = None
    shard: Shard | None = None


def run_job(spec: JobSpec) -> str:
    """The body of a job: what ``decnn reproduce`` does for one run (or one shard), in the job's process.

    Returns "trained" or "finished" (the run was finished already; either way it is now evaluated), "held" (another
    process holds the run: it is left to it) or, for a shard, "shard".
    """
    from rich.console import Console

    from decnn_cli.experiments.reproduce import reproduce
    from decnn_cli.experiments.reproduce.evaluations import evaluate
    from decnn_cli.experiments.reproduce.planning import plan, runs_for
    from decnn_cli.experiments.reproduce.recipe import load_recipe
    from decnn_cli.experiments.reproduce.running import train_one

    os.chdir(spec.cwd)
    console = Console(stderr=True)
    overrides = list(spec.overrides)
    if spec.shard is not None:
        reproduce(
            spec.recipe,
            spec.results_dir,
            data_root=spec.data_root,
            out_dir=spec.out_dir,
            device=spec.device,
            overrides=overrides,
            console=console,
            show_progress=False,
            shard=spec.shard,
        )
        return "shard"
    recipe = load_recipe(spec.recipe)
    runs = plan(recipe, spec.data_root, spec.out_dir, overrides)
    run = next((r for r in runs if r.folder.name == spec.run), None)
    if run is None:
        raise DecnnError(f"run {spec.run} is no longer in the plan of {spec.recipe}; was the recipe edited meanwhile?")
    console.print(
        f"{run.stage}: {run.dataset} {run.model} seed {run.seed} -> {run.folder}", markup=False, soft_wrap=True
    )
    outcome = train_one(run, console)
    if outcome == "held":
        return outcome
    for evaluation in recipe.evaluations:
        if run in runs_for(evaluation, runs):
            evaluate(evaluation, [run], spec.results_dir / "evaluations", spec.data_root, spec.device)
    return outcome


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "--launcher needs submitit, which is not installed; install it with: pip install 'decnn[slurm]'"
        ) from None
    return submitit


def make_executor(cluster: Cluster, settings: LauncherSettings, folder: Path, name: str) -> Any:
    """A submitit executor for ``cluster`` with the launcher's settings; job files go to ``folder``, named by job id."""
    submitit = _submitit()
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    except RuntimeError as error:  # submitit's "Could not detect srun": not on a Slurm cluster
        raise DecnnError(
            f"--launcher {cluster} found no Slurm here ({error}); run it where sbatch and srun work, such as the "
            "cluster's login node, or use --launcher local"
        ) from None
    slurm = {
        "slurm_partition": settings.partition,
        "slurm_account": settings.account,
        "slurm_qos": settings.qos,
        "slurm_constraint": settings.constraint,
        "slurm_setup": list(settings.setup) or None,
        "slurm_additional_parameters": dict(settings.sbatch) or None,
    }
    executor.update_parameters(
        name=name,
        nodes=1,
        tasks_per_node=1,
        cpus_per_task=settings.cpus_per_run,
        gpus_per_node=settings.gpus_per_run,
        timeout_min=settings.timeout_min,
        **({"mem_gb": settings.mem_gb} if settings.mem_gb is not None else {}),
        **{key: value for key, value in slurm.items() if value is not None},
    )
    return executor


def launch(
    recipe_path: Path,
    cluster: Cluster,
    settings: LauncherSettings,
    results_dir: Path = Path("results"),
    data_root: Path | None = None,
    out_dir: Path | None = None,
    device: str = "auto",
    overrides: list[str] | None = None,
    console: Console | None = None,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Submit the recipe's unfinished runs as jobs, wait for them, and write results/<name>.csv and .md.

    A job that fails leaves its run unfinished: the tables are then written without it (named in the Markdown, as
    with ``--partial``) and a DecnnError names the failed runs and their logs.
    """
    from rich.console import Console

    from decnn_cli.engine import progress_bar
    from decnn_cli.experiments.reproduce.planning import plan
    from decnn_cli.experiments.reproduce.recipe import load_recipe
    from decnn_cli.experiments.reproduce.running import unfinished, write_comparison

    console = console or Console(stderr=True)
    recipe = load_recipe(recipe_path)
    runs = plan(recipe, data_root, out_dir, overrides)
    staging = results_dir / "evaluations"
    base = JobSpec(Path.cwd(), recipe_path, results_dir, out_dir, data_root, device, tuple(overrides or []))
    folder = (settings.folder or runs[0].folder.parent / ".jobs").resolve()
    executor = make_executor(cluster, settings, folder, f"decnn-{recipe.table.name}")
    console.print(f"{recipe.table.name}: jobs go to {cluster}; job files and logs in {folder}", highlight=False)
    failures: list[str] = []
    with progress_bar(disable=not show_progress) as progress:
        if settings.shards is not None:
            specs = [
                (f"shard {k}/{settings.shards}", replace(base, shard=Shard(k, settings.shards)))
                for k in range(1, settings.shards + 1)
            ]
            failures = _run_shard_jobs(executor, specs, progress, settings, recipe.table.name)
        else:
            failures = _run_run_jobs(executor, base, recipe, runs, staging, progress, settings)
    left = unfinished(recipe, runs, staging)
    comparison = write_comparison(recipe, runs if not left else [r for r in runs if r.done], results_dir, left)
    if failures:
        raise DecnnError(
            f"{len(failures)} job(s) did not finish; the tables lack their runs. " + "; ".join(failures) + ". Fix the "
            "cause and run the same command again: finished runs are kept."
        )
    if left:
        names = ", ".join(r.folder.name for r in left)
        raise DecnnError(
            f"the jobs ended but these runs are not finished and evaluated: {names}; run the command again"
        )
    return comparison


def _run_shard_jobs(
    executor: Any, specs: list[tuple[str, JobSpec]], progress: Progress, settings: LauncherSettings, title: str
) -> list[str]:
    """Submit one job per shard (at most ``array_parallelism`` at once) and wait for all; return the failures."""
    task = progress.add_task(f"{title}: jobs", total=len(specs), status="")
    waiting, running, failures = list(specs), {}, []
    try:
        while waiting or running:
            slots = settings.array_parallelism - len(running)
            submit, waiting = waiting[:slots], waiting[slots:]
            running |= _submit(executor, submit)
            for label, job in list(running.items()):
                if job.done():
                    del running[label]
                    if job.exception() is not None:
                        failures.append(f"{label} failed (log: {job.paths.stderr})")
                    progress.advance(task)
            progress.update(task, status=f"{len(running)} running, {len(failures)} failed")
            if running:
                time.sleep(settings.poll_s)
    except BaseException:
        _cancel(running.values())
        raise
    return failures


def _run_run_jobs(
    executor: Any,
    base: JobSpec,
    recipe: Recipe,
    runs: list[PlannedRun],
    staging: Path,
    progress: Progress,
    settings: LauncherSettings,
) -> list[str]:
    """Submit one job per run that is unfinished or lacks an evaluation, each once the runs it needs are finished and
    no other process holds it; wait for all; return the failures."""
    from decnn_cli.experiments.reproduce.locking import holder
    from decnn_cli.experiments.reproduce.running import ready, unfinished

    by_folder = {r.folder: r for r in runs}
    waiting = {r.folder: r for r in unfinished(recipe, runs, staging)}
    task = progress.add_task(f"{recipe.table.name}: jobs", total=len(waiting), status="")
    running: dict[Path, Any] = {}
    failed: dict[Path, str] = {}
    try:
        while waiting:
            ended = {folder: job for folder, job in running.items() if job.done()}
            for folder in ended:
                del running[folder]
            left = {r.folder for r in unfinished(recipe, list(waiting.values()), staging)}
            for folder, job in ended.items():
                if folder not in left:
                    _keep_logs(job, folder)
                elif job.exception() is not None:
                    failed[folder] = f"{folder.name} failed (log: {job.paths.stderr})"
                elif job.result() != "held":  # "held": another process trains it; wait for that one
                    failed[folder] = f"{folder.name}: its job ended without finishing it (log: {job.paths.stderr})"
            for folder, run in list(waiting.items()):
                if folder in running:
                    continue
                blocked = next((f for f in run.needs if f in failed), None)
                if blocked is not None and folder not in failed:
                    failed[folder] = f"{folder.name} needs {blocked.name}, which failed"
                if folder not in left or folder in failed:
                    del waiting[folder]
                    progress.advance(task)
            startable = [
                run
                for folder, run in waiting.items()
                if folder not in running and ready(run, by_folder) and holder(folder) is None
            ]
            startable = startable[: max(settings.array_parallelism - len(running), 0)]
            running |= _submit(executor, [(r.folder, replace(base, run=r.folder.name)) for r in startable])
            status = f"{len(running)} running, {len(waiting) - len(running)} waiting, {len(failed)} failed"
            progress.update(task, status=status)
            if waiting:
                time.sleep(settings.poll_s)
    except BaseException:
        _cancel(running.values())
        raise
    return list(failed.values())


def _submit(executor: Any, specs: list[tuple[Any, JobSpec]]) -> dict[Any, Any]:
    """Submit ``run_job(spec)`` for each ``(key, spec)`` in one batch (a Slurm job array); ``{key: job}``."""
    if not specs:
        return {}
    with executor.batch():
        jobs = [executor.submit(run_job, spec) for _, spec in specs]
    return {key: job for (key, _), job in zip(specs, jobs, strict=True)}


def _cancel(jobs: Any) -> None:
    """Cancel jobs still queued or running (an interrupted ``decnn reproduce`` takes its jobs with it)."""
    for job in jobs:
        with contextlib.suppress(Exception):  # best effort: the job may have ended meanwhile
            job.cancel(check=False)


def _keep_logs(job: Any, run_folder: Path) -> None:
    """Copy a finished job's stdout and stderr into ``<run folder>/logs/<job id>.{out,err}``."""
    logs = run_folder / "logs"
    for source, suffix in ((job.paths.stdout, "out"), (job.paths.stderr, "err")):
        if Path(source).is_file():
            logs.mkdir(exist_ok=True)
            shutil.copyfile(source, logs / f"{job.job_id}.{suffix}")
