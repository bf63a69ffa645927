"""Training a recipe's runs in this process, and writing its tables once every run is trained and evaluated.

A run is trained by one process at a time, whichever host it is on (``locking.claim``). A run that reads an
earlier run's checkpoint (``PlannedRun.needs``) waits until that run is finished, and trains it first itself when no
process has claimed it: a shard whose partner has not started yet is not held up, and still nothing is trained twice.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from decnn_cli.experiments.reproduce.evaluations import lacking, staged_rows
from decnn_cli.experiments.reproduce.locking import claim
from decnn_cli.experiments.reproduce.planning import PlannedRun, runs_for
from decnn_cli.results import PARTIAL_PREFIX

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from decnn_cli.experiments.reproduce.recipe import Recipe

# Seconds between looks at runs that other processes are training.
POLL_S = 10.0


def train_runs(
    mine: list[PlannedRun], runs: list[PlannedRun], console: Console, progress: Progress, title: str
) -> None:
    """Train every unfinished run of ``mine`` (in plan order), waiting for those another process trains; a run of
    ``runs`` that one of them needs is trained here too when no process has claimed it."""
    by_folder = {r.folder: r for r in runs}
    todo = [r for r in mine if not r.done]
    finished = len(mine) - len(todo)
    task = progress.add_task(f"{title}: runs", total=len(mine), completed=finished, status=f"{finished} finished")
    while todo := [r for r in todo if not r.done]:
        needed = [r for r in _needed(todo, by_folder) if r not in todo]
        for run in [*todo, *needed]:
            if ready(run, by_folder) and train_one(run, console, progress, task) != "held":
                break
        else:  # every run left is trained elsewhere, or waits for a run trained elsewhere
            progress.update(task, status=f"waiting for {len(todo)} run(s) trained by other processes")
            time.sleep(POLL_S)
        progress.update(task, completed=sum(r.done for r in mine))


def train_one(
    run: PlannedRun, console: Console, progress: Progress | None = None, task: TaskID | None = None
) -> Literal["trained", "finished", "held"]:
    """Train ``run`` with ``train()`` unless it is finished ("finished") or another process holds it ("held")."""
    from decnn_cli.experiments.train import train

    held = claim(run.folder)
    if held is None:
        return "held"
    with held:
        if run.done:  # finished by another process between our look and our claim
            return "finished"
        if progress is not None and task is not None:
            progress.update(task, status=f"{run.dataset} {run.model} seed {run.seed}")
        # Whatever an earlier attempt left (a folder without metrics.json, a partial folder) belongs to a process that
        # has ended or lost its claim: start afresh.
        if run.folder.exists():
            shutil.rmtree(run.folder)
        shutil.rmtree(run.folder.parent / f"{PARTIAL_PREFIX}{run.folder.name}", ignore_errors=True)
        train(run.cfg, console, show_progress=progress is not None, progress=progress, name=run.folder.name)
    return "trained"


def ready(run: PlannedRun, by_folder: dict[Path, PlannedRun]) -> bool:
    """Whether every planned run that ``run`` needs is finished."""
    return all(by_folder[f].done for f in run.needs if f in by_folder)


def _needed(todo: list[PlannedRun], by_folder: dict[Path, PlannedRun]) -> list[PlannedRun]:
    """The unfinished runs that ``todo`` needs, directly or through each other, in plan order."""
    found: dict[Path, PlannedRun] = {}
    stack = [f for run in todo for f in run.needs]
    while stack:
        folder = stack.pop()
        if folder in found or folder not in by_folder or by_folder[folder].done:
            continue
        found[folder] = by_folder[folder]
        stack.extend(found[folder].needs)
    order = {folder: i for i, folder in enumerate(by_folder)}
    return sorted(found.values(), key=lambda r: order[r.folder])


def unfinished(recipe: Recipe, runs: list[PlannedRun], staging: Path) -> list[PlannedRun]:
    """The runs not yet trained, or trained but lacking rows of an evaluation that sees them."""
    left = {r.folder for r in runs if not r.done}
    for evaluation in recipe.evaluations:
        left |= {r.folder for r in lacking(evaluation, runs_for(evaluation, runs), staging)}
    return [r for r in runs if r.folder in left]


def recorded(recipe: Recipe, run: PlannedRun, staging: Path) -> bool:
    """Whether every evaluation of the recipe that sees ``run`` holds rows of it in its staging table."""
    evaluations = [ev for ev in recipe.evaluations if runs_for(ev, [run])]
    return bool(evaluations) and all(staged_rows(ev, [run], staging) for ev in evaluations)


def write_comparison(
    recipe: Recipe, runs: list[PlannedRun], results_dir: Path, missing: list[PlannedRun] | None = None
) -> pd.DataFrame:
    """``results/<table>.csv`` and ``.md``: the evaluations' rows of ``runs`` beside the paper's numbers; the Markdown
    names the ``missing`` runs the tables lack."""
    from decnn_cli.experiments.reproduce.comparison import compare_with_paper, comparison_markdown
    from decnn_cli.paper import PAPER
    from decnn_cli.results import write_text_atomic

    staging = results_dir / "evaluations"
    rows = [row for ev in recipe.evaluations for row in staged_rows(ev, runs_for(ev, runs), staging)]
    paper = [value for table in recipe.table.paper for value in PAPER[table]]
    comparison = compare_with_paper(rows, paper, recipe.table.stand_ins)
    write_text_atomic(results_dir / f"{recipe.table.name}.csv", comparison.to_csv(index=False))
    write_text_atomic(results_dir / f"{recipe.table.name}.md", comparison_markdown(recipe, comparison, missing))
    return comparison
