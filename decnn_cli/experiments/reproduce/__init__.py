"""``decnn reproduce RECIPE``: run a recipe's grid of trainings and evaluations, resumably, and compare the
measured numbers with the paper's.

- ``recipe``: the recipe schema (table header, grid stages, evaluations) and ``load_recipe``;
- ``planning``: the runs of a recipe and the folders they are keyed to;
- ``locking``: claims with leases, so that processes on one machine or many split a recipe's runs and evaluations;
- ``evaluations``: the ``EVALUATIONS`` registry and how one evaluation runs over a recipe's runs;
- ``comparison``: measured numbers beside the paper's, as CSV and Markdown.

A finished run (one with ``metrics.json``) is never trained twice, and a killed run leaves only a
``.partial-*`` folder that the next attempt replaces.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from decnn_cli.experiments.reproduce.comparison import compare_with_paper, comparison_markdown
from decnn_cli.experiments.reproduce.evaluations import EVALUATIONS, evaluate, staging_name
from decnn_cli.experiments.reproduce.locking import claim
from decnn_cli.experiments.reproduce.planning import (
    PlannedRun,
    config_hash,
    dry_run_lines,
    folder_key,
    plan,
    runs_for,
)
from decnn_cli.experiments.reproduce.recipe import Evaluation, Recipe, load_recipe

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console


def reproduce(
    recipe_path: Path,
    results_dir: Path = Path("results"),
    data_root: Path | None = None,
    out_dir: Path | None = None,
    device: str = "auto",
    dry_run: bool = False,
    overrides: list[str] | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    partial: bool = False,
) -> pd.DataFrame | list[PlannedRun]:
    """Train what is missing, evaluate what is missing, write results/<name>.csv and .md; or list the plan.

    With ``partial``, nothing is trained: only the runs already finished are evaluated and tabled (while a
    long grid is still running elsewhere, say), and the Markdown names the runs the tables lack.
    """
    recipe = load_recipe(recipe_path)
    runs = plan(recipe, data_root, out_dir, overrides)
    if dry_run:
        return runs
    from rich.console import Console

    from decnn_cli.engine import progress_bar
    from decnn_cli.experiments.train import train
    from decnn_cli.paper import PAPER
    from decnn_cli.results import PARTIAL_PREFIX, write_text_atomic

    console = console or Console(stderr=True)
    missing = [r for r in runs if not r.done] if partial else []
    if partial:
        runs = [r for r in runs if r.done]
    todo = [r for r in runs if not r.done]
    staging = results_dir / "evaluations"
    with progress_bar(disable=not show_progress) as progress:
        overall = progress.add_task(
            f"{recipe.table.name}: runs",
            total=len(runs),
            completed=len(runs) - len(todo),
            status=f"{len(runs) - len(todo)} already finished",
        )
        while todo:
            run, held = next(((r, c) for r in todo if not r.done and (c := claim(r.folder))), (None, None))
            if run is None or held is None:  # the rest are being trained by another process: wait for them
                todo = [r for r in todo if not r.done]
                if todo:
                    time.sleep(10)
                continue
            with held:
                if not run.done:  # not finished by another process between our look and our claim
                    progress.update(overall, status=f"{run.dataset} {run.model} seed {run.seed}")
                    if run.folder.exists():  # left behind unfinished (no metrics.json): train it again from scratch
                        shutil.rmtree(run.folder)
                    # A partial folder of this name is an earlier attempt's, whose process has ended or lost its claim.
                    shutil.rmtree(run.folder.parent / f"{PARTIAL_PREFIX}{run.folder.name}", ignore_errors=True)
                    train(run.cfg, console, progress=progress, name=run.folder.name)
            todo = [r for r in todo if r is not run and not r.done]
            progress.update(overall, completed=sum(r.done for r in runs))
        evaluations = progress.add_task(f"{recipe.table.name}: evaluations", total=len(recipe.evaluations), status="")
        rows: list[dict[str, Any]] = []
        for evaluation in recipe.evaluations:
            progress.update(evaluations, status=evaluation.kind)
            rows += evaluate(evaluation, runs_for(evaluation, runs), staging, data_root, device, progress)
            progress.advance(evaluations)
    paper = [value for table in recipe.table.paper for value in PAPER[table]]
    comparison = compare_with_paper(rows, paper)
    write_text_atomic(results_dir / f"{recipe.table.name}.csv", comparison.to_csv(index=False))
    write_text_atomic(results_dir / f"{recipe.table.name}.md", comparison_markdown(recipe, comparison, missing))
    return comparison


__all__ = [
    "EVALUATIONS",
    "Evaluation",
    "PlannedRun",
    "Recipe",
    "compare_with_paper",
    "comparison_markdown",
    "config_hash",
    "dry_run_lines",
    "folder_key",
    "load_recipe",
    "plan",
    "reproduce",
    "runs_for",
    "staging_name",
]
