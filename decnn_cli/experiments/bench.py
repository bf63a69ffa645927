"""``decnn bench``: training-step time, memory and FLOPs of every method side by side in one process (Table 10).

All methods share the classifier, the batch and the device; ratios are to the baseline (the plain classifier)
measured in the same run, so machine noise that is common to all of them cancels. Achieved FLOP/s is reported
as a fraction of a dense matmul peak measured in the same run (fp32 on CPU, bf16 on CUDA).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from decnn_cli import engine
from decnn_cli.data.spec import DataSpec
from decnn_cli.errors import DecnnError
from decnn_cli.methods import BASELINE, METHODS, LossContext, get_method
from decnn_cli.resolve import build_config
from decnn_cli.results import write_tables
from decnn_cli.tasks import TaskHead

SECTIONS = [
    ("step_ms", "Training step (ms)", 2),
    (
        "step_ratio",
        f"Training step time / {BASELINE}'s (Table 10 compares 1.0 : 5.9 DecNN : 7.1 ReDecNN on MNIST)",
        2,
    ),
    ("gflop_per_step", "GFLOP per training step (forward + backward)", 3),
    ("flop_utilisation", "Achieved FLOP/s as a share of the measured dense-matmul peak", 3),
    ("memory_mb", "Peak memory per step (MB): CUDA allocator peak, or saved activations on CPU", 1),
    ("sample_ms_per_1k", "Uncertainty inference: N sampled predictions per 1,000 inputs (ms)", 1),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, synchronised."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_peak(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """Dense matmul FLOP/s on this device (fp32 on CPU, bf16 on CUDA): the utilisation denominator."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        size = 8192
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = statistics.median(timed(lambda: a @ b, device, repeats, 2))
    return 2 * size**3 / seconds


def saved_activation_bytes(step: Callable[[], torch.Tensor]) -> int:
    """Bytes of the tensors autograd saves for the backward pass of one step (CPU memory proxy)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step()
    loss.backward()
    return total


@dataclass
class Subject:
    """One method ready to be measured: its training step, its sampler and what was measured once."""

    row: dict[str, Any]
    train_step: Callable[[], None]
    sample: Callable[[], None]


def prepare(
    name: str,
    decoder: str,
    spec: DataSpec,
    overrides: list[str],
    batch: int,
    samples: int,
    device: torch.device,
    amp: bool,
    sample_inputs: int = 1000,
) -> Subject:
    """Build ``name`` with ``decoder``; count its FLOPs and memory for one step; return its step and sampler."""
    cfg = build_config(overrides=[f"method.name={name}", f"model.decoder={decoder}", *overrides])
    method = get_method(name)
    settings = method.settings_of(cfg)
    engine.seed_everything(0)
    model = engine.accelerate(method.build(cfg.model, settings, spec).to(device), cfg.train, device)
    ctx = LossContext(settings, TaskHead("multiclass"), num_train=60000)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, *spec.in_shape, device=device)
    y = torch.randint(spec.num_outputs, (batch,), device=device)
    x_eval = torch.rand(sample_inputs, *spec.in_shape, device=device)

    def loss() -> torch.Tensor:
        with engine.autocast(device, amp):
            return method.loss(model, x, y, ctx).total

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()

    @torch.no_grad()
    def sample() -> None:
        model.eval()
        with engine.autocast(device, amp):
            for chunk in x_eval.split(batch):  # as evaluation does: N samples of one batch at a time
                method.sample(model, chunk, samples, settings)

    model.train()
    with FlopCounterMode(display=False) as counter:
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        train_step()
        memory = torch.cuda.max_memory_allocated(device)
    else:
        optimizer.zero_grad(set_to_none=True)
        memory = saved_activation_bytes(loss)
    row = {
        "method": name,
        "model": name,
        "decoder": decoder,
        "dataset": f"{spec.in_shape[0]}x{spec.in_shape[1]}x{spec.in_shape[2]}",
        "batch": batch,
        "samples": samples,
        "sample_inputs": sample_inputs,
        "gflop_per_step": counter.get_total_flops() / 1e9,
        "memory_mb": memory / 2**20,
        "parameters": engine.count_parameters(model),
    }
    return Subject(row, train_step, sample)


def measure_interleaved(subjects: list[Subject], device: torch.device, repeats: int, warmup: int) -> None:
    """Time the subjects round by round (one step of each per round), so that load drifting during the run
    touches every method alike; record medians and interquartile ranges in their rows."""
    for subject in subjects:
        for _ in range(warmup):
            subject.train_step()
        subject.sample()
    steps: list[list[float]] = [[] for _ in subjects]
    samples: list[list[float]] = [[] for _ in subjects]
    for round_index in range(repeats):
        for i, subject in enumerate(subjects):
            steps[i] += timed(subject.train_step, device, 1, 0)
            if round_index % 4 == 0:
                samples[i] += timed(subject.sample, device, 1, 0)
    for subject, step_times, sample_times in zip(subjects, steps, samples, strict=True):
        step = statistics.median(step_times)
        quartiles = statistics.quantiles(step_times, n=4) if len(step_times) >= 2 else [step, step, step]
        subject.row |= {
            "step_ms": 1000 * step,
            "step_ms_iqr": 1000 * (quartiles[2] - quartiles[0]),
            "achieved_gflops": subject.row["gflop_per_step"] / step,
            # timed on sample_inputs inputs, scaled to 1,000
            "sample_ms_per_1k": 1000 * statistics.median(sample_times) * 1000 / subject.row["sample_inputs"],
        }


@dataclass(frozen=True)
class BenchOptions:
    """What ``decnn bench`` measures and where it writes.

    ``methods`` default to every registered method (the baseline is always measured: ratios are to it);
    ``decoders`` to both; ``overrides`` are ``--set`` overrides of every method's config.
    """

    methods: tuple[str, ...] = ()
    decoders: tuple[str, ...] = ("mlp", "resnet")
    overrides: tuple[str, ...] = ()
    in_shape: tuple[int, int, int] = (1, 28, 28)
    batch: int = 128
    samples: int = 32
    repeats: int = 20
    warmup: int = 3
    sample_inputs: int = 1000
    device: str = "auto"
    amp: bool = True
    results_dir: Path = Path("results")
    table: str = "bench"


def run_bench(options: BenchOptions = BenchOptions()) -> list[dict[str, Any]]:
    """Measure every method for every decoder; add ratios to the baseline and the FLOP utilisation; write tables."""
    o = options
    methods = list(o.methods or METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise DecnnError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    if BASELINE not in methods:
        methods.insert(0, BASELINE)
    dev = engine.resolve_device(o.device)
    spec = DataSpec(
        "bench",
        o.in_shape,
        10,
        "multiclass",
        tuple(str(i) for i in range(10)),
        (0.5,) * o.in_shape[0],
        (0.25,) * o.in_shape[0],
    )
    peak = matmul_peak(dev)
    rows = []
    for decoder in o.decoders:
        subjects = [
            prepare(m, decoder, spec, list(o.overrides), o.batch, o.samples, dev, o.amp, o.sample_inputs)
            for m in methods
        ]
        measure_interleaved(subjects, dev, o.repeats, o.warmup)
        measured = [subject.row for subject in subjects]
        del subjects
        base = next(r for r in measured if r["method"] == BASELINE)
        for row in measured:
            row["step_ratio"] = row["step_ms"] / base["step_ms"]
            row["flop_utilisation"] = row["achieved_gflops"] * 1e9 / peak
            row["peak_gflops"] = peak / 1e9
            row["device"] = str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev)
            row["threads"] = torch.get_num_threads()
        rows += measured
    for row in rows:
        row["run"] = f"{row['device']}|{row['decoder']}|{row['method']}|b{o.batch}"
    write_tables(
        o.results_dir,
        o.table,
        rows,
        key=["run"],
        sections=SECTIONS,
        columns=["device", "decoder"],
        preamble=f"Written by `decnn bench`: median of {o.repeats} timed training steps after {o.warmup} warm-up "
        f"steps, batch {o.batch}, all methods in one process, timed round by round (one step of each method per "
        f"round); dense-matmul peak {peak / 1e9:.0f} GFLOP/s measured in the same run; sampling: N = {o.samples} "
        f"predictions for each of {o.sample_inputs} inputs, reported per 1,000.",
    )
    return rows
