"""What every evaluation of finished runs needs: load a run folder, its data, its predictions."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress

from decnn_cli import engine, metrics
from decnn_cli.config import DataConfig, Precision, RunConfig
from decnn_cli.data import load_splits
from decnn_cli.data.spec import DataSpec, Splits
from decnn_cli.data.splitting import make_loader
from decnn_cli.errors import DecnnError
from decnn_cli.methods import AdversaryTerms, MethodSettings, MethodSpec, PretrainedTerms, decodes_given_protected
from decnn_cli.results import FINISHED_MARKER, check_writable_folder
from decnn_cli.tasks import TaskHead
from decnn_cli.uncertainty import Predictions, predict


@dataclass(frozen=True)
class EvalOptions:
    """What every evaluation of run folders shares: where its rows go (``results_dir/<table>.{csv,md}``), the
    data root (else each run's own, or $DECNN_DATA_ROOT), the device, the precision (else each run's
    ``eval.precision``, else its training precision) and the progress display (``progress``: one to add bars to,
    else a new one unless ``show_progress`` is off)."""

    results_dir: Path = Path("results")
    table: str = "evaluation"
    data_root: Path | None = None
    device: str = "auto"
    precision: Precision | None = None
    show_progress: bool = True
    progress: Progress | None = None

    def __post_init__(self) -> None:
        for name in ("samples", "limit"):
            value = getattr(self, name, None)
            if value is not None and value < 1:
                raise DecnnError(f"{name} must be at least 1, not {value}; leave it unset for the run's default")
        check_writable_folder(self.results_dir, "results folder", "--results")


@dataclass
class Run:
    """A finished run folder with its model rebuilt from ``model.pt``."""

    path: Path
    cfg: RunConfig
    spec: DataSpec
    method: MethodSpec
    model: torch.nn.Module
    metrics: dict[str, Any]
    device: torch.device
    precision: engine.Resolved = "fp32"

    @property
    def settings(self) -> MethodSettings:
        """The method's own settings in the run's config."""
        return self.method.settings_of(self.cfg)

    @property
    def task(self) -> TaskHead:
        return TaskHead(self.spec.task)

    def identity(self) -> dict[str, Any]:
        """The columns that place a run in a table (and the precision it was evaluated in); ``model`` is the method
        plus any composition variant."""
        variant = run_variant(self.cfg)
        return {
            "dataset": self.cfg.data.name,
            "method": self.cfg.method.name,
            "variant": variant,
            "model": self.cfg.method.name if variant == "none" else f"{self.cfg.method.name} ({variant})",
            "seed": self.cfg.train.seed,
            "run": self.path.name,
            "precision": self.precision,  # of this evaluation
        }


def _pretrained_arch(path: Path) -> str:
    config = path.parent / "config.toml"
    if config.is_file():
        try:
            return tomllib.loads(config.read_text()).get("model", {}).get("arch", "mlp")
        except tomllib.TOMLDecodeError:
            pass
    return path.stem


def run_variant(cfg: RunConfig) -> str:
    """'none', or the pretrained-model terms and the terms on h_L a run was trained with: 'Eq. 7: linear',
    'direct: resnet18', 'Eq. 8', 'adversary 1' (with how it differs from the default: 'adversary 1 (standardised)'),
    'mean match 1' (their weights); 'g(h, a)' first for a decoder given the protected attribute."""
    terms = PretrainedTerms.of(cfg.method)
    parts = []
    if cfg.train.group_balance:
        parts.append("group-balanced")
    if decodes_given_protected(cfg.method):
        parts.append("g(h, a)")
    if terms.compose_with is not None:
        kind = "Eq. 7" if terms.compose_target == "reconstruction" else "direct"
        parts.append(f"{kind}: {_pretrained_arch(terms.compose_with)}")
    if terms.protect_with is not None:
        parts.append("Eq. 8")
    adversary = AdversaryTerms.of(cfg.method)
    if adversary.adversary_on:
        differs = {
            "confusion": adversary.protect_adversary_objective == "confusion",
            "without the label": not adversary.protect_adversary_given_label,
            "standardised": adversary.protect_adversary_standardised,
        }
        ways = ", ".join(way for way, on in differs.items() if on)
        parts.append(f"adversary {adversary.protect_adversary_weight:g}" + (f" ({ways})" if ways else ""))
    if adversary.mean_match_on:
        every = " (every layer)" if adversary.protect_mean_match_layers == "every" else ""
        parts.append(f"mean match {adversary.protect_mean_match_weight:g}{every}")
    return ", ".join(parts) or "none"


def load_run(path: Path, device: str = "auto", precision: Precision | None = None) -> Run:
    """Open a run folder written by ``decnn train``; anything missing is one clear error. The run is evaluated in
    ``precision``, else its ``eval.precision``, else the precision it was trained in (resolved on ``device``)."""
    if path.is_file() and path.name == "model.pt":
        raise DecnnError(f"{path} is a run's checkpoint; pass its run folder, {path.parent}")
    if not path.is_dir():
        raise DecnnError(f"run folder {path} does not exist; pass folders written by `decnn train`")
    marker = path / FINISHED_MARKER
    if not marker.is_file():
        raise DecnnError(f"{path} is not a finished run (no {FINISHED_MARKER}); pass a folder written by `decnn train`")
    if not (path / "model.pt").is_file():
        raise DecnnError(f"run folder {path} has no model.pt checkpoint; retrain the run")
    dev = engine.resolve_device(device)
    loaded = engine.load_checkpoint(path / "model.pt", dev)
    resolved = engine.resolve_precision(loaded.cfg.train, dev, precision or loaded.cfg.eval.precision)
    metrics = json.loads(marker.read_text())
    return Run(path, loaded.cfg, loaded.spec, loaded.method, loaded.model, metrics, dev, resolved)


def data_config(run: Run, data_root: Path | None, **changes: Any) -> DataConfig:
    """The run's data config, with the data root replaced when given (runs may move between machines)."""
    update: dict[str, Any] = dict(changes)
    if data_root is not None:
        update["root"] = data_root
    return run.cfg.data.model_copy(update=update)


def test_splits(run: Run, data_root: Path | None) -> Splits:
    splits = load_splits(data_config(run, data_root))
    if splits.spec.in_shape != run.spec.in_shape or splits.spec.num_outputs != run.spec.num_outputs:
        raise DecnnError(
            f"the data of run {run.path.name} now has shape {splits.spec.in_shape} with {splits.spec.num_outputs} "
            f"outputs, but the model expects {run.spec.in_shape} and {run.spec.num_outputs}; check --data-root"
        )
    return splits


def predict_split(
    run: Run,
    dataset: torch.utils.data.Dataset,
    samples: int,
    progress: Progress | None,
    description: str,
    transform=None,
) -> Predictions:
    """The run's predictions (and N sampled predictions) on ``dataset``; seeded by the run's seed."""
    engine.seed_everything(run.cfg.train.seed)
    loader = make_loader(dataset, run.cfg.eval.batch_size, shuffle=False)
    return predict(
        run.model,
        run.method,
        loader,
        run.settings,
        samples,
        run.task,
        run.device,
        progress,
        description,
        transform,
        run.precision,
    )


def warn(message: str) -> None:
    """One warning line on stderr, apart from the tables on stdout."""
    Console(stderr=True).print(f"warning: {message}", style="yellow", markup=False, highlight=False, soft_wrap=True)


# Constant attributes named in a warning; the rest are counted.
NAMED_CONSTANT_OUTPUTS = 8


def constant_output_warning(
    run: str, pred: Predictions, spec: DataSpec, pos_weight: str, split: str = "test"
) -> tuple[int, str | None]:
    """How many outputs ``pred`` decides the same way for every example (``metrics.constant_outputs``: attributes,
    or 1 for a classifier that predicts one class) and, when there are any, a warning naming the run and them.

    ``pos_weight`` is the run's ``train.pos_weight``: an unweighted multi-label or two-class run is pointed to it.
    ``split``: the split ``pred`` was made on ("test" or "val"), as the warning names it.
    """
    never, always = metrics.constant_outputs(pred.probs, pred.task)
    count = len(never) + len(always)
    if count == 0:
        return 0, None
    images = f"every one of the {len(pred.labels)} {split} images"
    if pred.task == "multiclass":
        message = f"{run}: predicts {spec.output_names[always[0]]!r} for {images}: every other class has F1 0"
    else:

        def named(indices: list[int]) -> str:
            shown = [spec.output_names[i] for i in indices[:NAMED_CONSTANT_OUTPUTS]]
            return ", ".join(shown + (["..."] if len(indices) > NAMED_CONSTANT_OUTPUTS else []))

        parts = []
        if never:
            parts.append(f"'no' for {images} on {len(never)} of {spec.num_outputs} attributes ({named(never)})")
        if always:
            where = f"{images} on" if not never else "on"
            parts.append(f"'yes' {where} {len(always)} of {spec.num_outputs} attributes ({named(always)})")
        message = f"{run}: predicts {', and '.join(parts)}: such an attribute says nothing about the image"
        if never:
            message += " (its F1 is 0 where it is 'no')"
    if pos_weight == "none" and (pred.task == "multilabel" or spec.num_outputs == 2):
        message += "; consider --set train.pos_weight=balanced"
    return count, message


def warn_constant_outputs(run: Run, pred: Predictions, split: str = "test") -> int:
    """Warn (``warn``) when the run's predictions ``pred`` on its ``split`` are constant for the task or for an
    attribute (``constant_output_warning``); the number of constant outputs, for the run's row."""
    count, message = constant_output_warning(run.path.name, pred, run.spec, run.cfg.train.pos_weight, split)
    if message is not None:
        warn(message)
    return count


def resolve_runs(paths: list[Path]) -> list[Path]:
    """Run folders from the arguments: a run folder itself, or a folder of run folders (all finished runs)."""
    runs: list[Path] = []
    for path in paths:
        if (path / FINISHED_MARKER).is_file() or not path.is_dir():
            runs.append(path)
            continue
        children = sorted(p for p in path.iterdir() if (p / FINISHED_MARKER).is_file())
        if not children:
            raise DecnnError(f"{path} holds no finished run folders; pass folders written by `decnn train`")
        runs.extend(children)
    if not runs:
        raise DecnnError("no run folders given; pass one or more folders written by `decnn train`")
    return runs
