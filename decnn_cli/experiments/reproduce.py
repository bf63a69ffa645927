"""``decnn reproduce RECIPE``: run a recipe's grid of trainings and evaluations, resumably, and compare the
measured numbers with the paper's.

A recipe is a TOML file with the usual run sections (``[data]``, ``[model]``, ``[method]``, ``[train]``,
``[eval]``: the base config of every run), a ``[table]`` header, one or more ``[[grid]]`` stages (datasets x
methods x variants x seeds) and ``[[evaluations]]``. A stage may refer to another stage's checkpoint with
``@<stage>/<variant label>`` (e.g. ``method.compose_with=@pretrained/linear``).

Run folders are named by what determines them (dataset, method, a hash of the resolved config, seed), so
recipes that share runs share folders, a finished run (one with ``metrics.json``) is never trained twice,
and a killed run leaves only a ``.partial-*`` folder that the next attempt replaces.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console

from decnn_cli.config import RUN_SECTIONS, RunConfig, build_config, config_to_dict, read_toml
from decnn_cli.engine import progress_bar
from decnn_cli.errors import ConfigError
from decnn_cli.paper import PAPER, PaperValue
from decnn_cli.results import FINISHED_MARKER, markdown_table, write_text_atomic


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variant(_Strict):
    label: str = Field("none", description="Name of the variant in tables ('none' for the plain method).")
    set: list[str] = Field(default_factory=list, description="Overrides section.key=value for this variant.")
    show: bool = Field(True, description="Whether the label is part of the model's name in tables.")


class Stage(_Strict):
    name: str = Field("main", description="Stage name, for @stage/label references.")
    datasets: list[str]
    methods: list[str]
    seeds: list[int] = Field(default_factory=lambda: [0])
    variants: list[Variant] = Field(default_factory=lambda: [Variant()])
    set: list[str] = Field(default_factory=list, description="Overrides for every run of the stage.")
    in_table: bool = Field(True, description="Whether the evaluations see this stage's runs.")


class Evaluation(_Strict):
    kind: Literal["calibration", "ood", "attack", "fairness", "training"]
    stages: list[str] | None = Field(None, description="Stages to evaluate (default: all with in_table).")
    methods: list[str] | None = Field(None, description="Only runs of these methods.")
    outliers: dict[str, list[str]] = Field(
        default_factory=dict,
        description="ood: outlier sets per variant label or inlier dataset ('*' for every run).",
    )
    attack: str = "fgsm"
    eps: float = 0.1
    protected: str | None = None
    samples: int | None = None
    limit: int | None = None


class TableHeader(_Strict):
    name: str = Field(description="results/<name>.csv and .md receive the comparison with the paper.")
    title: str
    size: Literal["paper", "cpu", "smoke"]
    paper: list[str] = Field(default_factory=list, description="Paper tables compared (keys of decnn_cli.paper).")
    notes: str = ""


class Recipe(_Strict):
    table: TableHeader
    grid: list[Stage]
    evaluations: list[Evaluation] = Field(default_factory=list)
    base: dict[str, Any] = Field(default_factory=dict)


def load_recipe(path: Path) -> Recipe:
    raw = read_toml(path)
    base = {k: raw.pop(k) for k in list(raw) if k in RUN_SECTIONS or k == "out_dir"}
    try:
        recipe = Recipe.model_validate({**raw, "base": base})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = "unknown key; check its spelling" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"recipe {path} is invalid at {where}: {message}") from None
    unknown = [t for t in recipe.table.paper if t not in PAPER]
    if unknown:
        raise ConfigError(f"recipe {path} names unknown paper table(s) {unknown}; choose from {sorted(PAPER)}")
    return recipe


@dataclass
class PlannedRun:
    stage: str
    dataset: str
    method: str
    variant: str
    seed: int
    cfg: RunConfig
    folder: Path
    in_table: bool
    show_variant: bool = True

    @property
    def done(self) -> bool:
        return (self.folder / FINISHED_MARKER).is_file()

    @property
    def model(self) -> str:
        if self.variant == "none" or not self.show_variant:
            return self.method
        return f"{self.method} ({self.variant})"


# Keys that say where a run goes, not what it learns: they do not change a run's folder. (train.compile is
# kept in the hash: compiled kernels may round differently.)
_MACHINE_KEYS = {
    ("data", "root"),
    ("data", "num_workers"),
    ("data", "download"),
    ("train", "device"),
    ("train", "log_every"),
    ("train", "channels_last"),
    ("out_dir",),
}


# Method keys that matter only to some methods: a run's folder does not change when a key it ignores does.
_DECODABLE_KEYS = {
    "beta",
    "compose_with",
    "compose_target",
    "compose_weight",
    "protect_with",
    "protect_weight",
    "protect_trains_decoder",
}
_METHOD_KEYS = {
    "decnn": _DECODABLE_KEYS,
    "redecnn": _DECODABLE_KEYS | {"alpha", "recursion_depth"},
    "dropout": {"dropout"},
    "mc-dropout": {"dropout"},
    "bayesnn": {"prior_sigma1", "prior_sigma2", "prior_pi", "posterior_rho_init"},
    "ensemble": {"ensemble_size", "recursion_depth"},
}
_DECODER_KEYS = {"decoder", "decoder_width", "decoder_channels"}
# Method keys added after runs were published: hashed only when set away from their default, so the folders
# of earlier runs keep their names.
_HASHED_WHEN_SET = {"protect_trains_decoder": True}


def config_hash(cfg: RunConfig) -> str:
    """A short hash of everything that determines a run's training: not machine-specific keys, not the
    evaluation settings, not the seed (it is in the folder name) and not keys the method ignores."""
    raw = config_to_dict(cfg)
    raw.pop("eval", None)
    raw.pop("out_dir", None)
    for section, key in (k for k in _MACHINE_KEYS if len(k) == 2):
        raw.get(section, {}).pop(key, None)
    raw["train"].pop("seed", None)
    relevant = _METHOD_KEYS.get(cfg.method.name, set()) | {"name"}
    raw["method"] = {
        k: v
        for k, v in raw["method"].items()
        if k in relevant and not (k in _HASHED_WHEN_SET and v == _HASHED_WHEN_SET[k])
    }
    if cfg.method.name not in ("decnn", "redecnn"):
        raw["model"] = {k: v for k, v in raw["model"].items() if k not in _DECODER_KEYS}
    return hashlib.sha1(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:8]


def plan(
    recipe: Recipe, data_root: Path | None = None, out_dir: Path | None = None, overrides: list[str] | None = None
) -> list[PlannedRun]:
    """Every run of the recipe, in order, with its resolved config and folder."""
    runs: list[PlannedRun] = []
    for stage in recipe.grid:
        for dataset in stage.datasets:
            for method in stage.methods:
                for variant in stage.variants:
                    for seed in stage.seeds:
                        sets = [*stage.set, *variant.set, *(overrides or [])]
                        sets = [_resolve_reference(s, runs, dataset) for s in sets]
                        options = {
                            "data.name": dataset,
                            "method.name": method,
                            "train.seed": seed,
                            "data.root": str(data_root) if data_root else None,
                            "out_dir": str(out_dir) if out_dir else None,
                        }
                        cfg = build_config(recipe.base, options, sets)
                        # Named by what determines the run (not by the variant's label), so recipes share runs.
                        folder = cfg.out_dir / f"{dataset}__{method}__{config_hash(cfg)}__seed{seed}"
                        runs.append(
                            PlannedRun(
                                stage.name,
                                dataset,
                                method,
                                variant.label,
                                seed,
                                cfg,
                                folder,
                                stage.in_table,
                                variant.show,
                            )
                        )
    return runs


def _resolve_reference(text: str, runs: list[PlannedRun], dataset: str) -> str:
    """``key=@stage/label`` -> ``key=<that run's model.pt>`` (same dataset, the stage's first seed)."""
    if "=@" not in text:
        return text
    key, ref = text.split("=@", 1)
    stage, _, label = ref.partition("/")
    for run in runs:
        if run.stage == stage and run.variant == label and run.dataset == dataset:
            return f"{key}={run.folder / 'model.pt'}"
    raise ConfigError(f"reference @{ref} matches no earlier run of stage {stage!r} on {dataset}; define it first")


def _runs_for(evaluation: Evaluation, runs: list[PlannedRun]) -> list[PlannedRun]:
    chosen = [r for r in runs if (r.stage in evaluation.stages if evaluation.stages else r.in_table)]
    return [r for r in chosen if evaluation.methods is None or r.method in evaluation.methods]


def _evaluate(
    evaluation: Evaluation, runs: list[PlannedRun], staging: Path, data_root: Path | None, device: str, progress
) -> list[dict[str, Any]]:
    """Run one evaluation over ``runs`` (skipping runs already in its staging table); return all its rows.

    Each run's evaluation is claimed like a training run, so two ``decnn reproduce`` processes that share runs
    split the work between them instead of doing it twice.
    """
    table = staging_name(evaluation)
    csv_path = staging / f"{table}.csv"
    groups: dict[tuple[str, str], list[PlannedRun]] = {}
    for run in runs:
        groups.setdefault((run.dataset, run.variant), []).append(run)
    common = {"results_dir": staging, "table": table, "data_root": data_root, "device": device, "progress": progress}
    kind = evaluation.kind
    pending: list[tuple[list[str], list[Path]]] = []  # (outlier sets, run folders) per (dataset, variant)
    for (dataset, variant), group in groups.items():
        outliers = next((evaluation.outliers[k] for k in (variant, dataset, "*") if k in evaluation.outliers), [])
        if kind != "ood" or outliers:
            pending.append((outliers, [r.folder for r in group]))
    attempted: set[Path] = set()
    while pending:
        existing = pd.read_csv(csv_path) if csv_path.exists() else pd.DataFrame(columns=["run"])
        pending = [
            (outliers, [f for f in folders if f not in attempted and not _has_rows(existing, f.name, kind, outliers)])
            for outliers, folders in pending
        ]
        pending = [(outliers, folders) for outliers, folders in pending if folders]
        # One run at a time, so that a second process can take the next one.
        claim = next(
            ((o, f) for o, folders in pending for f in folders if _claim(staging / f"{table}__{f.name}")), None
        )
        if claim is None:
            if pending:  # the rest are being evaluated by another `decnn reproduce`: wait for their rows
                time.sleep(10)
            continue
        outliers, folder = claim
        attempted.add(folder)
        try:
            _run_evaluation(evaluation, [folder], outliers, common)
        finally:
            _release(staging / f"{table}__{folder.name}")
    rows: list[dict[str, Any]] = []
    if csv_path.exists():
        frame = pd.read_csv(csv_path)
        wanted = {r.folder.name: r for r in runs}
        for row in frame.to_dict("records"):
            if row["run"] in wanted:
                planned = wanted[row["run"]]
                rows.append(
                    row
                    | {
                        "kind": evaluation.kind,
                        "model": planned.model,
                        "variant": planned.variant,
                        "outlier": row.get("outlier", evaluation.attack if evaluation.kind == "attack" else ""),
                    }
                )
    return rows


def _run_evaluation(evaluation: Evaluation, folders: list[Path], outliers: list[str], common: dict[str, Any]) -> None:
    from decnn_cli.experiments import attack, calibration, fairness, ood, report

    if evaluation.kind == "calibration":
        calibration.evaluate_calibration(folders, samples=evaluation.samples, **common)
    elif evaluation.kind == "ood":
        ood.evaluate_ood(folders, outliers, samples=evaluation.samples, limit=evaluation.limit, **common)
    elif evaluation.kind == "attack":
        attack.evaluate_attack(
            folders, evaluation.attack, evaluation.eps, samples=evaluation.samples, limit=evaluation.limit, **common
        )
    elif evaluation.kind == "fairness":
        fairness.evaluate_fairness(folders, evaluation.protected, **common)
    else:
        report.report_runs(folders, common["results_dir"], common["table"])


def staging_name(evaluation: Evaluation) -> str:
    """The shared table an evaluation's per-run rows go to; its settings are part of the name, so two recipes
    asking for the same evaluation of the same run share the rows, and different settings never mix."""
    n = f"_n{evaluation.samples}" if evaluation.samples else ""
    limit = f"_l{evaluation.limit}" if evaluation.limit else ""
    if evaluation.kind == "attack":
        return f"attack_{evaluation.attack}_eps{evaluation.eps:g}{limit}{n}"
    if evaluation.kind == "ood":
        return f"ood{limit}{n}"
    if evaluation.kind == "fairness":
        return f"fairness_{evaluation.protected or 'color'}"
    return f"{evaluation.kind}{n}"


def _has_rows(existing: pd.DataFrame, run: str, kind: str, outliers: list[str]) -> bool:
    """Whether ``existing`` already holds this run's rows (for OOD: a row for every requested outlier set)."""
    mine = existing[existing["run"] == run]
    if mine.empty:
        return False
    if kind != "ood":
        return True
    from decnn_cli.data.corruptions import parse_corruption_spec

    expected = set()
    for outlier in outliers:
        if outlier.startswith("corrupt:"):
            expected |= {f"corrupt:{name}@{severity}" for name, severity in parse_corruption_spec(outlier)}
        else:
            expected.add(outlier)
    return expected <= set(mine["outlier"])


# What a recipe that compares with no paper table (e.g. the CNN variant) reports.
HEADLINE_METRICS = {
    ("calibration", "accuracy"),
    ("calibration", "ece"),
    ("calibration", "misclass_auroc_vote_entropy"),
    ("calibration", "misclass_auroc_predictive_entropy"),
    ("ood", "auroc_vote_entropy"),
    ("ood", "auroc_predictive_entropy"),
    ("attack", "accuracy_adversarial"),
    ("attack", "auroc_vote_entropy"),
    ("fairness", "probe_f1"),
    ("fairness", "f1_gap"),
    ("training", "seconds_per_epoch"),
}


def compare_with_paper(rows: list[dict[str, Any]], paper: list[PaperValue]) -> pd.DataFrame:
    """One row per paper value (and per measured cell of the same metrics): measured mean/std/n, paper, diff.

    Without paper values, the measured cells of ``HEADLINE_METRICS`` are reported on their own.
    """
    measured = pd.DataFrame(rows)
    wanted = {(p.kind, p.metric) for p in paper} or HEADLINE_METRICS
    records: dict[tuple, dict[str, Any]] = {}
    if not measured.empty:
        measured["outlier"] = measured["outlier"].fillna("").astype(str)
        for kind, metric in sorted(wanted):
            part = measured[measured["kind"] == kind]
            if metric not in part:
                continue
            for (dataset, model, outlier), values in part.groupby(["dataset", "model", "outlier"])[metric]:
                values = values.dropna()
                if values.empty:
                    continue
                records[(kind, metric, dataset, model, outlier)] = {
                    "measured": float(values.mean()),
                    "measured_std": float(values.std()) if len(values) > 1 else float("nan"),
                    "runs": len(values),
                }
    out = []
    for key in sorted({*records, *((p.kind, p.metric, p.dataset, p.model, p.outlier) for p in paper)}):
        kind, metric, dataset, model, outlier = key
        ref = next((p for p in paper if (p.kind, p.metric, p.dataset, p.model, p.outlier) == key), None)
        got = records.get(key, {"measured": float("nan"), "measured_std": float("nan"), "runs": 0})
        out.append(
            {
                "paper_table": ref.table if ref else "",
                "kind": kind,
                "metric": metric,
                "dataset": dataset,
                "model": model,
                "outlier": outlier,
                **got,
                "paper": ref.value if ref else float("nan"),
                "paper_std": ref.std if ref and ref.std is not None else float("nan"),
                "difference": got["measured"] - ref.value if ref else float("nan"),
            }
        )
    return pd.DataFrame(out, columns=COMPARISON_COLUMNS)


COMPARISON_COLUMNS = [
    "paper_table",
    "kind",
    "metric",
    "dataset",
    "model",
    "outlier",
    "measured",
    "measured_std",
    "runs",
    "paper",
    "paper_std",
    "difference",
]


def _fmt(value: float, std: float, digits: int) -> str:
    if pd.isna(value):
        return "-"
    return f"{value:.{digits}f}" + ("" if pd.isna(std) else f" ({std:.{digits}f})")


def comparison_markdown(recipe: Recipe, comparison: pd.DataFrame, missing: list[PlannedRun] | None = None) -> str:
    """Per paper table and metric: rows = model (and outlier), columns = dataset; 'measured | paper | diff'."""
    parts = [
        f"# {recipe.table.title}",
        "",
        f"Recipe size: **{recipe.table.size}**. {recipe.table.notes}".strip(),
        "",
        "Cells: measured mean (std over seeds) / paper / difference. '-' = not measured or not in the paper.",
        "",
    ]
    if missing:
        names = ", ".join(f"{r.dataset} {r.model} seed {r.seed}" for r in missing)
        parts += [f"**Partial table**: without these unfinished runs of the recipe: {names}.", ""]
    for (kind, metric), block in comparison.groupby(["kind", "metric"], sort=False):
        digits = 2 if metric in ("accuracy", "ece", "seconds_per_epoch") or metric.startswith(("ap_", "ece_")) else 3
        tables = sorted({t for t in block["paper_table"] if t})
        parts += [f"## {metric} ({kind}){' - paper Table ' + ', '.join(tables) if tables else ''}", ""]
        block = block.assign(row=block["model"] + block["outlier"].map(lambda o: f" vs {o}" if o else ""))
        cells = {}
        for record in block.to_dict("records"):
            diff = "-" if pd.isna(record["difference"]) else f"{record['difference']:+.{digits}f}"
            paper = "-" if pd.isna(record["paper"]) else f"{record['paper']:.{digits}f}"
            cells[(record["row"], record["dataset"])] = (
                f"{_fmt(record['measured'], record['measured_std'], digits)} / {paper} / {diff}"
            )
        rows = sorted({r for r, _ in cells}, key=lambda r: (r.split(" vs ")[-1] if " vs " in r else "", r))
        datasets = sorted({d for _, d in cells})
        frame = pd.DataFrame([[cells.get((r, d), "-") for d in datasets] for r in rows], index=rows, columns=datasets)
        frame.index.name = "model"
        parts += [markdown_table(frame), ""]
    return "\n".join(parts)


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
    from decnn_cli.experiments.train import train

    console = console or Console(stderr=True)
    recipe = load_recipe(recipe_path)
    runs = plan(recipe, data_root, out_dir, overrides)
    if dry_run:
        return runs
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
            run = next((r for r in todo if not r.done and _claim(r.folder)), None)
            if run is None:  # the rest are being trained by another `decnn reproduce`: wait for them
                todo = [r for r in todo if not r.done]
                if todo:
                    time.sleep(10)
                continue
            progress.update(overall, status=f"{run.dataset} {run.model} seed {run.seed}")
            try:
                if run.folder.exists():  # left behind unfinished (no metrics.json): train it again from scratch
                    shutil.rmtree(run.folder)
                train(run.cfg, console, progress=progress, name=run.folder.name)
            finally:
                _release(run.folder)
            todo = [r for r in todo if r is not run and not r.done]
            progress.update(overall, completed=sum(r.done for r in runs))
        evaluations = progress.add_task(f"{recipe.table.name}: evaluations", total=len(recipe.evaluations), status="")
        rows: list[dict[str, Any]] = []
        for evaluation in recipe.evaluations:
            progress.update(evaluations, status=evaluation.kind)
            rows += _evaluate(evaluation, _runs_for(evaluation, runs), staging, data_root, device, progress)
            progress.advance(evaluations)
    paper = [value for table in recipe.table.paper for value in PAPER[table]]
    comparison = compare_with_paper(rows, paper)
    write_text_atomic(results_dir / f"{recipe.table.name}.csv", comparison.to_csv(index=False))
    write_text_atomic(results_dir / f"{recipe.table.name}.md", comparison_markdown(recipe, comparison, missing))
    return comparison


def _lock(folder: Path) -> Path:
    return folder.parent / f".lock-{folder.name}"


def _claim(folder: Path) -> bool:
    """Take the run for this process (a lock file holding our pid); False if another live process holds it."""
    lock = _lock(folder)
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(lock.read_text() or "0")
            os.kill(pid, 0)
            return False  # alive: someone else is training it
        except PermissionError:
            return False  # alive, another user's process
        except (ValueError, ProcessLookupError, FileNotFoundError):
            lock.unlink(missing_ok=True)  # stale lock of a killed process
            return _claim(folder)
    with os.fdopen(fd, "w") as handle:
        handle.write(str(os.getpid()))
    return True


def _release(folder: Path) -> None:
    _lock(folder).unlink(missing_ok=True)


def dry_run_lines(runs: list[PlannedRun]) -> list[str]:
    return [f"{'done' if r.done else 'todo'}  {r.stage:>10}  {r.folder.name}" for r in runs]
