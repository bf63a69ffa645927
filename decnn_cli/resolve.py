"""One RunConfig from a recipe, CLI options and ``--set`` overrides, checked against the registries.

``config.py`` defines the sections and knows no registry; here the dataset's defaults (batch size, epochs) are
filled in, the dataset and method names checked where their registries live, and the ``[method]`` section
reduced to what the run's method reads. Neither registry imports torch, so a bad name is reported at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from decnn_cli.config import (
    ARCHS_WITHOUT_HIDDEN_LAYERS,
    DataConfig,
    MethodConfig,
    RunConfig,
    deep_merge,
    merge_sources,
    parse_override,
    validate_config,
)
from decnn_cli.data import DATASETS, get_dataset
from decnn_cli.data.sources import check_dataset, dataset_forms
from decnn_cli.errors import ConfigError
from decnn_cli.methods import METHODS, resolve_method_section


def build_config(
    recipe: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """Resolve one RunConfig from a recipe's run sections, CLI options and ``--set`` overrides (in that order).

    ``options`` uses dotted keys (``{"method.name": "decnn"}``); ``None`` values are skipped. Any invalid key,
    value or name is one ConfigError that names it.
    """
    merged = merge_sources(recipe, options, overrides)
    data = merged.get("data")
    name = data.get("name", DataConfig().name) if isinstance(data, dict) else DataConfig().name
    if not isinstance(name, str):
        raise ConfigError(f"invalid configuration at data.name: {name!r} is not a name; choose from {dataset_forms()}")
    # A registered name, or folder:PATH / torchvision:NAME in the spelling runs record (checked before any loading).
    name = check_dataset(name)
    entry = get_dataset(name)
    # The dataset's defaults for what the user left unset (saved resolved in config.toml).
    merged = deep_merge({"data": {"batch_size": entry.batch_size}, "train": {"epochs": entry.epochs}}, merged)
    if isinstance(merged["data"], dict):
        merged["data"] = {**merged["data"], "name": name}
    explicit = {k.split(".", 1)[1] for k, v in (options or {}).items() if v is not None and k.startswith("data.")}
    explicit |= {k for text in overrides or [] for k in parse_override(text).get("data", {})}
    merged = _dataset_options(merged, name, entry.reads, explicit)
    cfg = validate_config(merged)
    method = MethodConfig.model_validate(
        _checkpoints_of_run_folders(resolve_method_section(cfg.method.model_dump(exclude_unset=True)))
    )
    cfg = cfg.model_copy(update={"method": method})
    spec = METHODS[method.name]
    if cfg.model.arch in ARCHS_WITHOUT_HIDDEN_LAYERS and spec.needs_hidden_layers:
        usable = [n for n, s in METHODS.items() if not s.needs_hidden_layers]
        raise ConfigError(
            f"invalid configuration at model.arch: arch {cfg.model.arch!r} has no hidden layers to decode; "
            f"use it with method {' or '.join(map(repr, usable))}"
        )
    if cfg.model.arch in ARCHS_WITHOUT_HIDDEN_LAYERS and spec.adversary_of(cfg).active:
        raise ConfigError(
            f"invalid configuration at method.protect_adversary_weight: arch {cfg.model.arch!r} has no hidden layer "
            "for the adversary or the mean gap to act on; use model.arch mlp or cnn"
        )
    if cfg.train.group_balance and cfg.train.pos_weight == "balanced":
        raise ConfigError(
            "invalid configuration at train.group_balance: it already draws every class evenly, so "
            "train.pos_weight = 'balanced' would weight the rare class twice; set one of them"
        )
    return cfg


# [data] keys that only some datasets read (``DatasetEntry.reads``).
ONLY_SOME_DATASETS = (
    "target",
    "negate_target",
    "holdout_attr",
    "color_correlation",
    "image_size",
    "channels",
    "split",
    "test_fraction",
    "stratify",
)


def _dataset_options(merged: dict[str, Any], name: str, reads: frozenset[str], explicit: set[str]) -> dict[str, Any]:
    """``merged`` without the dataset-specific [data] keys the dataset does not read. Asked for on the command line
    (an option or ``--set``) such a key is an error: the run would record it and change nothing. From a recipe's
    shared [data] section (which serves every dataset of its grid) it is dropped."""
    data = merged.get("data")
    if not isinstance(data, dict):
        return merged
    unread = [k for k in ONLY_SOME_DATASETS if k in data and k not in reads]
    for key in unread:
        if key in explicit:
            readers = sorted(n for n, e in DATASETS.items() if key in e.reads)
            raise ConfigError(
                f"invalid configuration at data.{key}: dataset {name!r} has no {key} to choose; "
                f"drop it (datasets that read it: {', '.join(readers)})"
            )
    return {**merged, "data": {k: v for k, v in data.items() if k not in unread}}


def _checkpoints_of_run_folders(section: dict[str, Any]) -> dict[str, Any]:
    """``compose_with`` / ``protect_with`` given as a run folder: its ``model.pt`` (a folder without one is an
    error that says so); checkpoint paths, and paths not written yet (a recipe's later runs), stay as they are."""
    for key in ("compose_with", "protect_with"):
        folder = section.get(key)
        if folder is None or not Path(folder).is_dir():
            continue
        checkpoint = Path(folder) / "model.pt"
        if not checkpoint.is_file():
            raise ConfigError(
                f"invalid configuration at method.{key}: {folder} is a folder without model.pt; pass a run folder "
                "written by `decnn train` or its model.pt"
            )
        section = {**section, key: str(checkpoint)}
    return section
