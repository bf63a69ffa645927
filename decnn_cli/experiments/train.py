"""``decnn train``: fit one method on one dataset and write a traceable run folder."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress
from torch.utils.data import DistributedSampler

from decnn_cli import distributed, engine, metrics, plots
from decnn_cli.adversary import GroupAdversary, attach_adversary
from decnn_cli.config import SMALL_TRAINING_SET, RunConfig, TrainConfig, dump_toml
from decnn_cli.data import load_splits
from decnn_cli.data.spec import DataSpec, Splits
from decnn_cli.data.splitting import group_balanced_sampler, labels_of, make_loader
from decnn_cli.errors import DecnnError
from decnn_cli.experiments.common import constant_output_warning
from decnn_cli.methods import LossContext, get_method
from decnn_cli.results import RunFolder, git_revision, run_name, write_json_atomic, write_text_atomic
from decnn_cli.tasks import TaskHead, balanced_pos_weight
from decnn_cli.uncertainty import predict

DECODING_ROWS = 8


def epochs_for(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """The epochs a run trains: ``cfg.epochs``, raised to reach ``cfg.min_steps`` optimizer steps."""
    return max(cfg.epochs, math.ceil(cfg.min_steps / max(steps_per_epoch, 1)))


@dataclass
class TrainOutcome:
    """The finished run folder and its metrics (None and empty on the non-zero ranks of a multi-process job)."""

    run_dir: Path | None
    metrics: dict[str, Any]


def train(
    cfg: RunConfig,
    console: Console | None = None,
    show_progress: bool = True,
    progress: Progress | None = None,
    name: str | None = None,
) -> TrainOutcome:
    """Train ``cfg.method`` on ``cfg.data``, evaluate on the test split and write the run folder.

    The folder (``name``, or ``<dataset>__<method>__seed<k>__<time>``) holds config.toml (resolved),
    metrics.json (with the dataset's notes on its split, which are also printed), model.pt, predictions.npz
    and, for methods with a decoder, decodings.png. It appears only when everything is written. ``progress``
    is a display to add bars to (else one is opened).
    """
    console = console or Console(stderr=True)
    resolved = engine.resolve_device(cfg.train.device)
    dctx = distributed.setup(resolved)
    try:
        return _train(
            cfg, console, show_progress, progress, name, dctx, distributed.device_for(cfg.train.device, dctx, resolved)
        )
    finally:
        distributed.teardown(dctx)


def task_head(cfg: RunConfig, splits: Splits, batch_size: int) -> tuple[TaskHead, list[str]]:
    """The run's task head, with the positive weights ``train.pos_weight`` asks for counted once on the training
    split, and a warning for every output those weights cannot balance (no positive, or no negative, in train) or
    balance only noisily (a two-class task's rare class under one example a batch)."""
    spec = splits.spec
    if cfg.train.pos_weight == "none":
        return TaskHead(spec.task), []
    if spec.task == "multiclass" and spec.num_outputs != 2:
        raise DecnnError(
            f"train.pos_weight={cfg.train.pos_weight} weights positive labels, which only multi-label and two-class "
            f"tasks have; {cfg.data.name} has {spec.num_outputs} classes: drop the setting"
        )
    labels = labels_of(splits.train)
    weights, one_valued = balanced_pos_weight(labels, spec.task)
    names = spec.output_names if spec.task == "multilabel" else spec.output_names[1:]
    notes = [
        f"train.pos_weight=balanced: {names[i]} has a single value in all {len(splits.train)} training examples; "
        "its positives keep weight 1"
        for i in one_valued
    ]
    if spec.task == "multiclass":
        notes += rare_class_note(labels, batch_size, names[0], weights[0])
    return TaskHead(spec.task, weights), notes


def rare_class_note(labels: torch.Tensor, batch_size: int, name: str, weight: float) -> list[str]:
    """A warning where the weighted class of a two-class task averages under one example a batch: most batches
    then hold none and a few hold one that weighs ``weight`` examples, so the loss swings from batch to batch (a
    Bald classifier on 64 of 4,320 CelebA faces, weight 66.5, settled on calling nine faces in ten bald). Which of
    the two does better depends on the data (results/README.md), so the note asks for a comparison on validation."""
    positives = int((labels == 1).sum())
    per_batch = positives / len(labels) * batch_size
    if positives == 0 or per_batch >= 1:
        return []
    return [
        f"train.pos_weight=balanced: {name} is {positives:,} of {len(labels):,} training examples, {per_batch:.2f} a "
        f"batch of {batch_size} on average, so its weight {weight:.1f} makes the loss swing from batch to batch; if "
        "validation accuracy swings or collapses, compare class-balanced drawing on the validation split: --set "
        "train.pos_weight=none --set train.group_balance=true"
    ]


def positive_weights(task: TaskHead, spec: DataSpec) -> dict[str, float] | None:
    """The positive weights of the training loss by output name (metrics.json), None when unweighted."""
    if task.pos_weight is None:
        return None
    names = spec.output_names if spec.task == "multilabel" else spec.output_names[1:]
    return {name: round(weight, 4) for name, weight in zip(names, task.pos_weight, strict=True)}


def adversary_weights(adversary: GroupAdversary | None, spec: DataSpec) -> dict[str, float] | None:
    """The weight of each protected group in the adversary's loss by group name (metrics.json), None without one."""
    if adversary is None:
        return None
    return {name: round(float(w), 4) for name, w in zip(spec.group_names, adversary.group_weights, strict=False)}


def _train(
    cfg: RunConfig,
    console: Console,
    show_progress: bool,
    progress: Progress | None,
    name: str | None,
    dctx: distributed.Distributed,
    device: torch.device,
) -> TrainOutcome:
    engine.seed_everything(cfg.train.seed)
    precision = engine.resolve_precision(cfg.train, device)  # what engine.fit trains in; the test split follows
    splits = load_splits(cfg.data)
    batch_size = cfg.data.batch_for(len(splits.train))
    if cfg.data.batch_size == "auto":
        rule = "under" if batch_size == 32 else "not under"
        splits.notes.append(
            f"batch size {batch_size} (data.batch_size = auto: {len(splits.train):,} training examples, {rule} "
            f"{SMALL_TRAINING_SET:,})"
        )
    method = get_method(cfg.method.name)
    settings = method.settings_of(cfg)
    task, pos_weight_notes = task_head(cfg, splits, batch_size)
    model = engine.accelerate(method.build(cfg.model, settings, splits.spec).to(device), cfg.train, device)
    ctx = LossContext(settings, task, num_train=len(splits.train))
    from decnn_cli.composition import attach_pretrained_terms

    attach_pretrained_terms(ctx, method.terms_of(cfg), splits.spec, device)
    adversary = attach_adversary(
        ctx, method.adversary_of(cfg), model, splits.spec, splits.train, device, cfg.train.group_balance
    )
    sampler = None
    if cfg.train.group_balance:
        if dctx.enabled:
            raise DecnnError("train.group_balance draws from one process; drop it or start decnn without torchrun")
        sampler, note = group_balanced_sampler(
            splits.train, cfg.train.seed, splits.spec.output_names, splits.spec.group_names
        )
        splits.notes.append(note)  # printed with the split's notes, and kept in metrics.json
    if dctx.enabled:
        sampler = DistributedSampler(splits.train, dctx.world_size, dctx.rank, shuffle=True, seed=cfg.train.seed)
        torch.manual_seed(cfg.train.seed + dctx.rank)  # same initial weights (DDP broadcasts rank 0's), own paths
    train_loader = make_loader(
        splits.train,
        distributed.shard_batch_size(batch_size, dctx),
        shuffle=True,
        seed=cfg.train.seed,
        num_workers=cfg.data.num_workers,
        sampler=sampler,
    )
    on_epoch_start = sampler.set_epoch if isinstance(sampler, DistributedSampler) else None
    train_cfg = cfg.train.model_copy(update={"epochs": epochs_for(cfg.train, len(train_loader))})
    val_loader = make_loader(splits.val, cfg.eval.batch_size, shuffle=False, num_workers=cfg.data.num_workers)
    test_loader = make_loader(splits.test, cfg.eval.batch_size, shuffle=False, num_workers=cfg.data.num_workers)

    if not dctx.is_main:  # other ranks only train; rank 0 evaluates and writes the run folder
        engine.fit(model, method, ctx, train_loader, val_loader, train_cfg, device, None, on_epoch_start, dctx)
        return TrainOutcome(None, {})
    for note in splits.notes:  # what the dataset chose (its split, speakers, counts); also in metrics.json
        console.print(f"{cfg.data.name}: {note}", markup=False, highlight=False, soft_wrap=True)
    if train_cfg.epochs != cfg.train.epochs:
        console.print(
            f"{cfg.data.name}: {train_cfg.epochs} epochs of {len(train_loader)} steps instead of {cfg.train.epochs}, "
            f"to take at least train.min_steps = {cfg.train.min_steps} optimizer steps",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    for note in pos_weight_notes:
        console.print(f"warning: {note}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    with RunFolder(cfg.out_dir, name or run_name(cfg)) as run:
        write_text_atomic(run.path / "config.toml", dump_toml(cfg))
        started = time.perf_counter()
        with engine.progress_or_new(progress, show_progress) as bar:
            history = engine.fit(
                model, method, ctx, train_loader, val_loader, train_cfg, device, bar, on_epoch_start, dctx
            )
            train_seconds = time.perf_counter() - started
            samples = cfg.eval.samples if method.predictive == "sample-mean" else 1
            pred = predict(
                model, method, test_loader, settings, samples, task, device, bar, "test", precision=precision
            )
        pred.save(run.path / "predictions.npz")
        constant, warning = constant_output_warning(run.final.name, pred, splits.spec, cfg.train.pos_weight)
        if warning is not None:
            console.print(f"warning: {warning}", style="yellow", markup=False, highlight=False, soft_wrap=True)
        result: dict[str, Any] = {
            "dataset": cfg.data.name,
            "method": cfg.method.name,
            "seed": cfg.train.seed,
            "epochs": train_cfg.epochs,
            "steps": train_cfg.epochs * len(train_loader),
            "batch_size": batch_size,
            "device": str(device),
            "precision": precision,
            "world_size": dctx.world_size,
            "distributed_backend": dctx.backend,
            "parameters": engine.count_parameters(model),
            "train_examples": len(splits.train),
            "val_examples": len(splits.val),
            "test_examples": len(splits.test),
            "data_notes": splits.notes,
            "pos_weight": positive_weights(task, splits.spec),
            "adversary_group_weights": adversary_weights(adversary, splits.spec),
            "test_accuracy": metrics.accuracy(pred.probs, pred.labels, pred.task),
            "test_point_accuracy": metrics.accuracy(pred.point_probs, pred.labels, pred.task),
            "test_nll": metrics.nll(pred.probs, pred.labels, pred.task),
            "test_ece": metrics.ece(pred.probs, pred.labels, pred.task, cfg.eval.ece_bins),
            "constant_outputs": constant,
            "val_accuracy": 100.0 * history[-1].val_accuracy,
            "train_seconds": train_seconds,
            "seconds_per_epoch": sum(h.seconds for h in history) / len(history),
            "git_revision": git_revision(),
            "history": [h.__dict__ for h in history],
        }
        if method.uses_decoder:
            result["recon_mse_per_layer"] = engine.reconstruction_errors(model, test_loader, device, precision)
            x = torch.stack([splits.test[i][0] for i in range(min(DECODING_ROWS, len(splits.test)))]).to(device)
            plots.save_decodings(model, x, run.path / "decodings.png")
        engine.save_checkpoint(run.path / "model.pt", model, cfg, splits.spec)
        write_json_atomic(run.path / "metrics.json", result)
    return TrainOutcome(run.final, result)
