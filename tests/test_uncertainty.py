"""Samplers return N distinct predictions where they should (seeded) and identical ones where they should."""

from __future__ import annotations

import math

import pytest
import torch

from decnn_cli.data.spec import DataSpec
from decnn_cli.methods import get_method
from decnn_cli.models.bayesian import BayesLinear, ScaleMixturePrior, total_kl
from decnn_cli.resolve import build_config

SPEC = DataSpec("toy", (1, 8, 8), 4, "multiclass", tuple("abcd"), (0.5,), (0.5,))
SMALL = ["model.depth=3", "model.width=16", "model.decoder_width=32", "method.recursion_depth=2", "method.dropout=0.5"]


def _model(name: str):
    torch.manual_seed(0)
    cfg = build_config(overrides=[f"method.name={name}", *SMALL])
    method = get_method(name)
    model = method.network(cfg, SPEC).eval()
    return method.settings_of(cfg), method, model


@pytest.mark.parametrize("name", ["redecnn", "mc-dropout", "bayesnn", "ensemble"])
def test_stochastic_samplers_give_distinct_seeded_samples(name: str):
    settings, method, model = _model(name)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        torch.manual_seed(3)
        a = method.sample(model, x, 6, settings)
        torch.manual_seed(3)
        b = method.sample(model, x, 6, settings)
    expected = settings.members if name == "ensemble" else 6
    assert a.shape == (expected, 5, 4)
    assert torch.equal(a, b)
    distinct = {tuple(a[i].flatten().tolist()) for i in range(a.shape[0])}
    assert len(distinct) == a.shape[0]


@pytest.mark.parametrize("name", ["standard", "decnn", "dropout"])
def test_deterministic_methods_give_one_repeatable_sample(name: str):
    settings, method, model = _model(name)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        a = method.sample(model, x, 6, settings)
        b = method.sample(model, x, 6, settings)
    assert a.shape == (1, 5, 4) and torch.equal(a, b)


def test_mc_dropout_is_stochastic_at_eval_and_dropout_is_not():
    settings, method, model = _model("mc-dropout")
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        samples = method.sample(model, x, 4, settings)
        assert not torch.allclose(samples[0], samples[1])
        point_a, point_b = method.point(model)(x), method.point(model)(x)
    assert torch.equal(point_a, point_b)  # dropout off for the plain forward pass in eval mode
    assert not any(m.training for m in model.modules())  # the sampler restored eval mode
    settings, method, model = _model("dropout")
    with torch.no_grad():
        assert torch.equal(method.sample(model, x, 4, settings), method.sample(model, x, 4, settings))


def test_bayesnn_kl_is_positive_finite_and_matches_closed_form_for_a_gaussian_prior():
    torch.manual_seed(0)
    settings, method, model = _model("bayesnn")
    model.train()
    model(torch.rand(3, 1, 8, 8))
    kl = total_kl(model)
    assert torch.isfinite(kl) and kl > 0
    layer = BayesLinear(6, 3, ScaleMixturePrior(pi=1.0, sigma1=0.5, sigma2=0.1), rho_init=-1.0)
    torch.manual_seed(1)
    estimates = []
    for _ in range(400):
        layer(torch.rand(2, 6))
        estimates.append(layer.kl.item())
    closed = layer.closed_form_kl().item()
    assert closed > 0
    mean = sum(estimates) / len(estimates)
    sd = (sum((e - mean) ** 2 for e in estimates) / len(estimates)) ** 0.5
    assert abs(mean - closed) < 4 * sd / math.sqrt(len(estimates)) + 1e-3


def test_bayesnn_vectorised_samples_match_one_at_a_time_statistics():
    layer = BayesLinear(4, 2, ScaleMixturePrior(0.5, 1.0, 0.01), rho_init=-1.0)
    x = torch.ones(1, 4)
    with torch.no_grad():
        torch.manual_seed(0)
        batched = layer(x.expand(2000, 1, 4))[:, 0]  # (2000, 2): 2000 weight samples at once
    mean = layer.weight_mu.sum(1) + layer.bias_mu
    std = torch.sqrt(
        (torch.nn.functional.softplus(layer.weight_rho) ** 2).sum(1) + torch.nn.functional.softplus(layer.bias_rho) ** 2
    )
    assert torch.allclose(batched.mean(0), mean.detach(), atol=4 * std.max().item() / math.sqrt(2000))
    assert torch.allclose(batched.std(0), std.detach(), rtol=0.1)


def test_posterior_mean_classifier_is_deterministic():
    settings, method, model = _model("bayesnn")
    x = torch.rand(4, 1, 8, 8)
    point = method.point(model)
    with torch.no_grad():
        assert torch.equal(point(x), point(x))
        assert not torch.equal(model(x)[0], model(x)[0])  # the plain forward pass samples weights


def straightforward_paths(model, x: torch.Tensor, n: int, settings) -> torch.Tensor:
    """The activation-tree sampler written plainly (the reference): N copies of x, D decodings of all N * B rows."""
    batch = x.shape[0]
    current = x.unsqueeze(0).expand(n, *x.shape).reshape(n * batch, *x.shape[1:])
    logits, hidden = model(current)
    for _ in range(settings.recursion_depth):
        layer = torch.randint(len(hidden), (n * batch,), device=x.device)
        logits, hidden = model(model.decoder.decode_selected(hidden, layer))
    return logits.view(n, batch, -1)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("bound", [None, 3000])
def test_sample_paths_gives_the_straightforward_samplers_logits_for_the_same_draws(arch, bound, monkeypatch):
    from decnn_cli.methods import chunks

    if bound is not None:  # a bound of a few rows: inputs and distinct paths are taken in many chunks
        monkeypatch.setattr(chunks, "CPU_TENSOR_BYTES", bound)
    extra = ["model.arch=cnn", "model.cnn_channels=4"] if arch == "cnn" else []
    torch.manual_seed(0)
    cfg = build_config(overrides=["method.name=redecnn", *SMALL, "method.recursion_depth=3", *extra])
    method = get_method("redecnn")
    settings, model = method.settings_of(cfg), method.network(cfg, SPEC).eval()
    x = torch.rand(7, 1, 8, 8)
    largest = 0

    def record(module, inputs, output):
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.shape[0])

    for n in (1, 4, 13):
        with torch.no_grad():
            torch.manual_seed(n)
            expected = straightforward_paths(model, x, n, settings)
            handles = [m.register_forward_hook(record) for m in model.modules()]
            torch.manual_seed(n)
            samples = method.sample(model, x, n, settings)
            for handle in handles:
                handle.remove()
        # The same paths, so the same logits (up to float rounding of matmuls over fewer rows) and the same votes.
        torch.testing.assert_close(samples, expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(samples.argmax(-1), expected.argmax(-1))
    if bound is not None:
        rows = chunks.rows_per_call(model, lambda row: model.decoder.decode_all(model(row)[1]), x)
        assert rows < 13 * 7 and largest <= rows, "no call takes more rows than the bound allows"


def straightforward_samples(name: str, model, x: torch.Tensor, n: int) -> torch.Tensor:
    """The other samplers written plainly: one batched call over N copies of the batch (or each member)."""
    if name == "mc-dropout":
        dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        for m in dropouts:
            m.train()
        logits, _ = model(x.unsqueeze(0).expand(n, *x.shape).reshape(n * x.shape[0], *x.shape[1:]))
        for m in dropouts:
            m.eval()
        return logits.view(n, x.shape[0], -1)
    if name == "bayesnn":
        return model(x.unsqueeze(0).expand(n, *x.shape))[0]
    if name == "ensemble":
        return torch.stack([member(x)[0] for member in model.members])
    return model(x)[0].unsqueeze(0)


@pytest.mark.parametrize("name", ["standard", "decnn", "dropout", "mc-dropout", "bayesnn", "ensemble"])
def test_every_sampler_gives_the_straightforward_logits_for_the_same_draws(name: str, monkeypatch):
    settings, method, model = _model(name)
    x = torch.rand(9, 1, 8, 8)
    with torch.no_grad():
        torch.manual_seed(4)
        expected = straightforward_samples(name, model, x, 6)
        torch.manual_seed(4)
        samples = method.sample(model, x, 6, settings)  # one chunk: the draws are made in the same order
    torch.testing.assert_close(samples, expected, rtol=1e-5, atol=1e-6)
    assert not any(m.training for m in model.modules())

    from decnn_cli.methods import chunks

    monkeypatch.setattr(chunks, "CPU_TENSOR_BYTES", 600)  # a few rows per call: many chunks
    with torch.no_grad():
        chunked = method.sample(model, x, 6, settings)
    assert chunked.shape == expected.shape and torch.isfinite(chunked).all()
    if method.stochastic and name != "ensemble":  # each chunk draws its own masks or weights
        assert len({tuple(s.flatten().tolist()) for s in chunked}) == chunked.shape[0]
    else:
        torch.testing.assert_close(chunked, expected, rtol=1e-5, atol=1e-6)
