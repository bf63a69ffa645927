"""The CUDA path: a bf16 training step of every method, the sampler, torch.compile with channels_last, and
DistributedDataParallel over NCCL on one GPU. Marked ``cuda`` and skipped without a GPU; benchmarks/gpu.sh runs them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from decnn_cli import engine
from decnn_cli.cli import app
from decnn_cli.data.spec import DataSpec
from decnn_cli.methods import METHODS, LossContext, get_method
from decnn_cli.resolve import build_config
from decnn_cli.tasks import TaskHead
from tests.conftest import torchrun
from tests.test_uncertainty import straightforward_paths

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu.sh runs these)"),
]

CUDA = torch.device("cuda")
SPEC = DataSpec("toy", (1, 8, 8), 4, "multiclass", tuple("abcd"), (0.5,), (0.5,))
SMALL = ["model.depth=3", "model.width=16", "model.decoder_width=32", "method.recursion_depth=2"]


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_trains_a_bf16_step_on_cuda(name: str):
    cfg = build_config(overrides=[f"method.name={name}", *SMALL])
    method = get_method(name)
    torch.manual_seed(0)
    model = method.network(cfg, SPEC).to(CUDA).train()
    ctx = LossContext(method.settings_of(cfg), TaskHead("multiclass"), num_train=100)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.rand(6, *SPEC.in_shape, device=CUDA), torch.arange(6, device=CUDA) % 4
    with engine.autocast(CUDA, "bf16"):
        terms = method.loss(model, x, y, ctx)
    assert terms.logits.dtype == torch.bfloat16 and torch.isfinite(terms.total)
    terms.total.backward()
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    model.eval()
    with torch.no_grad(), engine.autocast(CUDA, "bf16"):
        samples = method.sample(model, x, 5, method.settings_of(cfg))
    assert samples.device.type == "cuda" and samples.shape[1:] == (6, 4) and torch.isfinite(samples.float()).all()


def test_sampler_on_cuda_gives_the_straightforward_logits_for_the_same_draws():
    cfg = build_config(overrides=["method.name=redecnn", *SMALL])
    method = get_method("redecnn")
    settings = method.settings_of(cfg)
    torch.manual_seed(0)
    model = method.network(cfg, SPEC).to(CUDA).eval()
    x = torch.rand(40, *SPEC.in_shape, device=CUDA)
    with torch.no_grad():
        torch.manual_seed(1)
        expected = straightforward_paths(model, x, 16, settings)
        torch.manual_seed(1)
        samples = method.sample(model, x, 16, settings)
        with engine.autocast(CUDA, "bf16"):
            torch.manual_seed(1)
            half = method.sample(model, x, 16, settings)
    torch.testing.assert_close(samples, expected, rtol=1e-4, atol=1e-5)  # fp32 GEMMs over fewer rows may round apart
    assert torch.equal(samples.argmax(-1), expected.argmax(-1))
    assert (half.float().argmax(-1) == expected.argmax(-1)).float().mean() > 0.9  # bf16: the same paths, rounded


def test_train_compiled_channels_last_bf16_cnn_with_the_resnet_decoder(runner, tmp_path: Path):
    args = ["train", "--method", "redecnn", "--arch", "cnn", "--decoder", "resnet", "--device", "cuda"]
    args += ["--precision", "bf16", "--subset", "64", "--epochs", "1", "-q", "--out", str(tmp_path)]
    for setting in ("model.depth=2", "model.decoder_channels=8", "method.recursion_depth=2", "eval.samples=4"):
        args += ["--set", setting]
    result = runner.invoke(app, [*args, "--set", "train.compile=true", "--set", "train.channels_last=true"])
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["precision"] == "bf16" and metrics["device"].startswith("cuda")
    assert 0.0 <= metrics["test_accuracy"] <= 100.0
    loaded = engine.load_checkpoint(run / "model.pt", "cpu")  # compiled weights load into a plain model on CPU
    assert loaded.cfg.train.compile and loaded.cfg.train.precision == "bf16"


def test_torchrun_one_process_trains_with_ddp_over_nccl(tmp_path: Path):
    train = ["train", "--method", "redecnn", "--subset", "256", "--device", "cuda", "--precision", "bf16", "-q"]
    _, metrics = torchrun(1, train, tmp_path)
    assert (metrics["world_size"], metrics["distributed_backend"], metrics["device"]) == (1, "nccl", "cuda:0")
    assert metrics["test_accuracy"] > 50.0
