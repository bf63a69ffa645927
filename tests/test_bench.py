"""decnn bench: runs end to end and reports FLOPs and ratios (no timing is asserted: these machines are noisy)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from decnn_cli.cli import app


def test_bench_writes_ratios_and_flops_for_each_method(runner, tmp_path: Path):
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
            "--repeats", "2",
            "--sample-inputs", "16",
            "--set", "model.depth=2",
            "--set", "model.width=16",
            "--set", "model.decoder_width=16",
            "--set", "method.recursion_depth=2",
            "--results", str(tmp_path),
            "--table", "tiny-bench",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "tiny-bench.csv").set_index("model")
    assert set(rows.index) == {"standard", "redecnn", "ensemble"}  # standard is always measured as the reference
    assert rows.loc["standard", "step_ratio"] == 1.0
    assert (rows["step_ms"] > 0).all() and (rows["sample_ms_per_1k"] > 0).all()
    # FLOPs are counted, not timed: ReDecNN's step holds D + 1 passes of f and D decodes, the ensemble's 2 members.
    assert rows.loc["redecnn", "gflop_per_step"] > 3 * rows.loc["standard", "gflop_per_step"]
    assert rows.loc["ensemble", "gflop_per_step"] == 2 * rows.loc["standard", "gflop_per_step"]
    assert (tmp_path / "tiny-bench.md").read_text().count("|") > 10
