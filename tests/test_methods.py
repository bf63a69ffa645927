"""Every registered method builds, trains a step, and returns well-formed outputs (timm-style forward tests)."""

from __future__ import annotations

import pytest
import torch

from decnn_cli.data.spec import DataSpec
from decnn_cli.methods import METHODS, LossContext, get_method
from decnn_cli.resolve import build_config
from decnn_cli.tasks import TaskHead

SPEC = DataSpec("toy", (1, 28, 28), 10, "multiclass", tuple("0123456789"), (0.5,), (0.5,))
SMALL = ["model.depth=4", "model.width=32", "model.decoder_width=64", "method.recursion_depth=3"]


def _setup(name: str, extra: list[str] | None = None):
    torch.manual_seed(0)
    cfg = build_config(overrides=[f"method.name={name}", *SMALL, *(extra or [])])
    method = get_method(name)
    model = method.network(cfg, SPEC)
    ctx = LossContext(method.settings_of(cfg), TaskHead("multiclass"), num_train=100)
    x = torch.rand(6, 1, 28, 28)
    y = torch.randint(10, (6,))
    return cfg, method, model, ctx, x, y


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_trains_one_step_and_outputs_are_well_formed(name: str):
    cfg, method, model, ctx, x, y = _setup(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    terms = method.loss(model, x, y, ctx)
    assert terms.logits.shape == (6, 10)
    assert torch.isfinite(terms.total) and terms.total.dim() == 0
    optimizer.zero_grad()
    terms.total.backward()
    optimizer.step()
    changed = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert changed > 0
    model.eval()
    with torch.no_grad():
        samples = method.sample(model, x, 5, ctx.settings)
        point = method.point(model)(x)
    assert point.shape == (6, 10) and torch.isfinite(point).all()
    assert samples.dim() == 3 and samples.shape[1:] == (6, 10) and torch.isfinite(samples).all()
    if method.uses_decoder:
        _, hidden = model(x)
        assert len(hidden) == cfg.model.depth
        decoded = model.decoder.decode_all(hidden).detach()
        assert decoded.shape == (cfg.model.depth, 6, 1, 28, 28)
        assert float(decoded.min()) >= 0.0 and float(decoded.max()) <= 1.0


def test_decnn_loss_is_ce_plus_beta_times_mean_layer_mse():
    cfg, method, model, ctx, x, y = _setup("decnn", ["method.beta=3.0"])
    terms = method.loss(model, x, y, ctx)
    logits, hidden = model(x)
    expected_ce = torch.nn.functional.cross_entropy(logits, y)
    mse = torch.stack([((model.decoder.decode_all([h])[0] - x) ** 2).mean() for h in hidden]).mean()
    assert torch.allclose(terms.total, expected_ce + 3.0 * mse, atol=1e-5)


def test_redecnn_with_alpha_zero_reduces_to_cross_entropy():
    cfg, method, model, ctx, x, y = _setup("redecnn", ["method.alpha=0.0"])
    terms = method.loss(model, x, y, ctx)
    assert torch.allclose(terms.total, torch.nn.functional.cross_entropy(model(x)[0], y), atol=1e-6)


def test_redecnn_gradients_flow_through_the_recursion_into_the_decoder():
    cfg, method, model, ctx, x, y = _setup("redecnn", ["method.beta=0.0"])
    terms = method.loss(model, x, y, ctx)
    terms.total.backward()
    # With beta = 0 the decoder is reached only through f(g(h)): the recursive cross-entropy terms.
    grads = [p.grad for p in model.decoder.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_redecnn_paths_differ_between_samples_and_are_seeded():
    cfg, method, model, ctx, x, y = _setup("redecnn")
    model.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        a = method.sample(model, x, 8, ctx.settings)
        torch.manual_seed(1)
        b = method.sample(model, x, 8, ctx.settings)
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])


def test_decode_selected_picks_each_examples_layer():
    cfg, method, model, ctx, x, y = _setup("decnn")
    model.eval()
    with torch.no_grad():
        _, hidden = model(x)
        layer = torch.tensor([0, 3, 1, 2, 3, 0])
        chosen = model.decoder.decode_selected(hidden, layer)
        every = model.decoder.decode_all(hidden)
    assert torch.allclose(chosen, every[layer, torch.arange(6)], atol=1e-6)


def test_unknown_method_lists_valid_names():
    from decnn_cli.errors import DecnnError

    with pytest.raises(DecnnError, match="unknown method 'recnn'.*redecnn"):
        get_method("recnn")


@pytest.mark.parametrize("name", ["decnn", "redecnn"])
def test_cnn_variant_decodes_blocks_of_different_shapes_through_adapters(name: str):
    cfg, method, model, ctx, x, y = _setup(name, ["model.arch=cnn", "model.cnn_channels=4"])
    _, hidden = model(x)
    shapes = {tuple(h.shape[1:]) for h in hidden}
    assert len(shapes) > 1  # blocks differ in shape, so one decoder needs per-layer adapters
    assert model.decoder.adapters is not None and len(model.decoder.adapters) == len(hidden)
    terms = method.loss(model, x, y, ctx)
    terms.total.backward()
    assert torch.isfinite(terms.total)
    assert all(p.grad is not None for p in model.decoder.adapters.parameters())
    with torch.no_grad():
        decoded = model.decoder.decode_all(hidden)
        chosen = model.decoder.decode_selected(hidden, torch.tensor([0, 3, 1, 2, 3, 0]))
    assert decoded.shape == (4, 6, 1, 28, 28)
    assert torch.allclose(chosen, decoded[torch.tensor([0, 3, 1, 2, 3, 0]), torch.arange(6)], atol=1e-5)


def test_resnet_decoder_reconstructs_input_shaped_images():
    cfg, method, model, ctx, x, y = _setup("decnn", ["model.decoder=resnet", "model.decoder_channels=4"])
    _, hidden = model(x)
    decoded = model.decoder.decode_all(hidden).detach()
    assert decoded.shape == (4, 6, 1, 28, 28) and float(decoded.min()) >= 0 and float(decoded.max()) <= 1
    spec = DataSpec("rgb", (3, 64, 64), 2, "multiclass", ("a", "b"), (0.5,) * 3, (0.5,) * 3)
    cfg = build_config(overrides=["method.name=decnn", "model.decoder=resnet", "model.decoder_channels=4", *SMALL])
    model = get_method("decnn").network(cfg, spec)
    _, hidden = model(torch.rand(2, 3, 64, 64))
    assert model.decoder.decode_all(hidden).shape == (4, 2, 3, 64, 64)
