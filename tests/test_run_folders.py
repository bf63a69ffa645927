"""Run folders are named by exactly what can change a run's result: every config key of every method, changed
one at a time, renames the folder if and only if the run could learn something else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from decnn_cli.config import RUN_SECTIONS, RunConfig
from decnn_cli.data import DATASETS
from decnn_cli.data.spec import DataSpec
from decnn_cli.errors import ConfigError
from decnn_cli.experiments.reproduce.planning import folder_name
from decnn_cli.methods import METHODS, LossContext, MethodSpec, get_method, method_keys
from decnn_cli.resolve import ONLY_SOME_DATASETS, build_config
from decnn_cli.results import run_name
from decnn_cli.tasks import TaskHead

# A changed value for every key of every section (a new key must be added here, with whether it changes results).
CHANGED: dict[tuple[str, ...], Any] = {
    ("data", "name"): "colored-digits",
    ("data", "root"): "/elsewhere/data",
    ("data", "download"): True,
    ("data", "subset"): 50,
    ("data", "val_fraction"): 0.2,
    ("data", "split_seed"): 1,
    ("data", "batch_size"): 64,
    ("data", "num_workers"): 2,
    ("data", "target"): "color",
    ("data", "negate_target"): True,
    ("data", "protected"): "Bald",
    ("data", "holdout_attr"): "Bald",
    ("data", "color_correlation"): 0.5,
    ("data", "split"): "identity",
    ("data", "test_fraction"): 0.3,
    ("data", "stratify"): "Male",
    ("data", "image_size"): [32, 32],
    ("data", "channels"): 3,
    ("model", "arch"): "cnn",
    ("model", "depth"): 4,
    ("model", "width"): 64,
    ("model", "decoder"): "resnet",
    ("model", "decoder_width"): 128,
    ("model", "decoder_channels"): 16,
    ("model", "cnn_channels"): 8,
    ("train", "epochs"): 3,
    ("train", "min_steps"): 1000,
    ("train", "lr"): 0.01,
    ("train", "weight_decay"): 0.1,
    ("train", "schedule"): "constant",
    ("train", "pos_weight"): "balanced",
    ("train", "group_balance"): True,
    ("train", "seed"): 5,
    ("train", "device"): "cpu",
    ("train", "log_every"): 3,
    ("train", "compile"): True,
    ("train", "channels_last"): True,
    ("train", "amp"): False,
    ("train", "precision"): "bf16",
    ("eval", "samples"): 3,
    ("eval", "batch_size"): 4,
    ("eval", "ece_bins"): 4,
    ("eval", "precision"): "bf16",
    ("out_dir",): "/elsewhere/runs",
    ("method", "beta"): 1.0,
    ("method", "alpha"): 0.5,
    ("method", "recursion_depth"): 4,
    ("method", "warmup"): 0.2,
    ("method", "dropout"): 0.3,
    ("method", "ensemble_size"): 3,
    ("method", "prior_sigma1"): 0.5,
    ("method", "prior_sigma2"): 0.01,
    ("method", "prior_pi"): 0.3,
    ("method", "posterior_rho_init"): -4.0,
    ("method", "kl_warmup"): 0.2,
    ("method", "compose_with"): "/pretrained/m/model.pt",
    ("method", "compose_target"): "direct",
    ("method", "compose_weight"): 2.0,
    ("method", "protect_with"): "/pretrained/p/model.pt",
    ("method", "protect_weight"): 2.0,
    ("method", "protect_trains_decoder"): False,
    ("method", "protect_adversary_weight"): 1.0,
    ("method", "protect_adversary_hidden"): 8,
    ("method", "protect_adversary_given_label"): False,
    ("method", "protect_adversary_objective"): "confusion",
    ("method", "protect_adversary_standardised"): True,
    ("method", "protect_mean_match_weight"): 1.0,
    ("method", "protect_mean_match_layers"): "every",
    ("method", "decode_given_protected"): True,
}

# Whether changing a key of the data, model, train and eval sections (on the bundled digits, an MLP, the MLP
# decoder) can change what a run of ``spec`` learns.
CHANGES_RESULT = {
    ("data", "name"): True,
    ("data", "root"): False,  # where the files are, not what they hold
    ("data", "download"): False,
    ("data", "subset"): True,
    ("data", "val_fraction"): True,
    ("data", "split_seed"): True,
    ("data", "batch_size"): True,
    ("data", "num_workers"): False,
    ("data", "target"): False,  # the bundled digits have one target
    ("data", "negate_target"): False,
    ("data", "protected"): False,  # group labels only, for the fairness evaluation
    ("data", "holdout_attr"): False,
    ("data", "color_correlation"): False,
    ("data", "split"): False,  # CelebA's only
    ("data", "test_fraction"): False,
    ("data", "stratify"): False,
    ("data", "image_size"): False,  # read by folder: and torchvision: datasets only
    ("data", "channels"): False,
    ("model", "arch"): True,
    ("model", "depth"): True,
    ("model", "width"): True,
    ("model", "decoder"): "uses_decoder",
    ("model", "decoder_width"): "uses_decoder",
    ("model", "decoder_channels"): False,  # the ResNet decoder's only
    ("model", "cnn_channels"): False,  # the CNN's only
    ("train", "epochs"): True,
    ("train", "min_steps"): True,  # keyed when set: it raises the epochs of a small training set
    ("train", "lr"): True,
    ("train", "weight_decay"): True,
    ("train", "schedule"): True,
    ("train", "pos_weight"): True,  # keyed when set; a run of more than two classes refuses it
    ("train", "group_balance"): True,  # keyed when set
    ("train", "seed"): True,
    ("train", "device"): False,
    ("train", "log_every"): False,
    ("train", "compile"): True,  # compiled kernels may round differently
    ("train", "channels_last"): False,
    ("train", "amp"): True,  # bf16 on CUDA
    ("train", "precision"): True,  # bf16 rounds every matmul of training
    ("eval", "samples"): False,  # evaluation settings: the trained model is the same
    ("eval", "batch_size"): False,
    ("eval", "ece_bins"): False,
    ("eval", "precision"): False,
    ("out_dir",): False,
}

SMALL = ["model.depth=3", "model.width=16", "model.decoder_width=32", "method.recursion_depth=2"]
# With protected groups, so that a decoder given the attribute can be built (unknown groups are drawn).
SPEC = DataSpec("toy", (1, 8, 8), 4, "multiclass", tuple("abcd"), (0.5,), (0.5,), ("g0", "g1"))


def _override(key: tuple[str, ...], value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, str) else value
    return f"{'.'.join(key)}={text}"


def _name(method: str, *overrides: str) -> str:
    return folder_name(build_config(overrides=[f"method.name={method}", *overrides]))


def test_every_config_key_has_a_changed_value_and_a_verdict():
    sections = {(section, key) for section in RUN_SECTIONS for key in type(getattr(RunConfig(), section)).model_fields}
    sections.discard(("method", "name"))
    assert {k for k in CHANGED if k[0] != "method"} == sections | {("out_dir",)}
    assert set(CHANGES_RESULT) == sections | {("out_dir",)}
    assert {k[1] for k in CHANGED if k[0] == "method"} == set(method_keys()) - {"name"}


@pytest.mark.parametrize("name", list(METHODS))
def test_folder_name_changes_exactly_when_the_runs_result_could(name: str):
    spec = get_method(name)
    base = _name(name)
    for key, value in CHANGED.items():
        setting = key[1] if key[0] == "method" else None
        if setting in ("compose_with", "protect_with") and not spec.accepts_pretrained_terms:
            with pytest.raises(ConfigError, match="act on decoded activations"):
                _name(name, _override(key, value))
            continue
        if key[0] == "data" and key[1] in ONLY_SOME_DATASETS and key[1] not in DATASETS["digits"].reads:
            # Asked for on a dataset that does not read it: an error, not a run that records it and ignores it.
            with pytest.raises(ConfigError, match=f"data.{key[1]}: dataset 'digits' has no {key[1]}"):
                _name(name, _override(key, value))
            continue
        if setting is not None:
            # A method reads its own settings, and the pretrained-model terms once it is given a model (the
            # weight or target of a term without its model is read by nobody).
            # The adversary's weight turns it on (its other settings are read once it is on); the mean gap's
            # weight turns the mean gap on.
            expected = (
                setting in spec.settings.model_fields
                or (spec.accepts_pretrained_terms and setting in ("compose_with", "protect_with"))
                or (spec.accepts_adversary and setting in ("protect_adversary_weight", "protect_mean_match_weight"))
            )
        else:
            verdict = CHANGES_RESULT[key]
            expected = getattr(spec, verdict) if isinstance(verdict, str) else verdict
        changed = _name(name, _override(key, value))
        assert (changed != base) is expected, f"{name}: {'.'.join(key)}={value!r} -> {changed} (base {base})"


@pytest.mark.parametrize("name", [n for n, s in METHODS.items() if s.accepts_pretrained_terms])
def test_a_terms_weight_and_target_rename_the_folder_once_its_model_is_given(name: str):
    for model, keys in (
        ("compose_with", ("compose_target", "compose_weight")),
        ("protect_with", ("protect_weight", "protect_trains_decoder")),
    ):
        given = _override(("method", model), CHANGED[("method", model)])
        base = _name(name, given)
        for key in keys:
            assert _name(name, given, _override(("method", key), CHANGED[("method", key)])) != base, key


def test_precision_renames_folders_only_when_set_and_then_amp_is_not_read():
    base = _name("redecnn")
    names = {choice: _name("redecnn", f"train.precision={choice!r}") for choice in ("fp32", "bf16", "auto")}
    assert len({base, *names.values()}) == 4  # unset (amp decides), fp32, bf16 and auto each name their own runs
    assert _name("redecnn", "train.amp=false") != base  # unset: amp is read, as before precision existed
    for choice, name in names.items():
        assert _name("redecnn", f"train.precision={choice!r}", "train.amp=false") == name  # set: amp is not read
    assert _name("redecnn", "eval.precision='bf16'") == base  # evaluation settings do not key the run


def test_dataset_specific_keys_rename_the_folders_of_datasets_that_read_them():
    base = _name("standard", "data.name=colored-digits")
    assert _name("standard", "data.name=colored-digits", "data.color_correlation=0.5") != base
    colour = _name("standard", "data.name=colored-digits", "data.target=color")
    assert colour != base and "__target-color__" in colour
    held_out = _name("redecnn", "data.name=celeba", "data.holdout_attr=Bald")
    assert held_out != _name("redecnn", "data.name=celeba") and "__holdout-Bald__" in held_out
    # The decoder's channels and the CNN's width matter once the run uses them.
    resnet = ["model.decoder=resnet"]
    assert _name("decnn", *resnet, "model.decoder_channels=16") != _name("decnn", *resnet)
    assert _name("standard", "model.arch=cnn", "model.cnn_channels=8") != _name("standard", "model.arch=cnn")


def test_celebas_identity_split_and_the_attribute_it_stratifies_on_rename_its_folders():
    bearded = ("data.name=celeba", "data.target=Bearded", "data.protected=Bald")
    official = _name("redecnn", *bearded)
    assert official == _name("redecnn", "data.name=celeba", "data.target=Bearded")  # groups only label the evaluation
    assert official == _name("redecnn", *bearded, "data.test_fraction=0.3")  # read by the identity split only
    identity = _name("redecnn", *bearded, "data.split=identity")
    assert identity != official and "__target-Bearded__split-identity-Bald__" in identity
    # The split is stratified on the protected attribute unless `stratify` names another.
    assert _name("redecnn", *bearded, "data.split=identity", "data.protected=Male") != identity
    stratified = ("data.split=identity", "data.stratify=Bald")
    assert _name("redecnn", *bearded, *stratified) == _name("redecnn", *bearded, *stratified, "data.protected=Male")
    assert _name("redecnn", *bearded, "data.split=identity", "data.test_fraction=0.3") != identity
    # The official partition is the default: naming it changes nothing.
    assert _name("redecnn", *bearded, "data.split=official") == official


def test_folder_datasets_are_named_safely_and_keyed_on_their_path_and_image_shape(tmp_path: Path):
    tree = tmp_path / "my images" / "set:a"
    (tree / "cat").mkdir(parents=True)
    (tree / "cat" / "1.png").write_bytes(b"")  # found by name; not read when naming runs
    name = f"data.name='folder:{tree}'"
    base = _name("standard", name)
    assert base.startswith("folder-set-a__standard__") and "/" not in base
    assert _name("standard", name, "data.image_size=32") != base
    assert _name("standard", name, "data.image_size=32") == _name("standard", name, "data.image_size=[32, 32]")
    assert _name("standard", name, "data.channels=3") != base
    other = tmp_path / "elsewhere" / "set:a"
    (other / "cat").mkdir(parents=True)
    (other / "cat" / "1.png").write_bytes(b"")
    assert _name("standard", f"data.name='folder:{other}'") != base  # the same folder name, other data
    # The same folder written differently is the same dataset.
    assert _name("standard", f"data.name='folder:{tree}/./'") == base
    torchvision = _name("standard", "data.name='torchvision:kmnist'")
    assert torchvision.startswith("torchvision-KMNIST__standard__")
    assert torchvision == _name("standard", "data.name='torchvision:KMNIST'")
    run = run_name(build_config(overrides=[name, "method.name=standard"]))
    assert run.startswith("folder-set-a__standard__seed0__")


def test_multilabel_runs_are_keyed_on_their_task_loss_and_no_other_run_is():
    # Named while the multi-label loss averaged its attributes: a multi-label CelebA run trains another objective
    # now and must not reuse them ...
    assert _name("standard", "data.name=celeba") != "celeba__standard__62a7b7b6__seed0"
    held_out = _name("standard", "data.name=celeba", "data.holdout_attr=Wearing_Hat")
    assert held_out != "celeba__standard__holdout-Wearing_Hat__728367f2__seed0"
    # ... while a single-target CelebA run (a two-class task, whose loss is unchanged) keeps its name (at the batch
    # size of 128 those runs had, before CelebA's default became 32).
    celeba = ("data.name=celeba", "data.batch_size=128")
    assert _name("standard", *celeba, "data.target=Bald") == "celeba__standard__target-Bald__75cbd432__seed0"
    negated = _name("standard", *celeba, "data.target=No_Beard", "data.negate_target=true")
    assert negated == "celeba__standard__target-not-No_Beard__3b940ccb__seed0"


def test_positive_weights_rename_a_folder_only_when_set():
    bald = ("data.name=celeba", "data.batch_size=128", "data.target=Bald")
    assert _name("standard", *bald, "train.pos_weight=none") == "celeba__standard__target-Bald__75cbd432__seed0"
    assert _name("standard", *bald, "train.pos_weight=balanced") != _name("standard", *bald)


def _learned(name: str, *overrides: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One seeded training loss and one seeded set of sampled predictions of a tiny network of ``name``."""
    cfg = build_config(overrides=[f"method.name={name}", *SMALL, *overrides])
    method = get_method(name)
    settings = method.settings_of(cfg)
    torch.manual_seed(0)
    model = method.network(cfg, SPEC)
    x, y = torch.rand(6, *SPEC.in_shape), torch.arange(6) % 4
    torch.manual_seed(1)
    # Early in training (progress 0.1), where a warm-up still scales its terms.
    ctx = LossContext(settings, TaskHead("multiclass"), num_train=100, progress=0.1)
    loss = method.loss(model.train(), x, y, ctx).total
    torch.manual_seed(2)
    with torch.no_grad():
        samples = method.sample(model.eval(), x, 4, settings)
    return loss.detach(), samples


@pytest.mark.parametrize("name", list(METHODS))
def test_every_setting_a_method_declares_changes_what_it_computes(name: str):
    # The other half of "exactly": a method's settings key its folders, so each must change what it learns.
    spec: MethodSpec = get_method(name)
    base_loss, base_samples = _learned(name)
    for setting in spec.settings.model_fields:
        loss, samples = _learned(name, _override(("method", setting), CHANGED[("method", setting)]))
        same = samples.shape == base_samples.shape and torch.equal(samples, base_samples)
        assert not (torch.equal(loss, base_loss) and same), f"{name} ignores its setting {setting}"


def test_decnn_train_names_show_what_distinguishes_the_run(tmp_path: Path):
    plain = run_name(build_config(overrides=["method.name=standard"]))
    assert plain.startswith("digits__standard__seed0__")
    colour = run_name(build_config(overrides=["method.name=standard", "data.name=colored-digits", "data.target=color"]))
    assert colour.startswith("colored-digits__standard__target-color__seed0__")
    protector = tmp_path / "colored-digits__standard__target-color__seed0__20250101-120000" / "model.pt"
    protected = run_name(
        build_config(overrides=["data.name=colored-digits", f"method.protect_with={protector}", "train.seed=2"])
    )
    assert protected.startswith("colored-digits__redecnn__protect-standard-target-color-seed0-20250101-120000__seed2__")
    composed = run_name(
        build_config(overrides=["method.compose_with=/home/m/my model.pt", "method.compose_target=direct"])
    )
    assert composed.startswith("digits__redecnn__compose-direct-my-model__seed0__")
