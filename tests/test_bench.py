"""decnn bench: runs end to end, reports FLOPs, ratios and the cost of uncertainty per precision, and sizes itself
to the device (no timing is asserted: these machines are noisy)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from decnn_cli import engine
from decnn_cli.cli import app
from decnn_cli.experiments.bench import EVAL_BATCH, BenchOptions, plan

CPU = torch.device("cpu")


def test_bench_writes_ratios_flops_and_uncertainty_costs_for_each_method_and_precision(runner, tmp_path: Path):
    result = runner.invoke(
        app,
        [
            "bench",
            "--method", "redecnn",
            "--method", "ensemble",
            "--decoder", "mlp",
            "--shape", "1x8x8",
            "--batch", "8",
            "-n", "2",
            "-n", "3",
            "--repeats", "2",
            "--sample-inputs", "16",
            "--precision", "fp32",
            "--precision", "bf16",
            "--set", "model.depth=2",
            "--set", "model.width=16",
            "--set", "model.decoder_width=16",
            "--set", "method.recursion_depth=2",
            "--results", str(tmp_path),
            "--table", "tiny-bench",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "mlp decoder: training batch 8, 2 timed steps; uncertainty at N = 2, 3 on 16 inputs" in result.output
    rows = pd.read_csv(tmp_path / "tiny-bench.csv").set_index(["model", "precision"])
    # standard is always measured as the reference, at each precision
    assert set(rows.index) == {(m, p) for m in ("standard", "redecnn", "ensemble") for p in ("fp32", "bf16")}
    assert (rows.xs("standard", level="model")["step_ratio"] == 1.0).all()
    assert (rows["step_ms"] > 0).all() and (rows["flop_utilisation"] > 0).all()
    assert (rows["sample_ms_per_input_n2"] > 0).all() and (rows["sample_ms_per_input_n3"] > 0).all()
    assert rows["bf16_speedup"].xs("bf16", level="precision").gt(0).all()
    assert rows["bf16_speedup"].xs("fp32", level="precision").isna().all()
    # FLOPs are counted, not timed: ReDecNN's step holds D + 1 passes of f and D decodes, the ensemble's 2 members.
    fp32 = rows.xs("fp32", level="precision")
    assert fp32.loc["redecnn", "gflop_per_step"] > 3 * fp32.loc["standard", "gflop_per_step"]
    assert fp32.loc["ensemble", "gflop_per_step"] == 2 * fp32.loc["standard", "gflop_per_step"]
    markdown = (tmp_path / "tiny-bench.md").read_text()
    assert "bf16" in markdown and "ms per input at N = 3" in markdown


@pytest.mark.parametrize("native", [True, False])
def test_bench_with_no_options_sizes_itself_to_a_cpu(monkeypatch, native: bool):
    monkeypatch.setattr(engine, "bf16_is_fast", lambda device: native)
    sizings, precisions = plan(BenchOptions(), CPU)
    assert [s.decoder for s in sizings] == ["mlp"]  # the ResNet decoder only when asked for
    (mlp,) = sizings
    assert (mlp.batch, mlp.samples, mlp.sample_inputs) == (128, (32, 128), EVAL_BATCH)
    assert precisions == (("fp32", "bf16") if native else ("fp32",))

    sizings, _ = plan(BenchOptions(decoders=("mlp", "resnet")), CPU)
    resnet = sizings[1]
    assert resnet.batch < 32 and max(resnet.samples) < 32 and resnet.sample_inputs < EVAL_BATCH
    assert "CPU-sized" in resnet.note
    sizings, _ = plan(BenchOptions(decoders=("resnet",), batch=32, samples=(2,)), CPU)  # what is given is kept
    assert (sizings[0].batch, sizings[0].samples) == (32, (2,))
    (sized,) = plan(BenchOptions(overrides=("eval.batch_size=100",)), CPU)[0]  # eval-ood's batching, as configured
    assert (sized.sample_inputs, sized.eval_batch) == (100, 100) and "in batches of 100" in sized.note
