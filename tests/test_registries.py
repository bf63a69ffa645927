"""The registries are light and consistent: the CLI, method and dataset names load without torch; registry keys
are the methods' names; a key of the flat [method] section means one thing for every method that reads it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from decnn_cli.cli import app
from decnn_cli.methods import METHODS, PretrainedTerms

HEAVY = ("torch", "torchvision", "torchaudio", "torchattacks", "pandas", "sklearn", "numpy", "matplotlib")


@pytest.mark.parametrize(
    "module",
    [
        "decnn_cli.cli",
        "decnn_cli.methods",
        "decnn_cli.data",
        "decnn_cli.data.sources",
        "decnn_cli.detectors",
        "decnn_cli.config",
        "decnn_cli.resolve",
    ],
)
def test_the_cli_and_the_registries_import_no_heavy_library(module: str):
    code = f"import sys, {module}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", f"importing {module} loads {loaded.strip()}"


def test_registry_keys_are_the_methods_names():
    assert all(name == spec.name for name, spec in METHODS.items())


def test_a_key_shared_by_several_methods_has_one_default_and_type():
    seen: dict[str, tuple] = {}
    for model in [PretrainedTerms, *(spec.settings for spec in METHODS.values())]:
        for key, field in model.model_fields.items():
            mine = (field.annotation, field.default)
            assert seen.setdefault(key, mine) == mine, f"{model.__name__}.{key} differs from another method's"
            assert field.description, f"{model.__name__}.{key} has no description"


def test_methods_lists_every_method_with_its_capabilities(runner, monkeypatch):
    from decnn_cli import cli

    monkeypatch.setattr(cli.out, "width", 200)  # one line per method
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0
    for name, spec in METHODS.items():
        line = next(line for line in result.output.splitlines() if f" {name} " in line)
        assert spec.predictive in line and spec.summary in line
        assert ("decoder" in line.split(spec.predictive)[1]) is spec.uses_decoder
        assert ("sampled" in line) is spec.stochastic
        assert ("Eq. 7/8" in line) is spec.accepts_pretrained_terms
