"""``decnn bench``: training-step time, memory and FLOPs of every method side by side in one process (Table 10),
and the cost of uncertainty as ``decnn eval-ood`` pays it, in fp32 and bf16.

All methods share the classifier, the batch and the device; ratios are to the baseline (the plain classifier)
measured in the same run at the same precision, so machine noise that is common to all of them cancels. Achieved
FLOP/s is reported as a share of a dense-matmul peak of the same precision, timed once per round among the steps.
With no options the bench sizes itself to the device (``plan``) and says what it chose.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from decnn_cli import engine
from decnn_cli.config import EvalConfig
from decnn_cli.data.spec import DataSpec
from decnn_cli.data.splitting import make_loader
from decnn_cli.errors import DecnnError
from decnn_cli.methods import BASELINE, METHODS, LossContext, get_method
from decnn_cli.resolve import build_config
from decnn_cli.results import write_tables
from decnn_cli.tasks import TaskHead
from decnn_cli.uncertainty import predict

# eval-ood's default evaluation batch (N sampled predictions are drawn for this many inputs at a time).
EVAL_BATCH = EvalConfig.model_fields["batch_size"].default


def sections(samples: list[int]) -> list[tuple[str, str, int]]:
    """The Markdown tables of a bench with sampled-prediction counts ``samples``: (column, heading, digits)."""
    return [
        ("step_ms", "Training step (ms)", 2),
        (
            "step_ratio",
            f"Training step time / {BASELINE}'s at the same precision (Table 10 compares 1.0 : 5.9 DecNN : 7.1 "
            "ReDecNN on MNIST)",
            2,
        ),
        ("bf16_speedup", "Training step: fp32 time / bf16 time of the same method", 2),
        ("gflop_per_step", "GFLOP per training step (forward + backward)", 3),
        ("flop_utilisation", "Achieved FLOP/s as a share of the dense-matmul peak of the same precision", 3),
        ("memory_mb", "Peak memory per step (MB): CUDA allocator peak, or saved activations on CPU", 1),
        *(
            (f"sample_ms_per_input_n{n}", f"Uncertainty as eval-ood pays it: ms per input at N = {n}", 3)
            for n in samples
        ),
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


class MatmulPeak:
    """A dense square matmul of one precision on the device: timed once per round, among the steps, so the
    utilisation's denominator sees the same load as the steps it divides."""

    def __init__(self, device: torch.device, precision: str):
        size = 8192 if device.type == "cuda" else 2048
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.a = torch.randn(size, size, device=device, dtype=dtype)
        self.b = torch.randn(size, size, device=device, dtype=dtype)
        self.flop = 2 * size**3
        self.device = device
        self.seconds: list[float] = []
        timed(self.run, device, 0, 1)

    def run(self) -> None:
        self.a @ self.b

    def measure(self) -> None:
        self.seconds += timed(self.run, self.device, 1, 0)

    @property
    def flops(self) -> float:
        """FLOP/s, median of the rounds."""
        return self.flop / statistics.median(self.seconds)


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
    """One method at one precision, ready to be measured: its training step, its evaluation at N sampled
    predictions per input, and what was measured once."""

    row: dict[str, Any]
    train_step: Callable[[], None]
    evaluate: Callable[[int], None]
    steps: list[float] = field(default_factory=list)
    evaluations: dict[int, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Sizing:
    """What one decoder is measured at: the training batch, the N of sampled predictions, the inputs they are drawn
    for in batches of ``eval_batch`` (eval.batch_size, as eval-ood), the timed steps and rounds of evaluation, and
    why (``note``)."""

    decoder: str
    batch: int
    samples: tuple[int, ...]
    sample_inputs: int
    eval_batch: int
    repeats: int
    sample_repeats: int
    note: str


def prepare(
    name: str,
    sizing: Sizing,
    spec: DataSpec,
    overrides: list[str],
    device: torch.device,
    precision: str,
) -> Subject:
    """Build ``name`` with the sizing's decoder; count its FLOPs and memory for one step; return its step and its
    evaluation (``uncertainty.predict`` over the sample inputs in batches of eval-ood's, as eval-ood runs it)."""
    cfg = build_config(overrides=[f"method.name={name}", f"model.decoder={sizing.decoder}", *overrides])
    method = get_method(name)
    settings = method.settings_of(cfg)
    engine.seed_everything(0)
    model = engine.accelerate(method.build(cfg.model, settings, spec).to(device), cfg.train, device)
    task = TaskHead("multiclass")
    ctx = LossContext(settings, task, num_train=60000)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(sizing.batch, *spec.in_shape, device=device)
    y = torch.randint(spec.num_outputs, (sizing.batch,), device=device)
    inputs = TensorDataset(torch.rand(sizing.sample_inputs, *spec.in_shape), torch.zeros(sizing.sample_inputs))
    loader = make_loader(inputs, sizing.eval_batch, shuffle=False)

    def loss() -> torch.Tensor:
        with engine.autocast(device, precision):
            return method.loss(model, x, y, ctx).total

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()

    def evaluate(samples: int) -> None:
        predict(model, method, loader, settings, samples, task, device, precision=precision)

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
        "decoder": sizing.decoder,
        "precision": precision,
        "dataset": f"{spec.in_shape[0]}x{spec.in_shape[1]}x{spec.in_shape[2]}",
        "batch": sizing.batch,
        "sample_inputs": sizing.sample_inputs,
        "gflop_per_step": counter.get_total_flops() / 1e9,
        "memory_mb": memory / 2**20,
        "parameters": engine.count_parameters(model),
    }
    return Subject(row, train_step, evaluate)


def measure_interleaved(
    subjects: list[Subject], peaks: dict[str, MatmulPeak], sizing: Sizing, device: torch.device, warmup: int
) -> None:
    """Time the subjects round by round (one step of each, and one matmul of each precision, per round), then
    their evaluations round by round, so that load drifting during the run touches every method alike; record
    medians and interquartile ranges in their rows."""
    for subject in subjects:
        timed(subject.train_step, device, 0, warmup)
    for _ in range(sizing.repeats):
        for peak in peaks.values():
            peak.measure()
        for subject in subjects:
            subject.steps += timed(subject.train_step, device, 1, 0)
    for subject in subjects:  # the first evaluation pays one-off costs: not timed
        subject.evaluate(min(sizing.samples))
    for _ in range(sizing.sample_repeats):
        for subject in subjects:
            for n in sizing.samples:
                evaluate = subject.evaluate
                subject.evaluations.setdefault(n, []).extend(timed(lambda n=n, f=evaluate: f(n), device, 1, 0))
    for subject in subjects:
        step = statistics.median(subject.steps)
        quartiles = statistics.quantiles(subject.steps, n=4) if len(subject.steps) >= 2 else [step, step, step]
        peak = peaks[subject.row["precision"]].flops
        subject.row |= {
            "step_ms": 1000 * step,
            "step_ms_iqr": 1000 * (quartiles[2] - quartiles[0]),
            "achieved_gflops": subject.row["gflop_per_step"] / step,
            "peak_gflops": peak / 1e9,
            "flop_utilisation": subject.row["gflop_per_step"] * 1e9 / step / peak,
        }
        for n, seconds in subject.evaluations.items():
            subject.row[f"sample_ms_per_input_n{n}"] = 1000 * statistics.median(seconds) / sizing.sample_inputs


@dataclass(frozen=True)
class BenchOptions:
    """What ``decnn bench`` measures and where it writes.

    ``methods`` default to every registered method (the baseline is always measured: ratios are to it); empty
    ``decoders``, ``samples`` and ``precisions`` and unset ``batch``, ``sample_inputs`` and ``repeats`` are sized
    to the device (``plan``); ``overrides`` are ``--set`` overrides of every method's config.
    """

    methods: tuple[str, ...] = ()
    decoders: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    in_shape: tuple[int, int, int] = (1, 28, 28)
    batch: int | None = None
    samples: tuple[int, ...] = ()
    sample_inputs: int | None = None
    precisions: tuple[str, ...] = ()
    repeats: int | None = None
    sample_repeats: int = 3
    warmup: int = 3
    device: str = "auto"
    results_dir: Path = Path("results")
    table: str = "bench"


# The paper-size ResNet decoder on a CPU: one decode of a 28x28 input costs about 1.5 GFLOP, so a training step
# at batch 128 holds about 4.6 TFLOP and eval-ood's N = 32 paths of 512 inputs about 200 TFLOP (hours).
CPU_RESNET = {"batch": 8, "samples": (4,), "sample_inputs": 8, "repeats": 5}
# Everything else: Table 10's batch, and eval-ood's N = 32 (the recipes' default) and 128 (Table 2) for one
# evaluation batch of inputs (None).
FULL_SIZE = {"batch": 128, "samples": (32, 128), "sample_inputs": None, "repeats": 20}


def plan(options: BenchOptions, device: torch.device) -> tuple[list[Sizing], tuple[str, ...]]:
    """The decoders to measure, each with its sizes, and the precisions: what the options set, the rest sized
    to the device. On CUDA: both decoders at batch 128, N = 32 and 128 over one evaluation batch of inputs, fp32
    and bf16. On CPU: the MLP decoder so; the ResNet decoder only when asked for, and then at a CPU size
    (``CPU_RESNET``); bf16 beside fp32 only where the CPU runs it natively (``engine.bf16_is_fast``)."""
    o = options
    cpu = device.type != "cuda"
    decoders = o.decoders or (("mlp",) if cpu else ("mlp", "resnet"))
    unknown = [d for d in decoders if d not in ("mlp", "resnet")]
    if unknown:
        raise DecnnError(f"unknown decoder(s) {unknown}; choose from mlp, resnet")
    precisions = o.precisions or (("fp32", "bf16") if engine.bf16_is_fast(device) else ("fp32",))
    eval_batch = build_config(overrides=list(o.overrides)).eval.batch_size
    sizings = []
    for decoder in decoders:
        small = cpu and decoder == "resnet"
        sized = CPU_RESNET if small else FULL_SIZE
        batch = o.batch or sized["batch"]
        samples = o.samples or sized["samples"]
        sample_inputs = o.sample_inputs or sized["sample_inputs"] or eval_batch
        repeats = o.repeats or sized["repeats"]
        batches = min(eval_batch, sample_inputs)
        why = " (CPU-sized: the paper-size decoder costs ~1.5 GFLOP per decoded input)" if small else ""
        note = (
            f"{decoder} decoder: training batch {batch}, {repeats} timed steps; uncertainty at N = "
            f"{', '.join(map(str, samples))} on {sample_inputs} inputs in batches of {batches}{why}"
        )
        sizings.append(Sizing(decoder, batch, samples, sample_inputs, batches, repeats, o.sample_repeats, note))
    return sizings, precisions


def run_bench(options: BenchOptions = BenchOptions(), say: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Measure every method for every decoder and precision; add ratios to the baseline, bf16 speedups and FLOP
    utilisation; write tables. ``say`` receives one line per choice the bench made."""
    o = options
    methods = list(o.methods or METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise DecnnError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    if BASELINE not in methods:
        methods.insert(0, BASELINE)
    dev = engine.resolve_device(o.device)
    sizings, precisions = plan(o, dev)
    device_name = str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev)
    if say is not None:
        native = "bf16 is native here" if engine.bf16_is_fast(dev) else "bf16 is not native here"
        threads = torch.get_num_threads()
        say(f"bench on {device_name}, {threads} thread(s); precisions {', '.join(precisions)} ({native})")
        for sizing in sizings:
            say(sizing.note)
        if dev.type == "cpu" and "resnet" not in (s.decoder for s in sizings):
            say("resnet decoder: not measured on CPU unless asked for (--decoder resnet)")
    spec = DataSpec(
        "bench",
        o.in_shape,
        10,
        "multiclass",
        tuple(str(i) for i in range(10)),
        (0.5,) * o.in_shape[0],
        (0.25,) * o.in_shape[0],
    )
    rows = []
    for sizing in sizings:
        peaks = {p: MatmulPeak(dev, p) for p in precisions}
        subjects = [prepare(m, sizing, spec, list(o.overrides), dev, p) for m in methods for p in precisions]
        measure_interleaved(subjects, peaks, sizing, dev, o.warmup)
        measured = [subject.row for subject in subjects]
        del subjects
        step = {(r["method"], r["precision"]): r["step_ms"] for r in measured}
        for row in measured:
            row["step_ratio"] = row["step_ms"] / step[BASELINE, row["precision"]]
            if row["precision"] == "bf16" and (row["method"], "fp32") in step:
                row["bf16_speedup"] = step[row["method"], "fp32"] / row["step_ms"]
            row["device"] = device_name
            row["threads"] = torch.get_num_threads()
            row["run"] = f"{device_name}|{row['decoder']}|{row['method']}|{row['precision']}|b{sizing.batch}"
        rows += measured
    all_samples = sorted({n for sizing in sizings for n in sizing.samples})
    write_tables(
        o.results_dir,
        o.table,
        rows,
        key=["run"],
        sections=sections(all_samples),
        columns=["device", "decoder", "precision"],
        preamble="Written by `decnn bench`: every method and precision in one process; training steps timed round "
        f"by round (one step of each per round, median of the rounds, after {o.warmup} warm-up steps), with one "
        "dense matmul of each precision per round as the utilisation's peak; then N sampled predictions timed as "
        "eval-ood pays them (f's prediction and the sampler over batches of inputs), round by round. "
        + " ".join(f"{s.note}." for s in sizings),
    )
    return rows
