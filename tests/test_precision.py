"""Mixed precision: the 'auto' rule, bf16 training steps of every method on CPU, and train.precision carried from
the config through the checkpoint to evaluation."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import torch

from decnn_cli import engine
from decnn_cli.cli import app
from decnn_cli.config import dump_toml
from decnn_cli.data.spec import DataSpec
from decnn_cli.experiments.common import load_run
from decnn_cli.methods import METHODS, LossContext, get_method
from decnn_cli.resolve import build_config
from decnn_cli.tasks import TaskHead

SPEC = DataSpec("toy", (1, 8, 8), 4, "multiclass", tuple("abcd"), (0.5,), (0.5,))
SMALL = ["model.depth=3", "model.width=16", "model.decoder_width=32", "method.recursion_depth=2"]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _train_cfg(*overrides: str):
    return build_config(overrides=list(overrides)).train


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx512f", "avx512_bf16"}, "bf16"),
        ({"avx512f", "amx_tile", "amx_bf16"}, "bf16"),
        ({"avx2", "avx512f"}, "fp32"),  # no native bf16: auto stays fp32
    ],
)
def test_auto_picks_bf16_on_a_cpu_only_with_native_bf16(monkeypatch, flags: set[str], expected: str):
    monkeypatch.setattr(engine, "_cpu_flags", lambda: frozenset(flags))
    assert engine.resolve_precision(_train_cfg("train.precision='auto'"), CPU) == expected
    assert engine.resolve_precision(_train_cfg("train.precision='fp32'"), CPU) == "fp32"
    assert engine.resolve_precision(_train_cfg("train.precision='bf16'"), CPU) == "bf16"  # asked for: emulated
    assert engine.resolve_precision(_train_cfg(), CPU) == "fp32"  # unset: as before, fp32 on CPU


def test_unset_precision_keeps_the_amp_rule_and_a_choice_overrides_the_config():
    assert engine.resolve_precision(_train_cfg(), CUDA) == "bf16"
    assert engine.resolve_precision(_train_cfg("train.amp=false"), CUDA) == "fp32"
    assert engine.resolve_precision(_train_cfg("train.precision='fp32'"), CUDA) == "fp32"  # set: amp is not read
    assert engine.resolve_precision(_train_cfg("train.precision='fp32'"), CPU, "bf16") == "bf16"


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_trains_a_bf16_step_on_cpu(name: str):
    cfg = build_config(overrides=[f"method.name={name}", *SMALL])
    method = get_method(name)
    torch.manual_seed(0)
    model = method.network(cfg, SPEC).train()
    ctx = LossContext(method.settings_of(cfg), TaskHead("multiclass"), num_train=100)
    x, y = torch.rand(6, *SPEC.in_shape), torch.arange(6) % 4
    with engine.autocast(CPU, "bf16"):
        terms = method.loss(model, x, y, ctx)
    assert terms.logits.dtype == torch.bfloat16  # the matmuls ran in bf16
    assert terms.total.dtype == torch.float32 and torch.isfinite(terms.total)
    terms.total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad(), engine.autocast(CPU, "bf16"):
        samples = method.sample(model, x, 3, method.settings_of(cfg))
    assert samples.shape[1:] == (6, 4) and torch.isfinite(samples.float()).all()


def test_precision_round_trips_through_config_checkpoint_and_evaluation(runner, tmp_path: Path):
    cfg = build_config(overrides=["train.precision='bf16'", "eval.precision='fp32'"])
    assert build_config(tomllib.loads(dump_toml(cfg))) == cfg

    out = tmp_path / "runs"
    tiny = ["--subset", "64", "--epochs", "1", "--quiet", "--set", "model.depth=3", "--set", "model.width=32"]
    result = runner.invoke(app, ["train", "--out", str(out), *tiny, "--precision", "bf16", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (run,) = out.iterdir()
    assert tomllib.loads((run / "config.toml").read_text())["train"]["precision"] == "bf16"
    assert json.loads((run / "metrics.json").read_text())["precision"] == "bf16"
    loaded = engine.load_checkpoint(run / "model.pt")
    assert loaded.cfg.train.precision == "bf16"
    assert load_run(run, "cpu").precision == "bf16"  # evaluation follows the training precision
    assert load_run(run, "cpu", "fp32").precision == "fp32"  # unless told otherwise

    evaluated = runner.invoke(
        app, ["eval-calibration", str(run), "--results", str(tmp_path / "tables"), "-q", "--precision", "fp32"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    rows = pd.read_csv(tmp_path / "tables" / "calibration.csv")
    assert rows["precision"].tolist() == ["fp32"]  # each row says how it was evaluated
    result = runner.invoke(app, ["train", "--out", str(out), *tiny, "--precision", "fp16"])
    assert result.exit_code == 2 and "fp16" in result.output
