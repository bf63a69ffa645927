"""Training and evaluation loops, devices and checkpoints. Never imports the CLI."""

from __future__ import annotations

import contextlib
import functools
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import ValidationError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn
from torch.utils.data import DataLoader

from decnn_cli import distributed
from decnn_cli.config import Precision, RunConfig, TrainConfig
from decnn_cli.data.spec import DataSpec
from decnn_cli.distributed import Distributed
from decnn_cli.errors import DecnnError
from decnn_cli.methods import LossContext, MethodSpec, get_method
from decnn_cli.results import atomic_file

CHECKPOINT_FORMAT = 1
# A precision once resolved on a device: what a run actually computes in.
Resolved = Literal["fp32", "bf16"]


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; anything else must name a device torch can use."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DecnnError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DecnnError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu")
    return device


def accelerate(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    """Apply the opt-in speed settings: channels_last on CUDA, and torch.compile of every classifier and
    decoder body in place (state_dict keys stay the same, so checkpoints load without compile)."""
    if cfg.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        for module in model.modules():
            if hasattr(module, "hidden_shapes") or module.__class__.__name__ in ("MLPDecoder", "ResNetDecoder"):
                module.compile(dynamic=True)
    return model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_is_fast(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matmuls natively (the rule of precision 'auto'): a CUDA GPU of compute
    capability 8.0 or newer, or a CPU whose flags include avx512_bf16 or amx_bf16 (/proc/cpuinfo on Linux,
    torch's own check of avx512_bf16 elsewhere). Elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type != "cpu":
        return False
    flags = _cpu_flags()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(check is not None and check())


def resolve_precision(cfg: TrainConfig, device: torch.device, choice: Precision | None = None) -> Resolved:
    """The arithmetic a run computes in on ``device``: ``choice`` (else ``cfg.precision``), 'auto' resolved by
    ``bf16_is_fast``; with neither set, ``cfg.amp`` decides as it did before precision existed (bf16 on CUDA)."""
    choice = choice or cfg.precision
    if choice is None:
        return "bf16" if cfg.amp and device.type == "cuda" else "fp32"
    if choice == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return choice


def autocast(device: torch.device, precision: Resolved) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` (CPU or CUDA) for 'bf16'; nothing for 'fp32'."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def progress_or_new(progress: Progress | None, show: bool) -> Iterator[Progress]:
    """Use the caller's progress display (one overall display for many runs), or open a new one."""
    if progress is not None:
        yield progress
    else:
        with progress_bar(disable=not show) as own:
            yield own


def progress_bar(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=disable,
        transient=False,
    )


@dataclass
class EpochRecord:
    """One epoch's training metrics (summed over ranks); ``seconds`` includes the validation pass."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_accuracy: float
    seconds: float
    parts: dict[str, float] = field(default_factory=dict)
    examples_per_rank: list[int] = field(default_factory=list)


def _batches(loader: DataLoader, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for batch in loader:
        yield batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)


def _grouped_batches(
    loader: DataLoader, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """(x, y, groups): the protected-attribute groups where the data carries them, else None."""
    for batch in loader:
        groups = batch[2].to(device, non_blocking=True) if len(batch) > 2 else None
        yield batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True), groups


def fit(
    model: nn.Module,
    method: MethodSpec,
    ctx: LossContext,
    train_loader: DataLoader,
    val_loader: DataLoader,
    cfg: TrainConfig,
    device: torch.device,
    progress: Progress | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    dctx: Distributed | None = None,
) -> list[EpochRecord]:
    """Train ``model`` with Adam for ``cfg.epochs`` epochs; raise DecnnError at the first non-finite loss.

    The inner loop does not synchronise with the device: running sums and the index of the first
    non-finite step stay on the device and are read every ``cfg.log_every`` steps. In a multi-process job
    (``dctx``) the loss runs through DistributedDataParallel and the epoch's sums are reduced over ranks.
    """
    dctx = dctx or Distributed()
    precision = resolve_precision(cfg, device)
    step_loss = distributed.wrap(model, method, ctx, dctx, device)
    # The loss terms' own modules (the adversary) train beside the model.
    params = [p for module in (model, *ctx.modules) for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(train_loader)
    scheduler = None
    if cfg.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * steps_per_epoch)
    task_id = None
    if progress is not None:
        task_id = progress.add_task(f"train {method.name}", total=cfg.epochs * steps_per_epoch, status="")
    history: list[EpochRecord] = []
    step = torch.zeros((), dtype=torch.long, device=device)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    for epoch in range(1, cfg.epochs + 1):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct_sum = torch.zeros((), device=device)
        seen = 0
        part_sums: dict[str, torch.Tensor] = {}
        for i, (x, y, groups) in enumerate(_grouped_batches(train_loader, device)):
            ctx.progress = ((epoch - 1) * steps_per_epoch + i) / (cfg.epochs * steps_per_epoch)
            with autocast(device, precision):
                loss, logits, parts = step_loss(x, y, groups)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            total = loss.detach().float()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(total), step, first_bad)
            loss_sum += total * x.shape[0]
            correct_sum += ctx.task.hits(ctx.task.probs(logits.detach().float()), y).sum()
            for name, value in parts.items():
                part_sums[name] = part_sums.get(name, 0.0) + value.float() * x.shape[0]
            seen += x.shape[0]
            last = i + 1 == steps_per_epoch
            if (i + 1) % cfg.log_every == 0 or last:
                _raise_if_nonfinite(first_bad, epoch, steps_per_epoch)
                if progress is not None:
                    status = f"epoch {epoch} loss {loss_sum.item() / seen:.4f} acc {correct_sum.item() / seen:.3f}"
                    progress.update(task_id, completed=(epoch - 1) * steps_per_epoch + i + 1, status=status)
        val_accuracy = point_accuracy(model, method, val_loader, ctx, device, precision)
        per_rank = distributed.all_gather_ints(seen, dctx, device)
        loss_sum = distributed.all_reduce_sum(loss_sum, dctx)
        correct_sum = distributed.all_reduce_sum(correct_sum, dctx)
        seen = int(distributed.all_reduce_sum(torch.tensor(seen, device=device), dctx).item())
        history.append(
            EpochRecord(
                epoch=epoch,
                train_loss=loss_sum.item() / seen,
                train_accuracy=correct_sum.item() / seen,
                val_accuracy=val_accuracy,
                seconds=time.perf_counter() - started,
                parts={k: float(distributed.all_reduce_sum(v, dctx)) / seen for k, v in part_sums.items()},
                examples_per_rank=per_rank,
            )
        )
        if progress is not None:
            progress.update(
                task_id, status=f"epoch {epoch} loss {history[-1].train_loss:.4f} val acc {val_accuracy:.3f}"
            )
    if progress is not None:
        progress.remove_task(task_id)  # one overall display (decnn reproduce) keeps only live bars
    return history


def _raise_if_nonfinite(first_bad: torch.Tensor, epoch: int, steps_per_epoch: int) -> None:
    bad = int(first_bad.item())
    if bad >= 0:
        raise DecnnError(
            f"the training loss became NaN or infinite at step {bad} (epoch {epoch}); nothing was saved: "
            "lower --set train.lr or method.beta, or check the inputs for non-finite values"
        )


@torch.no_grad()
def point_accuracy(
    model: nn.Module,
    method: MethodSpec,
    loader: DataLoader,
    ctx: LossContext,
    device: torch.device,
    precision: Resolved = "fp32",
) -> float:
    """Accuracy of f's own forward pass (per attribute, averaged, for multi-label tasks)."""
    model.eval()
    point = method.point(model)
    correct, seen = 0.0, 0
    for x, y in _batches(loader, device):
        with autocast(device, precision):
            logits = point(x)
        correct += ctx.task.hits(ctx.task.probs(logits.float()), y).sum().item()
        seen += x.shape[0]
    return correct / max(seen, 1)


@torch.no_grad()
def reconstruction_errors(
    model: nn.Module, loader: DataLoader, device: torch.device, precision: Resolved = "fp32"
) -> list[float]:
    """Per-pixel MSE between g(h_l) and x for every layer l, averaged over ``loader``: [L floats]. A decoder
    conditioned on the protected attribute decodes each example with its own group where the data carries it."""
    model.eval()
    sums: torch.Tensor | None = None
    seen = 0
    for x, _, groups in _grouped_batches(loader, device):
        with autocast(device, precision):
            _, hidden = model(x)
            decoded = model.decoder.decode_all(hidden, groups)  # (L, B, C, H, W)
        err = ((decoded.float() - x.unsqueeze(0)) ** 2).flatten(2).mean(2).sum(1)  # (L,)
        sums = err if sums is None else sums + err
        seen += x.shape[0]
    return [] if sums is None else (sums / seen).tolist()


# --- checkpoints -------------------------------------------------------------------------------------


def save_checkpoint(path: Path, model: nn.Module, cfg: RunConfig, spec: DataSpec, extra: dict | None = None) -> None:
    """``model.pt``: weights plus what is needed to rebuild the model (config, data spec, format version)."""
    from decnn_cli.config import config_to_dict

    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config_to_dict(cfg),
        "data_spec": spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **(extra or {}),
    }
    with atomic_file(path) as handle:
        torch.save(payload, handle)


@dataclass
class LoadedModel:
    model: nn.Module
    method: MethodSpec
    cfg: RunConfig
    spec: DataSpec


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the model saved at ``path``; a missing, foreign or mismatched checkpoint is one clear error."""
    from decnn_cli.config import RunConfig

    if not path.is_file():
        raise DecnnError(f"checkpoint {path} does not exist; pass a run folder written by `decnn train`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for unreadable files
        raise DecnnError(f"checkpoint {path} cannot be read ({type(err).__name__}); retrain the run") from None
    found = payload.get("format") if isinstance(payload, dict) else None
    if found != CHECKPOINT_FORMAT:
        raise DecnnError(
            f"checkpoint {path} was not written by this version of decnn (format {found}, "
            f"expected {CHECKPOINT_FORMAT}); retrain the run"
        )
    try:
        cfg = RunConfig.model_validate(payload["config"])
        spec = DataSpec.from_dict(payload["data_spec"])
    except (ValidationError, KeyError, TypeError) as err:
        raise DecnnError(
            f"checkpoint {path} carries a config this version cannot read ({err}); retrain the run"
        ) from None
    method = get_method(cfg.method.name)
    model = method.network(cfg, spec)
    missing, unexpected = _state_mismatch(model, payload["state_dict"])
    if missing or unexpected:
        raise DecnnError(
            f"checkpoint {path} does not fit the architecture its config describes "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); retrain the run"
        )
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return LoadedModel(model, method, cfg, spec)


def _state_mismatch(model: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    own = model.state_dict()
    missing = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    unexpected = [k for k in state if k not in own]
    return missing, unexpected


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
