"""The comparison of a recipe's measured numbers with the paper's: one row per paper value, and its Markdown."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from decnn_cli.detectors import DETECTORS
from decnn_cli.paper import PaperValue
from decnn_cli.results import markdown_table

if TYPE_CHECKING:
    from decnn_cli.experiments.reproduce.planning import PlannedRun
    from decnn_cli.experiments.reproduce.recipe import Recipe

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
    *(("ood", f"auroc_{name}") for name in DETECTORS),
}


def compare_with_paper(
    rows: list[dict[str, Any]], paper: list[PaperValue], stand_ins: dict[str, str] | None = None
) -> pd.DataFrame:
    """One row per paper value (and per measured cell of the same metrics): measured mean/std/n, paper, diff.

    Without paper values, the measured cells of ``HEADLINE_METRICS`` are reported on their own. ``stand_ins`` maps
    a measured dataset to the paper's dataset it stands in for: that dataset's paper values are compared with the
    measured one's, and ``paper_dataset`` names where they come from.
    """
    paper_of = {theirs: ours for ours, theirs in (stand_ins or {}).items()}
    paper = [replace(p, dataset=paper_of[p.dataset]) if p.dataset in paper_of else p for p in paper]
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
                "paper_dataset": (stand_ins or {}).get(dataset, dataset),
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
    "paper_dataset",
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


def _run_name(run: PlannedRun) -> str:
    """'celeba redecnn (Wearing_Hat) seed 0': the variant is named even where the table hides it."""
    variant = "" if run.variant == "none" else f" ({run.variant})"
    return f"{run.dataset} {run.method}{variant} seed {run.seed}"


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
        names = ", ".join(_run_name(r) for r in missing)
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
        stand_ins = recipe.table.stand_ins
        columns = [f"{d} (paper: {stand_ins[d]})" if d in stand_ins else d for d in datasets]
        frame = pd.DataFrame([[cells.get((r, d), "-") for d in datasets] for r in rows], index=rows, columns=columns)
        frame.index.name = "model"
        parts += [markdown_table(frame), ""]
    if recipe.table.side_by_side:
        parts += side_by_side_markdown(comparison, recipe.table.side_by_side)
    return "\n".join(parts)


def side_by_side_markdown(comparison: pd.DataFrame, columns: list[str]) -> list[str]:
    """One OOD ROC-AUC table per dataset: rows = outlier sets, columns = ``model:score`` as listed; cells = mean
    (std over seeds) of ``auroc_<score>`` of that model's runs. Markdown lines.

    An attack evaluation's rows join the OOD rows of the same attack: ``attack:fgsm@0.25`` of an OOD evaluation
    and the rows of an ``attack`` evaluation of FGSM share the row ``fgsm``."""
    ood = comparison[comparison["kind"].isin(["ood", "attack"])]
    attacked = (ood["kind"] == "attack") | ood["outlier"].str.startswith("attack:")
    ood = ood.assign(outlier=ood["outlier"].map(lambda o: re.sub(r"^attack:([^@]+)(@.*)?$", r"\1", o)))
    attacks = set(ood.loc[attacked, "outlier"])
    parts = [
        "## Side by side: OOD ROC-AUC (higher = better detection; 0.5 = chance)",
        "",
        "Columns are model: score; every score is oriented higher = more uncertain / more OOD.",
        "",
    ]
    for dataset in sorted(set(ood["dataset"])):
        part = ood[ood["dataset"] == dataset]
        outliers = sorted(
            set(part["outlier"]),
            key=lambda o: (o in attacks, o.startswith("corrupt"), o != "corrupt (mean)", o),
        )
        cells = []
        for outlier in outliers:
            row = []
            for column in columns:
                model, score = column.split(":")
                hit = part[
                    (part["outlier"] == outlier) & (part["model"] == model) & (part["metric"] == f"auroc_{score}")
                ]
                row.append(_fmt(hit["measured"].iloc[0], hit["measured_std"].iloc[0], 3) if len(hit) else "-")
            cells.append(row)
        frame = pd.DataFrame(cells, index=outliers, columns=[c.replace(":", ": ") for c in columns])
        frame.index.name = f"{dataset} vs"
        parts += [f"### {dataset}", "", markdown_table(frame), ""]
    return parts
