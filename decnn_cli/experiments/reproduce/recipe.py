"""The recipe schema of ``decnn reproduce``: a table header, grid stages and evaluations around the run sections.

A recipe is a TOML file with the usual run sections (``[data]``, ``[model]``, ``[method]``, ``[train]``,
``[eval]``: the base config of every run), a ``[table]`` header, one or more ``[[grid]]`` stages (datasets x
methods x variants x seeds) and ``[[evaluations]]``. A stage may refer to another stage's checkpoint with
``@<stage>/<variant label>`` (e.g. ``method.compose_with=@pretrained/linear``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from decnn_cli.config import RUN_SECTIONS, read_toml
from decnn_cli.errors import ConfigError, DecnnError
from decnn_cli.experiments.reproduce.evaluations import EVALUATIONS
from decnn_cli.paper import PAPER


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
    kind: str = Field(description="An evaluation of decnn_cli.experiments.reproduce.evaluations.EVALUATIONS.")
    stages: list[str] | None = Field(None, description="Stages to evaluate (default: all with in_table).")
    methods: list[str] | None = Field(None, description="Only runs of these methods.")
    datasets: list[str] | None = Field(None, description="Only runs on these datasets.")
    outliers: dict[str, list[str]] = Field(
        default_factory=dict,
        description="ood: outlier sets per variant label or inlier dataset ('*' for every run).",
    )
    attack: str = "fgsm"
    eps: float = Field(0.1, ge=0.0, le=1.0, description="attack: L-inf budget on inputs in [0, 1].")
    protected: str | None = None
    split: Literal["test", "val"] = Field("test", description="fairness: the split evaluated.")
    samples: int | None = Field(None, ge=1, description="N sampled predictions per input (default: the run's).")
    limit: int | None = Field(None, ge=1, description="The first examples of each set only.")
    detectors: list[str] = Field(
        default_factory=list, description="ood: post-hoc detectors beside the sampled scores (decnn_cli.detectors)."
    )
    sampled: bool = Field(
        True,
        description="ood: false scores with the detectors alone (one forward pass per input, no sampled scores in "
        "the rows): for runs whose sampled scores another evaluation of the recipe gives.",
    )

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in EVALUATIONS:
            raise ValueError(f"unknown evaluation {kind!r}; choose from {list(EVALUATIONS)}")
        return kind

    @model_validator(mode="after")
    def _detectors_when_unsampled(self) -> Evaluation:
        if not self.sampled and (self.kind != "ood" or not self.detectors):
            raise ValueError("sampled = false is for an ood evaluation with detectors: name them in detectors")
        return self

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, detectors: list[str]) -> list[str]:
        from decnn_cli.detectors import parse_detectors

        try:
            return list(parse_detectors(detectors))
        except DecnnError as err:
            raise ValueError(str(err)) from None

    @field_validator("outliers")
    @classmethod
    def _known_outliers(cls, outliers: dict[str, list[str]]) -> dict[str, list[str]]:
        from decnn_cli.data.sources import check_outliers

        for sets in outliers.values():
            try:
                check_outliers(sets)
            except DecnnError as err:
                raise ValueError(str(err)) from None
        return outliers


class TableHeader(_Strict):
    name: str = Field(description="results/<name>.csv and .md receive the comparison with the paper.")
    title: str
    size: Literal["paper", "cpu", "smoke"]
    paper: list[str] = Field(default_factory=list, description="Paper tables compared (keys of decnn_cli.paper).")
    stand_ins: dict[str, str] = Field(
        default_factory=dict,
        description="Measured dataset -> the paper's dataset it stands in for ({fsdd = 'audiomnist'}): the paper's "
        "numbers for that dataset sit beside the measured ones, in a column that names both.",
    )
    notes: str = ""
    side_by_side: list[str] = Field(
        default_factory=list,
        description="Columns 'model:score' of one OOD ROC-AUC table per dataset, outlier sets as rows, after the "
        "comparison (e.g. 'redecnn:vote_entropy', 'standard:energy'; scores of uncertainty.SCORES or detectors).",
    )

    @field_validator("side_by_side")
    @classmethod
    def _model_and_score(cls, columns: list[str]) -> list[str]:
        bad = [c for c in columns if c.count(":") != 1 or not all(c.split(":"))]
        if bad:
            raise ValueError(f"side_by_side columns must read 'model:score', as in 'redecnn:vote_entropy'; got {bad}")
        return columns


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
