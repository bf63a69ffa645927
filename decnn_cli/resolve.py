"""One RunConfig from a recipe, CLI options and ``--set`` overrides, checked against the registries.

``config.py`` defines the sections and knows no registry; here the dataset's defaults (batch size, epochs) are
filled in, the dataset and method names checked where their registries live, and the ``[method]`` section
reduced to what the run's method reads. Neither registry imports torch, so a bad name is reported at once.
"""

from __future__ import annotations

from typing import Any

from decnn_cli.config import (
    ARCHS_WITHOUT_HIDDEN_LAYERS,
    DataConfig,
    MethodConfig,
    RunConfig,
    deep_merge,
    merge_sources,
    validate_config,
)
from decnn_cli.data import get_dataset
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
    cfg = validate_config(merged)
    method = MethodConfig.model_validate(resolve_method_section(cfg.method.model_dump(exclude_unset=True)))
    cfg = cfg.model_copy(update={"method": method})
    spec = METHODS[method.name]
    if cfg.model.arch in ARCHS_WITHOUT_HIDDEN_LAYERS and spec.needs_hidden_layers:
        usable = [n for n, s in METHODS.items() if not s.needs_hidden_layers]
        raise ConfigError(
            f"invalid configuration at model.arch: arch {cfg.model.arch!r} has no hidden layers to decode; "
            f"use it with method {' or '.join(map(repr, usable))}"
        )
    return cfg
