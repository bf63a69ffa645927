"""A new method is one module and one registry line: a method written here (label smoothing) and registered in
``METHODS`` trains, is evaluated and is reproduced from a recipe, with nothing else in the suite changed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
from pydantic import Field

from decnn_cli.errors import ConfigError
from decnn_cli.experiments.calibration import CalibrationOptions, evaluate_calibration
from decnn_cli.experiments.reproduce import Recipe, load_recipe, plan, reproduce
from decnn_cli.experiments.train import train
from decnn_cli.methods import METHODS, LossTerms, MethodSettings, MethodSpec, decodable, standard
from decnn_cli.resolve import build_config

# --- what a newcomer writes: decnn_cli/methods/smoothed.py -------------------------------------------------


class SmoothedSettings(MethodSettings):
    smoothing: float = Field(0.1, ge=0.0, lt=1.0, description="Label smoothing of the cross-entropy.")


def build(model_cfg, settings: SmoothedSettings, spec):
    from decnn_cli.models import Network, build_classifier

    return Network(build_classifier(model_cfg, spec))


def loss(model, x, y, ctx) -> LossTerms:
    from torch.nn import functional as F

    logits, _ = model(x)
    ce = F.cross_entropy(logits, y, label_smoothing=ctx.settings.smoothing)
    return LossTerms(ce, {"ce": ce.detach()}, logits)


SMOOTHED = MethodSpec(
    name="smoothed",
    summary="plain classifier trained on label-smoothed targets",
    settings=SmoothedSettings,
    build=build,
    loss=loss,
    sample=standard.sample_point,
    point=standard.point,
    needs_hidden_layers=False,
)

# --- and the one registry line -------------------------------------------------------------------------------


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> MethodSpec:
    monkeypatch.setitem(METHODS, SMOOTHED.name, SMOOTHED)
    return SMOOTHED


TINY = ["data.subset=60", "train.epochs=1", "model.depth=2", "model.width=16", "eval.samples=2"]

RECIPE = """
[table]
name = "smoothed"
title = "A method added in one module"
size = "smoke"

[data]
subset = 60
[model]
depth = 2
width = 16
[method]
smoothing = 0.1
recursion_depth = 2    # read by other methods of a shared base section, ignored by this one
[train]
epochs = 1

[[grid]]
datasets = ["digits"]
methods = ["smoothed"]
variants = [{ label = "0.1" }, { label = "0.3", set = ["method.smoothing=0.3"] }]

[[evaluations]]
kind = "calibration"

[[evaluations]]
kind = "training"
"""


def test_an_unregistered_methods_key_is_an_error():
    with pytest.raises(ConfigError, match=r"method\.smoothing: unknown key"):
        build_config(overrides=["method.smoothing=0.3"])


def test_a_registered_method_trains_and_is_evaluated(registered, tmp_path: Path):
    cfg = build_config(overrides=["method.name=smoothed", "method.smoothing=0.3", f"out_dir={tmp_path}", *TINY])
    assert registered.settings_of(cfg) == SmoothedSettings(smoothing=0.3)
    assert cfg.method.model_dump() == {"name": "smoothed", "smoothing": 0.3}  # only what the method reads
    outcome = train(cfg, show_progress=False)
    assert outcome.run_dir.name.startswith("digits__smoothed__seed0__")
    assert 0.0 <= outcome.metrics["test_accuracy"] <= 100.0 and outcome.metrics["history"][0]["train_loss"] > 0
    rows = evaluate_calibration(
        [outcome.run_dir], CalibrationOptions(results_dir=tmp_path / "res", show_progress=False)
    )
    assert rows[0]["method"] == "smoothed" and 0.0 <= rows[0]["ece"] <= 100.0


def test_a_registered_method_is_reproduced_from_a_recipe(registered, tmp_path: Path):
    recipe = tmp_path / "smoothed.toml"
    recipe.write_text(RECIPE)
    runs = plan(load_recipe(recipe), out_dir=tmp_path / "runs")
    assert len({r.folder.name for r in runs}) == 2  # its own setting keys its folders
    comparison = reproduce(recipe, tmp_path / "results", out_dir=tmp_path / "runs", show_progress=False)
    accuracy = comparison[(comparison["metric"] == "accuracy") & (comparison["runs"] > 0)]
    assert set(accuracy["model"]) == {"smoothed (0.1)", "smoothed (0.3)"}
    assert all(r.done for r in runs)
    training = pd.read_csv(tmp_path / "results" / "evaluations" / "training.csv")
    assert set(training["method"]) == {"smoothed"}


def test_a_copy_of_decnn_under_another_name_is_keyed_on_its_own_settings(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(METHODS, "decnn-copy", dataclasses.replace(decodable.DECNN, name="decnn-copy"))

    recipe = Recipe.model_validate(
        {
            "table": {"name": "t", "title": "t", "size": "smoke"},
            "grid": [{"datasets": ["digits"], "methods": ["decnn-copy"]}],
        }
    )

    def folder(*overrides: str) -> Path:
        return plan(recipe, overrides=list(overrides))[0].folder

    assert folder("method.beta=1") != folder("method.beta=100")
    assert folder("model.decoder=mlp") != folder("model.decoder=resnet")
    assert folder("method.dropout=0.5") == folder()  # a key only other methods read
