"""A decoder that reads the protected attribute beside h_l, g(h_l, a): training, sampling, folders, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from decnn_cli import engine
from decnn_cli.cli import app
from decnn_cli.data.spec import DataSpec
from decnn_cli.errors import DecnnError
from decnn_cli.experiments.reproduce.planning import folder_name
from decnn_cli.methods import LossContext, get_method
from decnn_cli.resolve import build_config
from decnn_cli.tasks import TaskHead

SPEC = DataSpec("toy", (3, 8, 8), 2, "multiclass", ("0-4", "5-9"), (0.5,) * 3, (0.5,) * 3, ("red", "green"))
SMALL = ["model.depth=3", "model.width=16", "model.decoder_width=32", "method.recursion_depth=2"]
GIVEN = "method.decode_given_protected=true"


def _network(name: str, *extra: str, spec: DataSpec = SPEC):
    torch.manual_seed(0)
    cfg = build_config(overrides=[f"method.name={name}", *SMALL, *extra])
    method = get_method(name)
    return cfg, method, method.network(cfg, spec)


def test_the_decoding_follows_the_group_given_and_a_plain_decoder_ignores_it():
    _, _, model = _network("redecnn", GIVEN)
    hidden = model(torch.rand(4, *SPEC.in_shape))[1]
    red, green = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    as_red, as_green = model.decoder.decode_all(hidden, red), model.decoder.decode_all(hidden, green)
    assert as_red.shape == (3, 4, *SPEC.in_shape)
    assert not torch.allclose(as_red, as_green)
    assert torch.equal(model.decoder.decode_all(hidden, red), as_red)
    layer = torch.tensor([0, 1, 2, 1])
    picked = model.decoder.decode_selected(hidden, layer, green)
    assert torch.allclose(picked, as_green[layer, torch.arange(4)])
    # Unknown groups are drawn: every decoding is one of the two groups' decodings.
    drawn = model.decoder.decode_all(hidden)
    is_red = (drawn - as_red).abs().flatten(2).amax(2) < 1e-6
    is_green = (drawn - as_green).abs().flatten(2).amax(2) < 1e-6
    assert (is_red | is_green).all()
    _, _, plain = _network("redecnn")
    hidden = plain(torch.rand(4, *SPEC.in_shape))[1]
    assert torch.equal(plain.decoder.decode_all(hidden, red), plain.decoder.decode_all(hidden, green))


@pytest.mark.parametrize("name", ["decnn", "redecnn"])
def test_the_loss_decodes_with_the_batchs_groups_and_trains_the_groups_codes(name: str):
    cfg, method, model = _network(name, GIVEN)
    x, y = torch.rand(6, *SPEC.in_shape), torch.arange(6) % 2
    ctx = LossContext(method.settings_of(cfg), TaskHead("multiclass"), num_train=100)
    losses = []
    for groups in (torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.long)):
        ctx.groups = groups
        torch.manual_seed(1)  # the same layers drawn for ReDecNN's paths
        losses.append(method.loss(model, x, y, ctx).total)
    assert not torch.allclose(losses[0], losses[1])
    losses[1].backward()
    grad = model.decoder.attribute.weight.grad
    assert grad[1].abs().sum() > 0 and grad[0].abs().sum() == 0  # only the group decoded reaches its code


def test_sampled_paths_decode_through_the_groups_codes():
    cfg, method, model = _network("redecnn", GIVEN)
    model.eval()
    x = torch.rand(5, *SPEC.in_shape)

    def sampled() -> torch.Tensor:
        torch.manual_seed(2)  # the same layers and groups drawn each time
        with torch.no_grad():
            return method.sample(model, x, 7, method.settings_of(cfg))

    logits = sampled()
    assert logits.shape == (7, 5, 2) and torch.isfinite(logits).all()
    assert torch.equal(sampled(), logits)
    with torch.no_grad():
        model.decoder.attribute.weight.zero_()  # the paths' decodings no longer carry a group
    assert not torch.allclose(sampled(), logits)


def test_a_conditioned_decoder_needs_groups_and_renames_only_the_runs_that_use_it():
    plain_digits = DataSpec("toy", (1, 8, 8), 10, "multiclass", tuple("0123456789"), (0.5,), (0.5,))
    with pytest.raises(DecnnError, match="decode_given_protected needs the protected attribute's labels"):
        _network("redecnn", GIVEN, spec=plain_digits)

    def name(*overrides: str) -> str:
        return folder_name(build_config(overrides=["method.name=redecnn", *overrides]))

    assert name("method.decode_given_protected=false") == name()
    assert name(GIVEN) != name() and "__decoder-given-protected__" in name(GIVEN)


def test_a_tiny_training_with_a_conditioned_decoder_and_the_adversary(tmp_path: Path, runner):
    settings = (*SMALL, GIVEN, "method.protect_adversary_weight=1")
    args = ["train", "-q", "-m", "redecnn", "-d", "colored-digits", "--subset", "160", "--epochs", "1"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path), *[a for s in settings for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["recon_mse_per_layer"]) == 3
    loaded = engine.load_checkpoint(run / "model.pt")  # the groups' codes are saved with g and load back
    assert loaded.model.decoder.attribute.num_embeddings == 2


def test_rows_of_a_decoder_given_the_attribute_name_it():
    from decnn_cli.experiments.common import run_variant

    assert run_variant(build_config(overrides=["method.name=redecnn", GIVEN])) == "g(h, a)"
    with_adversary = build_config(overrides=["method.name=redecnn", GIVEN, "method.protect_adversary_weight=0.1"])
    assert run_variant(with_adversary) == "g(h, a), adversary 0.1"
    standardised = build_config(
        overrides=[
            "method.name=redecnn",
            "method.protect_adversary_weight=1",
            "method.protect_adversary_standardised=true",
        ]
    )
    assert run_variant(standardised) == "adversary 1 (standardised)"
    every_way = build_config(
        overrides=[
            "method.name=redecnn",
            "method.protect_adversary_weight=1",
            "method.protect_adversary_objective=confusion",
            "method.protect_adversary_given_label=false",
            "method.protect_adversary_standardised=true",
        ]
    )
    assert run_variant(every_way) == "adversary 1 (confusion, without the label, standardised)"
    assert run_variant(build_config(overrides=["method.name=standard", GIVEN])) == "none"  # no decoder to give it to
