"""``decnn reproduce RECIPE``: run a recipe's grid of trainings and evaluations, resumably, and compare the
measured numbers with the paper's.

- ``recipe``: the recipe schema (table header, grid stages, evaluations) and ``load_recipe``;
- ``planning``: the runs of a recipe and the folders they are keyed to;
- ``locking``: claims with leases, so that processes on one machine or many split a recipe's runs and evaluations;
- ``sharding``: ``--shard K/N``, a deterministic slice of the runs for any scheduler to start;
- ``running``: training runs in this process, and the tables once everything is evaluated;
- ``evaluations``: the ``EVALUATIONS`` registry and how one evaluation runs over a recipe's runs;
- ``launching``: ``--launcher slurm``, the runs as cluster jobs through submitit;
- ``comparison``: measured numbers beside the paper's, as CSV and Markdown.

A finished run (one with ``metrics.json``) is never trained twice, and a killed run leaves only a
``.partial-*`` folder that the next attempt replaces.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from decnn_cli.errors import ConfigError
from decnn_cli.experiments.reproduce.comparison import compare_with_paper, comparison_markdown
from decnn_cli.experiments.reproduce.evaluations import EVALUATIONS, evaluate, staging_name
from decnn_cli.experiments.reproduce.planning import (
    PlannedRun,
    config_hash,
    dry_run_lines,
    folder_key,
    plan,
    runs_for,
)
from decnn_cli.experiments.reproduce.recipe import Evaluation, Recipe, load_recipe
from decnn_cli.experiments.reproduce.running import recorded, train_runs, unfinished, write_comparison
from decnn_cli.experiments.reproduce.sharding import Shard

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
    shard: Shard | None = None,
) -> pd.DataFrame | list[PlannedRun] | None:
    """Train what is missing, evaluate what is missing, write results/<name>.csv and .md; or list the plan.

    With ``partial``, nothing is trained: only the runs already finished are evaluated, and they are tabled with
    the runs whose rows the staging tables already hold (runs trained elsewhere, or whose folders were removed);
    the Markdown names the runs the tables lack.

    With ``shard`` (the K-th of N), only the shard's runs are trained and evaluated, with any run they need that no
    process has trained yet; the shard that finds the whole grid trained and evaluated when it ends writes the tables,
    the others return None (``--partial`` writes them at any time).
    """
    if partial and shard is not None:
        raise ConfigError("--partial trains nothing and tables every finished run: run it without --shard")
    recipe = load_recipe(recipe_path)
    runs = plan(recipe, data_root, out_dir, overrides)
    mine = shard.of(runs) if shard is not None else runs
    if dry_run:
        return mine
    from rich.console import Console

    from decnn_cli.engine import progress_bar

    console = console or Console(stderr=True)
    staging = results_dir / "evaluations"
    missing = [r for r in runs if not r.done and not recorded(recipe, r, staging)] if partial else []
    if partial:
        mine = [r for r in runs if r.done]
    title = recipe.table.name if shard is None else f"{recipe.table.name} {shard}"
    with progress_bar(disable=not show_progress) as progress:
        if not partial:
            train_runs(mine, runs, console, progress, title)
        evaluations = progress.add_task(f"{title}: evaluations", total=len(recipe.evaluations), status="")
        for evaluation in recipe.evaluations:
            progress.update(evaluations, status=evaluation.kind)
            evaluate(evaluation, runs_for(evaluation, mine), staging, data_root, device, progress)
            progress.advance(evaluations)
    if shard is not None and unfinished(recipe, runs, staging):
        return None  # another shard is still at work: the last to finish writes the tables
    return write_comparison(recipe, [r for r in runs if r not in missing] if partial else runs, results_dir, missing)


__all__ = [
    "EVALUATIONS",
    "Evaluation",
    "PlannedRun",
    "Recipe",
    "Shard",
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
