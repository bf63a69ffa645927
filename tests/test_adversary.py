"""The adversary on h_L: gradient reversal into f, every method that accepts it, its settings and run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from decnn_cli import engine
from decnn_cli.adversary import attach_adversary, group_weights, last_features
from decnn_cli.cli import app
from decnn_cli.data.spec import DataSpec
from decnn_cli.errors import ConfigError, DecnnError
from decnn_cli.experiments.reproduce.planning import folder_name
from decnn_cli.experiments.train import train
from decnn_cli.methods import METHODS, LossContext, get_method
from decnn_cli.models import classifiers_of
from decnn_cli.resolve import build_config
from decnn_cli.tasks import TaskHead

SPEC = DataSpec("toy", (3, 8, 8), 2, "multiclass", ("0-4", "5-9"), (0.5,) * 3, (0.5,) * 3, ("red", "green"))
SMALL = ["model.depth=3", "model.width=16", "model.decoder_width=32", "method.recursion_depth=2"]
ON = "method.protect_adversary_weight=2.5"


def _setup(name: str, *extra: str):
    torch.manual_seed(0)
    cfg = build_config(overrides=[f"method.name={name}", *SMALL, *extra])
    method = get_method(name)
    model = method.network(cfg, SPEC)
    ctx = LossContext(method.settings_of(cfg), TaskHead("multiclass"), num_train=100)
    x, y = torch.rand(8, *SPEC.in_shape), torch.arange(8) % 2
    groups = torch.tensor([0, 1, 1, 0, 0, 1, 0, 0])
    train = TensorDataset(x, y, groups)
    adversary = attach_adversary(ctx, method.adversary_of(cfg), model, SPEC, train, torch.device("cpu"))
    ctx.groups = groups
    return method, model, ctx, adversary, x, y, groups


@pytest.mark.parametrize("given_label", [True, False])
def test_the_adversarys_gradient_reaches_f_with_reversed_sign(given_label: bool):
    method, model, ctx, adversary, x, y, groups = _setup(
        "redecnn", ON, f"method.protect_adversary_given_label={str(given_label).lower()}"
    )
    _, hidden = model(x)
    h_last = hidden[-1]
    through = adversary.term(hidden, y, groups)["adversary"]  # the training loss's term: through the reversal
    own = adversary.loss(last_features(hidden), y, groups)  # the adversary's own loss on the same h_L
    assert torch.allclose(through, own)  # the reversal changes no value, only the gradient
    f = list(model.classifier.parameters())
    head = list(adversary.parameters())
    grad_h_through, *grad_f_through = torch.autograd.grad(through, [h_last, *f], retain_graph=True, allow_unused=True)
    grad_h_own, *grad_f_own = torch.autograd.grad(own, [h_last, *f], retain_graph=True, allow_unused=True)
    assert grad_h_own.abs().sum() > 0
    # f receives -weight times the gradient of the adversary's loss: it learns to raise what the adversary lowers.
    assert torch.allclose(grad_h_through, -2.5 * grad_h_own, atol=1e-7)
    reached = [(a, b) for a, b in zip(grad_f_through, grad_f_own, strict=True) if b is not None]
    assert len(reached) >= 3 and sum(a.abs().sum() for a, _ in reached) > 0  # every layer up to h_L (not the output)
    for through_p, own_p in reached:
        assert torch.allclose(through_p, -2.5 * own_p, atol=1e-7)
    # The adversary's own weights get the plain gradient: it learns to read the attribute.
    for through_p, own_p in zip(
        torch.autograd.grad(through, head, retain_graph=True), torch.autograd.grad(own, head), strict=True
    ):
        assert torch.equal(through_p, own_p)


def test_a_standardised_adversary_cannot_be_fooled_by_scaling_or_shifting_h_l():
    method, model, ctx, adversary, x, y, groups = _setup("redecnn", ON, "method.protect_adversary_standardised=true")
    _, hidden = model(x)
    h_last = hidden[-1].detach().requires_grad_(True)
    loss = adversary.loss(h_last, y, groups)
    moved = adversary.loss(7.0 * h_last + 3.0, y, groups)
    assert torch.allclose(loss, moved, atol=1e-5)  # what it reads is the same for a grown, shifted h_L
    # So the reversed gradient f receives has no part along h_L itself: f cannot raise the loss by growing h_L.
    (grad_h,) = torch.autograd.grad(adversary.term([*hidden[:-1], h_last], y, groups)["adversary"], [h_last])
    assert grad_h.abs().sum() > 0
    assert abs(float((grad_h * h_last.detach()).sum())) < 1e-5 * float(grad_h.norm() * h_last.detach().norm())
    assert grad_h.sum(dim=0).abs().max() < 1e-5 * grad_h.abs().max()  # nor along a common shift
    raw = _setup("redecnn", ON)[3]
    raw.load_state_dict(adversary.state_dict())
    assert not torch.allclose(raw.loss(h_last, y, groups), raw.loss(7.0 * h_last + 3.0, y, groups), atol=1e-3)


def test_the_confusion_objective_trains_the_head_on_its_loss_and_f_towards_a_uniform_adversary():
    method, model, ctx, adversary, x, y, groups = _setup("redecnn", ON, "method.protect_adversary_objective=confusion")
    _, hidden = model(x)
    h_last = hidden[-1]
    terms = adversary.term(hidden, y, groups)
    head = list(adversary.parameters())
    own = adversary.loss(h_last, y, groups)
    # The head learns from its own cross-entropy only, and that cross-entropy sends f nothing.
    for through_p, own_p in zip(
        torch.autograd.grad(sum(terms.values()), head, retain_graph=True),
        torch.autograd.grad(own, head, retain_graph=True),
        strict=True,
    ):
        assert torch.allclose(through_p, own_p)
    (from_ce,) = torch.autograd.grad(terms["adversary"], [h_last], retain_graph=True, allow_unused=True)
    assert from_ce is None
    # f learns from the confusion term: weight times KL(uniform || adversary), whose gradient lowers it.
    probs = torch.softmax(adversary.logits(h_last, y), -1)
    expected = 2.5 * -(probs.log().mean(-1) + torch.log(torch.tensor(2.0))).mean()
    assert torch.allclose(terms["adversary_confusion"], expected)
    (grad_h,) = torch.autograd.grad(terms["adversary_confusion"], [h_last], retain_graph=True)
    assert grad_h.abs().sum() > 0
    with torch.no_grad():
        stepped = adversary.term([*hidden[:-1], h_last - 1e-2 * grad_h], y, groups)["adversary_confusion"]
    assert stepped < terms["adversary_confusion"]


@pytest.mark.parametrize("name", [n for n, s in METHODS.items() if s.accepts_adversary])
def test_every_accepting_method_adds_the_adversary_on_each_classifier(name: str):
    method, model, ctx, adversary, x, y, groups = _setup(name, ON)
    plain = method.loss(model, x, y, LossContext(ctx.settings, ctx.task, ctx.num_train))
    terms = method.loss(model, x, y, ctx)
    assert "adversary" in terms.parts and "adversary" not in plain.parts
    classifiers = classifiers_of(model)
    assert len(adversary.heads) == len(classifiers)  # an ensemble's members each get their own
    terms.total.backward()
    for classifier, head in zip(classifiers, adversary.heads, strict=True):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in classifier.parameters())


def test_the_adversary_needs_groups_a_hidden_layer_and_a_method_that_passes_them_on():
    method, model, ctx, adversary, x, y, groups = _setup("standard", ON)
    ctx.groups = None
    with pytest.raises(DecnnError, match="needs the protected attribute's labels"):
        method.loss(model, x, y, ctx)
    with pytest.raises(ConfigError, match="no hidden layer for the adversary"):
        build_config(overrides=["method.name=standard", "model.arch=linear", ON])
    with pytest.raises(DecnnError, match="need the protected attribute's labels"):
        train(build_config(overrides=["method.name=standard", ON, *SMALL]), show_progress=False)  # plain digits
    with pytest.raises(DecnnError, match=r"no example of the protected group\(s\) \['green'\]"):
        group_weights(torch.zeros(5, dtype=torch.long), ("red", "green"))
    assert torch.allclose(group_weights(torch.tensor([0, 0, 0, 1]), ("a", "b")), torch.tensor([2 / 3, 2.0]))


def test_adversary_settings_rename_a_folder_only_once_it_is_on():
    def name(*overrides: str) -> str:
        return folder_name(build_config(overrides=["method.name=redecnn", *overrides]))

    base = name()
    assert name("method.protect_adversary_weight=0") == base
    assert name("method.protect_adversary_hidden=8") == base  # read only with the adversary on
    on = name("method.protect_adversary_weight=1")
    assert on != base and "__adversary-1__" in on
    assert name("method.protect_adversary_weight=1", "method.protect_adversary_hidden=8") != on
    assert name("method.protect_adversary_weight=1", "method.protect_adversary_given_label=false") != on
    assert name("method.protect_adversary_weight=1", "method.protect_adversary_objective=confusion") != on
    assert name("method.protect_adversary_objective=confusion") == base
    standardised = name("method.protect_adversary_weight=1", "method.protect_adversary_standardised=true")
    assert "__adversary-1-standardised__" in standardised and standardised != on
    assert name("method.protect_adversary_standardised=true") == base
    # On CelebA the adversary learns the protected attribute: it then keys the folder.
    celeba = ("data.name=celeba", "data.target=Bearded", "method.protect_adversary_weight=1")
    assert name(*celeba, "data.protected=Bald") != name(*celeba, "data.protected=Male")
    assert name("data.name=celeba", "data.protected=Bald") == name("data.name=celeba", "data.protected=Male")


def test_a_tiny_training_with_the_adversary_on_coloured_digits(tmp_path: Path, runner):
    result = runner.invoke(
        app,
        [
            "train",
            "-q",
            "--method",
            "redecnn",
            "--dataset",
            "colored-digits",
            "--subset",
            "160",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
            *[arg for setting in (*SMALL, "method.protect_adversary_weight=1") for arg in ("--set", setting)],
        ],
    )
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    assert "__adversary-1__" in run.name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["adversary_group_weights"]) == {"red", "green"}
    adversary_ce = metrics["history"][0]["parts"]["adversary"]
    assert 0.0 < adversary_ce < 5.0  # the adversary's cross-entropy (log 2 = 0.69 is chance)
    # The checkpoint holds f and g only: the adversary is part of training, and the run loads as any other.
    loaded = engine.load_checkpoint(run / "model.pt")  # refuses a state dict with keys the network lacks
    assert loaded.method.adversary_of(loaded.cfg).protect_adversary_weight == 1.0
