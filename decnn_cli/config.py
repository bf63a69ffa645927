"""Typed run configuration: defaults < TOML recipe < first-class CLI options < ``--set section.key=value``.

Every field is documented where it is defined. Sections forbid unknown keys, so a misspelt key in a recipe or
an override is an error (exit code 2), never a silent default. The ``[method]`` section is the exception: its
keys are declared by the methods themselves. This module imports neither registry: dataset and method names,
method keys and the dataset defaults are checked and filled by ``decnn_cli.resolve.build_config``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from decnn_cli.errors import ConfigError

# Under this many training examples a batch of 128 gives few optimizer steps per epoch (the 6,000-image CelebA
# subset: 36), so data.batch_size = "auto" takes 32; from there on 128 (MNIST: 422 steps per epoch).
SMALL_TRAINING_SET = 5_000

RUN_SECTIONS = ("data", "model", "method", "train", "eval")
# Arithmetic of a run: fp32, bf16 autocast, or bf16 where the device runs it natively (``engine.resolve_precision``).
Precision = Literal["fp32", "bf16", "auto"]
# Top-level tables of a recipe that describe a grid of runs for `decnn reproduce`, not a single run.
RECIPE_KEYS = {"table", "grid", "evaluations"}
TOP_LEVEL_KEYS = {"out_dir"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    name: str = Field("digits", description="Dataset name from the registry (`decnn datasets` lists them).")
    root: Path | None = Field(
        None, description="Data root in torchvision's layout; when unset, $DECNN_DATA_ROOT is used."
    )
    download: bool = Field(False, description="Fetch missing files with torchvision's downloader.")
    subset: int | None = Field(
        None, ge=1, description="Cap every split at this many examples (seeded): for smoke runs."
    )
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Share of the training split held out.")
    split_seed: int = Field(
        0, description="Seed of the train/val split and of --subset; fixed across seeds so test sets agree."
    )
    batch_size: int | Literal["auto"] = Field(
        128,
        description="Training batch size (when unset: the dataset's default). 'auto' follows the training split's "
        "size: 32 under 5,000 examples, else 128 (the rule the named datasets' defaults follow; the default of "
        "folder: and torchvision: datasets, whose size is known only once read). The batch a run used is in its "
        "metrics.json.",
    )
    num_workers: int = Field(0, ge=0, description="DataLoader workers for datasets read lazily from disk.")
    target: str | None = Field(
        None,
        description="What to predict, when the dataset offers a choice: a CelebA attribute (default: all 40, "
        "multi-label) or 'digit' / 'color' for the coloured datasets.",
    )
    negate_target: bool = Field(
        False, description="Predict the absence of `target` (CelebA: not No_Beard, also offered as target 'Bearded')."
    )
    protected: str | None = Field(
        None,
        description="Attribute carried along as group labels: for the fairness evaluation, the identity split's "
        "stratification (unless `stratify` names another) and the adversary (method.protect_adversary_weight). The "
        "coloured datasets always carry their colour.",
    )
    split: Literal["official", "identity"] = Field(
        "official",
        description="How CelebA is split into train / val / test: 'official' (list_eval_partition.txt) or "
        "'identity': a split seeded by `split_seed` in which no identity (identity_CelebA.txt) is in two splits and "
        "each split holds about the same share of the `stratify` attribute (scikit-learn's StratifiedGroupKFold): "
        "`test_fraction` of the identities for test, `val_fraction` of the rest for validation. For attributes the "
        "official partition leaves out of a split (the 6,000-image subset's test partition has no bald person).",
    )
    test_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="CelebA's 'identity' split: the share of identities held out for test."
    )
    stratify: str | None = Field(
        None, description="CelebA's 'identity' split: the attribute it stratifies on (unset: `protected`)."
    )
    holdout_attr: str | None = Field(
        None, description="CelebA attribute whose positive images are removed from train and val (Table 3)."
    )
    color_correlation: float = Field(
        0.9, ge=0.0, le=1.0, description="Coloured datasets: P(colour == label-linked colour) in train/val."
    )
    image_size: tuple[int, int] | None = Field(
        None,
        description="folder: and torchvision: datasets: every image resized to [height, width] (one number: a "
        "square; bilinear, antialiased). Unset: the size of the first training image, scaled down (aspect kept) to at "
        "most 64 on its longer side.",
    )
    channels: Literal[1, 3] | None = Field(
        None,
        description="folder: and torchvision: datasets: 1 (colour images to grayscale, ITU-R 601 luma) or 3 (a "
        "grayscale channel copied to RGB). Unset: the first training image's (1 if it is grayscale, else 3).",
    )

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"batch_size must be a positive number or 'auto', got {value!r}")

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        """One number is a square: 32 -> (32, 32)."""
        return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("image_size")
    @classmethod
    def _positive(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"image_size must be positive, got {list(value)}")
        return value

    @property
    def stratified_on(self) -> str | None:
        """The attribute CelebA's 'identity' split keeps in proportion (derived: ``stratify``, else ``protected``)."""
        return self.stratify or self.protected

    def batch_for(self, train_examples: int) -> int:
        """The training batch: ``batch_size``, or for "auto" 32 below ``SMALL_TRAINING_SET`` training examples and
        128 from there on."""
        if self.batch_size != "auto":
            return self.batch_size
        return 32 if train_examples < SMALL_TRAINING_SET else 128


# Classifiers without hidden layers (the pretrained models m of Sec. 4.2): only methods that need no hidden layer
# (``MethodSpec.needs_hidden_layers``) are built on them.
ARCHS_WITHOUT_HIDDEN_LAYERS = ("linear", "resnet18")


class ModelConfig(_Section):
    arch: Literal["mlp", "cnn", "linear", "resnet18"] = Field(
        "mlp",
        description="Classifier f: 'mlp' (the paper's), 'cnn' (Appendix A.6), or 'linear'/'resnet18' "
        "(pretrained models m for composition, Sec. 4.2).",
    )
    depth: int = Field(8, ge=1, description="Hidden layers L of the MLP (blocks of the CNN).")
    width: int = Field(256, ge=1, description="Units per hidden layer; constant so one decoder serves all.")
    decoder: Literal["mlp", "resnet"] = Field(
        "mlp", description="Shared decoder g: 'resnet' (ResNet-18-style, the paper's) or 'mlp' (CPU-sized)."
    )
    decoder_width: int = Field(512, ge=1, description="Hidden units of the MLP decoder.")
    decoder_channels: int = Field(
        64, ge=4, description="Channels of the last ResNet decoder stage (stages use 8x, 4x, 2x, 1x this)."
    )
    cnn_channels: int = Field(32, ge=1, description="Channels of the first CNN block (doubling every 2).")


class MethodConfig(_Section):
    """The flat ``[method]`` section: the method's name and the settings of the methods.

    Each method declares the keys it reads in its own settings model (``decnn_cli/methods/``); this section
    accepts any of them, and ``decnn_cli.resolve.build_config`` checks them against the registry: a key that no
    registered method knows is an error, and a run keeps only the keys its method reads.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str | None = Field(
        None, description="Method from the registry (`decnn methods` lists them); unset: the paper's ReDecNN."
    )


class TrainConfig(_Section):
    epochs: int = Field(
        10, ge=1, description="Passes over the training split (when unset: the dataset's default, 20 for digits)."
    )
    min_steps: int = Field(
        0,
        ge=0,
        description="Fewest optimizer steps a run takes: its epochs are raised to ceil(min_steps / steps per epoch) "
        "when ``epochs`` gives fewer (0: epochs as given). A schedule in epochs gives a small dataset few steps, and "
        "ReDecNN converges more slowly than a standard network: on FSDD (1,620 clips, batch 32) 20 epochs are "
        "1,020 steps. The raised epoch count is recorded in metrics.json.",
    )
    lr: float = Field(1e-3, gt=0.0, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="Adam weight decay.")
    schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="Learning-rate schedule over all steps: cosine decay to 0, or constant."
    )
    pos_weight: Literal["none", "balanced"] = Field(
        "none",
        description="Weight of positive labels in the task loss of multi-label and two-class tasks: 'none', or "
        "'balanced': each attribute's positives (a two-class task's class 1) weighted by n_negative / n_positive "
        "counted on the training split, at most 100, and 1 for an attribute with a single value there. Without it "
        "a rare attribute (CelebA's Bald) is learned as 'never'. Evaluation metrics are never weighted.",
    )
    group_balance: bool = Field(
        False,
        description="Draw training examples so that every (task class, protected group) cell is equally likely "
        "(with replacement, as many draws an epoch as the split holds examples; a cell with no example is never "
        "drawn): group-balanced sampling (Idrissi et al. 2022). Where the attribute is correlated with the label in "
        "training (the coloured datasets' 0.95) it no longer predicts it, and each cell fills a quarter of a "
        "two-class batch (coloured MNIST's rare ones 2.5% without it), so the mean gap and the adversary see the "
        "rare group in every batch. The groups are the protected attribute's (data.protected on CelebA; the "
        "coloured datasets carry their colour); without one the cells are the classes alone (class-balanced "
        "drawing, an alternative to pos_weight where the rare class averages under one example a batch). Needs one "
        "label per example; not with pos_weight = 'balanced', which would correct the classes twice.",
    )
    seed: int = Field(0, description="Seed of initialisation, shuffling and path sampling.")
    device: str = Field("auto", description="'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'.")
    log_every: int = Field(25, ge=1, description="Steps between progress-bar refreshes (each one syncs).")
    compile: bool = Field(
        False, description="Compile the classifier's and the decoder's forward with torch.compile (in place)."
    )
    channels_last: bool = Field(
        False, description="Convolutional models (CNN, ResNet decoder) in channels_last memory format on CUDA."
    )
    amp: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU); read only while `precision` is unset.")
    precision: Precision | None = Field(
        None,
        description="Arithmetic of training, and of evaluation unless eval.precision says otherwise: 'fp32'; "
        "'bf16' (autocast: matmuls and convolutions in bf16, weights, losses and reductions in fp32); 'auto': bf16 "
        "where the device runs it natively (a CUDA GPU of compute capability 8.0 or newer, or a CPU whose flags "
        "include avx512_bf16 or amx_bf16), else fp32. Unset: `amp` decides, as before this key existed (bf16 on "
        "CUDA, fp32 on CPU).",
    )


class EvalConfig(_Section):
    samples: int = Field(32, ge=1, description="N sampled predictions per input for uncertainty (Eq. 6).")
    batch_size: int = Field(512, ge=1, description="Evaluation batch size (before the N-fold expansion).")
    ece_bins: int = Field(15, ge=1, description="Equal-width bins of the expected calibration error.")
    precision: Precision | None = Field(
        None, description="Arithmetic of evaluation (fp32, bf16 or auto, as train.precision); unset: the training's."
    )


class RunConfig(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    method: MethodConfig = MethodConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    out_dir: Path = Field(Path("results/runs"), description="Folder that receives one folder per run.")


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "config"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = f"unknown key; valid keys here: {_valid_keys(first['loc'][:-1])}"
    return f"invalid configuration at {where}: {message}"


def _valid_keys(location: tuple) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in location:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            break
        model = field.annotation
    return sorted(model.model_fields)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, section by section."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """``"method.alpha=0.5"`` -> ``{"method": {"alpha": 0.5}}``; values parse as TOML, else stay strings."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    dotted, raw = text.split("=", 1)
    keys = dotted.strip().split(".")
    top_level = len(keys) == 1 and keys[0] in TOP_LEVEL_KEYS
    if (len(keys) < 2 and not top_level) or not all(keys):
        raise ConfigError(f"override {text!r} must name a section and a key, as in method.alpha=0.5")
    try:
        value: Any = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return _nest(keys, value)


def _nest(keys: list[str], value: Any) -> dict[str, Any]:
    nested: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        nested = {key: nested}
    return nested


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning a missing or malformed file into one clear error."""
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist; pass the path of a TOML file (see recipes/)")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"recipe {path} is not valid TOML ({err}); fix the file") from err


def merge_sources(
    recipe: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """One raw config dict from a recipe's run sections, CLI options and ``--set`` overrides (in that order).

    ``options`` uses dotted keys (``{"method.name": "decnn"}``); ``None`` values are skipped.
    """
    merged: dict[str, Any] = {}
    if recipe:
        merged = deep_merge(merged, recipe)
    for dotted, value in (options or {}).items():
        if value is not None:
            merged = deep_merge(merged, _nest(dotted.split("."), value))
    for text in overrides or []:
        merged = deep_merge(merged, parse_override(text))
    return merged


def validate_config(merged: dict[str, Any]) -> RunConfig:
    """The RunConfig of a raw config dict; the first invalid key or value is one ConfigError."""
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """A TOML-safe dict (paths as strings, None dropped) that ``build_config`` reads back to an equal config."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, Path):
            return str(value)
        return value

    return clean(cfg.model_dump())


def dump_toml(cfg: RunConfig) -> str:
    return tomli_w.dumps(config_to_dict(cfg))
