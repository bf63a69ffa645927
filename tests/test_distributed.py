"""torchrun with 2 CPU processes (gloo): both ranks train, one run folder, metrics close to one process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from decnn_cli.experiments.train import train
from decnn_cli.resolve import build_config
from tests.conftest import torchrun

ARGS = ["train", "--method", "standard", "--subset", "600", "--device", "cpu", "-q"]


@pytest.mark.slow
def test_torchrun_two_processes_match_a_single_process(tmp_path: Path):
    run, ddp = torchrun(2, ARGS, tmp_path / "ddp")
    assert (run / "model.pt").is_file()  # rank 0 alone writes (torchrun finds one run folder)
    assert ddp["world_size"] == 2
    for epoch in ddp["history"]:
        assert epoch["examples_per_rank"] == [300, 300]  # both ranks trained on their half of each epoch

    single = train(
        build_config(
            overrides=["method.name=standard", "data.subset=600", "train.device=cpu", f"out_dir={tmp_path / 'single'}"]
        ),
        show_progress=False,
    ).metrics
    # Same data, same global batch and initial weights; only the shuffling order differs (DistributedSampler).
    # Stated tolerance: 3 points of test accuracy and 0.05 of final training loss.
    assert abs(ddp["test_accuracy"] - single["test_accuracy"]) <= 3.0
    assert abs(ddp["history"][-1]["train_loss"] - single["history"][-1]["train_loss"]) <= 0.05
    assert ddp["test_accuracy"] > 85.0


@pytest.mark.slow
def test_torchrun_one_process_joins_a_process_group(tmp_path: Path):
    # torchrun with one process still trains through DDP (gloo here; NCCL on one GPU: tests/test_cuda.py).
    _, metrics = torchrun(1, ARGS, tmp_path)
    assert (metrics["world_size"], metrics["distributed_backend"]) == (1, "gloo")
    assert metrics["history"][0]["examples_per_rank"] == [600]


def test_a_process_started_alone_joins_no_group(monkeypatch):
    from decnn_cli import distributed

    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "1")
    alone = distributed.setup(torch.device("cpu"))
    assert not alone.enabled and alone.backend is None and alone.is_main
