"""A recipe's runs in order, each with its resolved config and the folder it is keyed to.

Run folders are named by what determines them: ``<dataset>__<method>[__<tag>...]__<hash>__seed<k>``, the tags
showing what distinguishes the run (target, held-out attribute, pretrained models: ``results.run_tags``) and the
hash covering everything that can change what the run learns (``folder_key``). Recipes that share runs share
folders, and a finished run (one with ``metrics.json``) is never trained twice.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decnn_cli.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from decnn_cli.data import DatasetEntry, get_dataset
from decnn_cli.errors import ConfigError
from decnn_cli.experiments.reproduce.evaluations import EVALUATIONS, outlier_sets
from decnn_cli.experiments.reproduce.recipe import Evaluation, Recipe
from decnn_cli.methods import get_method
from decnn_cli.resolve import ONLY_SOME_DATASETS, build_config
from decnn_cli.results import FINISHED_MARKER, run_label


@dataclass
class PlannedRun:
    stage: str
    dataset: str
    method: str
    variant: str
    seed: int
    cfg: RunConfig
    folder: Path
    in_table: bool
    show_variant: bool = True
    needs: tuple[Path, ...] = ()  # folders of the earlier runs whose checkpoints this run reads (@stage/label)

    @property
    def done(self) -> bool:
        return (self.folder / FINISHED_MARKER).is_file()

    @property
    def model(self) -> str:
        if self.variant == "none" or not self.show_variant:
            return self.method
        return f"{self.method} ({self.variant})"


# Keys that say where or how a run is computed, not what it learns: they do not key its folder. (train.compile
# is keyed: compiled kernels may round differently.) The seed is in the folder name itself. data.protected keys a
# run only where it shapes training (``_protected_shapes_training``); elsewhere it carries group labels along for
# the fairness evaluation.
UNKEYED = {
    ("data", "root"),
    ("data", "num_workers"),
    ("data", "download"),
    ("train", "device"),
    ("train", "log_every"),
    ("train", "channels_last"),
    ("train", "seed"),
}
# Keys added after runs were published: keyed only when set away from their default, so earlier folders keep their
# names (train.pos_weight = "none" is the loss those runs were trained with).
KEYED_WHEN_SET = {
    ("train", "pos_weight"),
    ("train", "min_steps"),
    ("train", "group_balance"),
    ("data", "split"),
    ("data", "test_fraction"),
}
# [data] keys that only some datasets read (``DatasetEntry.reads``), and [model] keys that only some classifiers
# or decoders read (key -> the key that chooses, and the choices that read it). A run that does not read one is
# keyed at its default: earlier folders were keyed on every key, and keep their names this way.
DATASET_OPTIONS = (*ONLY_SOME_DATASETS, "protected")
# [data] keys that only CelebA's identity split reads (``data.split = "identity"``): keyed at their default otherwise.
IDENTITY_SPLIT_OPTIONS = ("test_fraction", "stratify")
MODEL_OPTIONS = {
    "cnn_channels": ("arch", {"cnn"}),
    "decoder_width": ("decoder", {"mlp"}),
    "decoder_channels": ("decoder", {"resnet"}),
}
# The decoder's keys key only the runs of methods with a decoder (``MethodSpec.uses_decoder``).
DECODER_KEYS = {"decoder", "decoder_width", "decoder_channels"}
# The multi-label task loss (``TaskHead.loss``) sums the attributes' binary cross-entropies; earlier runs averaged
# them (the task term divided by K against the reconstruction or KL term). Keyed for multi-label runs only (CelebA
# without a target), so their earlier folders are not reused and no other run's folder changes.
MULTILABEL_LOSS = "bce-summed-over-attributes"


def folder_key(cfg: RunConfig) -> dict[str, Any]:
    """Everything that determines what a run learns: the data, model and training sections (less ``UNKEYED``,
    keys it does not read at their default), its method's own settings (``MethodSpec.folder_key``) and, for a
    multi-label run, the version of its task loss (``MULTILABEL_LOSS``). Not the evaluation settings, not the
    seed (it is in the folder name)."""
    method = get_method(str(cfg.method.name))
    dataset = get_dataset(cfg.data.name)
    unread = {k for k in DATASET_OPTIONS if k not in dataset.reads}
    if cfg.data.split != "identity":
        unread |= set(IDENTITY_SPLIT_OPTIONS)
    if not _protected_shapes_training(cfg):
        unread.add("protected")
    data = cfg.data.model_copy(update={k: DataConfig.model_fields[k].default for k in unread})
    model = cfg.model.model_copy(
        update={
            k: ModelConfig.model_fields[k].default
            for k, (chooser, readers) in MODEL_OPTIONS.items()
            if getattr(cfg.model, chooser) not in readers
        }
    )
    # train.amp is read only while train.precision is unset; unset, the precision adds nothing (earlier folders).
    amp_default = TrainConfig.model_fields["amp"].default
    train = cfg.train if cfg.train.precision is None else cfg.train.model_copy(update={"amp": amp_default})
    key = {
        "data": data.model_dump(mode="json", exclude_none=True),
        "model": model.model_dump(mode="json", exclude_none=True),
        "train": train.model_dump(mode="json", exclude_none=True),
        "method": method.folder_key(cfg),
    }
    for section, name in UNKEYED:
        key[section].pop(name, None)
    for section, name in KEYED_WHEN_SET:
        section_model = type(getattr(cfg, section))
        if key[section].get(name) == section_model.model_fields[name].default:
            key[section].pop(name)
    if _min_steps_idle(cfg, dataset):
        key["train"].pop("min_steps", None)
    if dataset.is_multilabel(cfg.data):
        key["task"] = {"multilabel_loss": MULTILABEL_LOSS}
    if not method.uses_decoder:
        key["model"] = {k: v for k, v in key["model"].items() if k not in DECODER_KEYS}
    return key


def _protected_shapes_training(cfg: RunConfig) -> bool:
    """Whether ``data.protected`` changes what a run learns: the identity split is stratified on it, or the
    adversary learns to predict it (``AdversaryTerms``). Otherwise it only labels groups for the evaluation."""
    if cfg.data.split == "identity" and cfg.data.stratify is None:
        return True
    return get_method(str(cfg.method.name)).adversary_of(cfg).active


def _min_steps_idle(cfg: RunConfig, dataset: DatasetEntry) -> bool:
    """Whether ``train.min_steps`` leaves the run's epochs as they are, as far as the training-split size is known
    without loading the data (``DatasetEntry.train_examples``): a floor that does not bind changes nothing."""
    size = dataset.train_examples(cfg.data) if dataset.train_examples is not None else None
    if size is None:
        return False
    return cfg.train.epochs * math.ceil(size / cfg.data.batch_for(size)) >= cfg.train.min_steps


def config_hash(cfg: RunConfig) -> str:
    """A short hash of ``folder_key(cfg)``."""
    return hashlib.sha1(json.dumps(folder_key(cfg), sort_keys=True).encode()).hexdigest()[:8]


def folder_name(cfg: RunConfig) -> str:
    """``<dataset>__<method>[__<tag>...]__<hash>__seed<k>``."""
    return f"{run_label(cfg)}__{config_hash(cfg)}__seed{cfg.train.seed}"


def plan(
    recipe: Recipe, data_root: Path | None = None, out_dir: Path | None = None, overrides: list[str] | None = None
) -> list[PlannedRun]:
    """Every run of the recipe, in order, with its resolved config and folder."""
    runs: list[PlannedRun] = []
    for stage in recipe.grid:
        for dataset in stage.datasets:
            for method in stage.methods:
                for variant in stage.variants:
                    for seed in stage.seeds:
                        sets = [*stage.set, *variant.set, *(overrides or [])]
                        needs = tuple(dict.fromkeys(r.folder for s in sets if (r := _reference(s, runs, dataset))))
                        sets = [_resolve_reference(s, runs, dataset) for s in sets]
                        options = {
                            "data.name": dataset,
                            "method.name": method,
                            "train.seed": seed,
                            "data.root": str(data_root) if data_root else None,
                            "out_dir": str(out_dir) if out_dir else None,
                        }
                        cfg = build_config(recipe.base, options, sets)
                        # Named by what determines the run (not by the variant's label), so recipes share runs.
                        folder = cfg.out_dir / folder_name(cfg)
                        runs.append(
                            PlannedRun(
                                stage.name,
                                dataset,
                                method,
                                variant.label,
                                seed,
                                cfg,
                                folder,
                                stage.in_table,
                                variant.show,
                                needs,
                            )
                        )
    return runs


def _resolve_reference(text: str, runs: list[PlannedRun], dataset: str) -> str:
    """``key=@stage/label`` -> ``key=<that run's model.pt>`` (same dataset, the stage's first seed)."""
    run = _reference(text, runs, dataset)
    return text if run is None else f"{text.split('=@', 1)[0]}={run.folder / 'model.pt'}"


def _reference(text: str, runs: list[PlannedRun], dataset: str) -> PlannedRun | None:
    """The earlier run an override ``key=@stage/label`` refers to; None for an override without a reference."""
    if "=@" not in text:
        return None
    ref = text.split("=@", 1)[1]
    stage, _, label = ref.partition("/")
    for run in runs:
        if run.stage == stage and run.variant == label and run.dataset == dataset:
            return run
    raise ConfigError(f"reference @{ref} matches no earlier run of stage {stage!r} on {dataset}; define it first")


def runs_for(evaluation: Evaluation, runs: list[PlannedRun]) -> list[PlannedRun]:
    """The runs an evaluation sees: its stages (default: every stage in the table), only its methods and datasets
    if named, and for an evaluation against outlier sets only the runs it names outlier sets for."""
    chosen = [r for r in runs if (r.stage in evaluation.stages if evaluation.stages else r.in_table)]
    chosen = [r for r in chosen if evaluation.datasets is None or r.dataset in evaluation.datasets]
    chosen = [r for r in chosen if evaluation.methods is None or r.method in evaluation.methods]
    if EVALUATIONS[evaluation.kind].per_outlier_set:
        chosen = [r for r in chosen if outlier_sets(evaluation, r)]
    return chosen


def dry_run_lines(runs: list[PlannedRun]) -> list[str]:
    return [f"{'done' if r.done else 'todo'}  {r.stage:>10}  {r.folder.name}" for r in runs]
