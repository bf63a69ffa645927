"""The paper's equations checked against hand computations on tiny networks with fixed seeds.

Eq. 5 (ReDecNN's loss), the activation-tree sampler of Sec. 4.1, BayesNN's per-example ELBO and the direction of
Eq. 7's composition gradient.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from torch.testing import assert_close

from decnn_cli import composition, engine
from decnn_cli.data.spec import DataSpec
from decnn_cli.methods import LossContext, get_method
from decnn_cli.methods.bayesnn import loss as bayesnn_loss
from decnn_cli.methods.decodable import redecnn_loss, sample_paths
from decnn_cli.models.bayesian import total_kl
from decnn_cli.resolve import build_config
from decnn_cli.tasks import TaskHead

SPEC = DataSpec("toy", (1, 8, 8), 4, "multiclass", tuple("abcd"), (0.5,), (0.5,))
TINY = ["model.depth=3", "model.width=16", "model.decoder_width=32"]


def _network(name: str, extra: list[str], seed: int = 0):
    torch.manual_seed(seed)
    cfg = build_config(overrides=[f"method.name={name}", *TINY, *extra])
    return cfg, get_method(name).network(cfg, SPEC)


def _settings(cfg):
    """The settings of the run's method (what its loss and sampler read)."""
    return get_method(cfg.method.name).settings_of(cfg)


def _batch(size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(size, 1, 8, 8, generator=generator), torch.arange(size) % 4


@pytest.fixture
def drawn_layers(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Every tensor ``torch.randint`` returns during the test, in order (the sampled layers l_d)."""
    draws: list[torch.Tensor] = []
    real = torch.randint

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        draws.append(out.clone())
        return out

    monkeypatch.setattr(torch, "randint", recording)
    return draws


def _decode(model, hidden: list[torch.Tensor], layer: torch.Tensor) -> torch.Tensor:
    """g(h_{l_b}) for each example b, by hand: pick row b of layer l_b, then g's body."""
    code = torch.stack([hidden[int(chosen)][b] for b, chosen in enumerate(layer)])  # (B, width)
    return model.decoder.body(code)


def test_eq5_redecnn_loss_equals_its_hand_computation_at_alpha_one_half_and_depth_two(drawn_layers):
    alpha, beta = 0.5, 3.0
    cfg, model = _network("redecnn", [f"method.alpha={alpha}", f"method.beta={beta}", "method.recursion_depth=2"])
    x, y = _batch()
    torch.manual_seed(5)
    terms = redecnn_loss(model, x, y, LossContext(_settings(cfg), TaskHead("multiclass"), num_train=100))
    assert len(drawn_layers) == 2 and all(layer.shape == (6,) for layer in drawn_layers)
    assert len(torch.cat(drawn_layers).unique()) > 1, "the seed should pick different layers"

    # CE(f(x), y) + sum_d alpha^d [CE(f(x_d), y) + beta * MSE(x_d, x)], x_d = g(h^(d-1)_{l_{d-1}})
    logits, hidden = model(x)
    expected = F.cross_entropy(logits, y)
    ce_recursive = recon = torch.zeros(())
    for depth, layer in enumerate(drawn_layers, start=1):
        x_d = _decode(model, hidden, layer)
        logits_d, hidden = model(x_d)
        ce_d, mse_d = F.cross_entropy(logits_d, y), ((x_d - x) ** 2).mean()
        expected = expected + alpha**depth * (ce_d + beta * mse_d)
        ce_recursive = ce_recursive + alpha**depth * ce_d
        recon = recon + alpha**depth * beta * mse_d

    assert_close(terms.total, expected)
    assert_close(terms.parts["ce"], F.cross_entropy(logits, y).detach())
    assert_close(terms.parts["ce_recursive"], ce_recursive.detach())
    assert_close(terms.parts["recon"], recon.detach())
    assert_close(terms.logits, logits)


@pytest.mark.parametrize("progress", [0.0, 0.1, 0.25, 0.5, 0.9])
def test_warmup_scales_every_recursive_term_linearly_then_leaves_eq5(progress):
    warmup = 0.5
    cfg, model = _network("redecnn", ["method.alpha=0.5", "method.recursion_depth=2", f"method.warmup={warmup}"])
    x, y = _batch()
    settings = _settings(cfg)

    def loss(at: float):
        torch.manual_seed(5)  # the same layer draws at every progress
        return redecnn_loss(model, x, y, LossContext(settings, TaskHead("multiclass"), 100, progress=at))

    full, warming = loss(1.0), loss(progress)
    ramp = min(1.0, progress / warmup)
    ce = full.parts["ce"]
    assert_close(warming.parts["ce"], ce)
    assert_close(warming.total - ce, ramp * (full.total - ce))
    for name in ("ce_recursive", "recon"):
        assert_close(warming.parts[name], ramp * full.parts[name])
    # The per-depth diagnostics are unweighted: the same whatever the ramp.
    for depth in (1, 2):
        assert_close(warming.parts[f"ce_depth{depth}"], full.parts[f"ce_depth{depth}"])
        assert_close(warming.parts[f"mse_depth{depth}"], full.parts[f"mse_depth{depth}"])


def test_warmup_zero_is_eq5_from_the_first_step():
    cfg, model = _network("redecnn", ["method.recursion_depth=2", "method.warmup=0"])
    x, y = _batch()
    settings = _settings(cfg)
    totals = []
    for at in (0.0, 1.0):
        torch.manual_seed(5)
        totals.append(redecnn_loss(model, x, y, LossContext(settings, TaskHead("multiclass"), 100, progress=at)).total)
    assert_close(totals[0], totals[1])


def test_sample_paths_decodes_each_distinct_start_of_a_path_once_and_returns_n_b_k(drawn_layers):
    depth, n = 3, 5
    cfg, model = _network("redecnn", [f"method.recursion_depth={depth}"])
    model.eval()
    x, _ = _batch(4)
    decoded_rows: list[int] = []
    hook = model.decoder.body.register_forward_hook(lambda module, inputs, output: decoded_rows.append(len(output)))
    try:
        with torch.no_grad():
            samples = sample_paths(model, x, n, _settings(cfg))
    finally:
        hook.remove()
    assert samples.shape == (n, 4, 4)
    assert len(drawn_layers) == depth and all(layer.shape == (n * 4,) for layer in drawn_layers)
    # Paths of one input that agree on l_0 .. l_d share their decoding at depth d + 1: one decoding per distinct
    # (input, l_0 .. l_d), so at depth 1 at most L per input, and never more than the N * B paths.
    starts = [(b,) for k in range(n) for b in range(4)]  # path k * 4 + b starts at input b
    expected = []
    for layer in drawn_layers:
        starts = [(*start, int(layer[i])) for i, start in enumerate(starts)]
        expected.append(len(set(starts)))
    assert decoded_rows == [1, *expected], "one row decoded to size the chunks, then one decoding per distinct start"
    assert expected[0] <= 3 * 4 < n * 4  # L = 3 layers

    # Path k of input b: f(g(h^(D-1)_{l_{D-1}})) along its own layers, row k * B + b of every draw.
    with torch.no_grad():
        for k in range(n):
            for b in range(4):
                logits, hidden = model(x[b : b + 1])
                for layer in drawn_layers:
                    logits, hidden = model(_decode(model, hidden, layer[k * 4 + b : k * 4 + b + 1]))
                assert_close(samples[k, b], logits[0], rtol=1e-5, atol=1e-5)


def test_bayesnn_kl_is_weighted_one_over_n_train_per_example():
    cfg, model = _network("bayesnn", [])
    task = TaskHead("multiclass")
    parts = {}
    for num_train, size in ((250, 6), (500, 6), (250, 12)):
        x, y = _batch(size)
        torch.manual_seed(3)  # the same weight draw in each pass
        terms = bayesnn_loss(model, x, y, LossContext(_settings(cfg), task, num_train=num_train))
        kl = total_kl(model)  # KL(q(w) || p(w)) of the weights this forward pass drew
        assert float(kl.detach()) > 0
        assert_close(terms.parts["kl"], (kl / num_train).detach())
        assert_close(terms.total, F.cross_entropy(terms.logits, y) + kl / num_train)
        parts[num_train, size] = terms.parts["kl"]
    assert_close(parts[500, 6], parts[250, 6] / 2)
    assert_close(parts[250, 12], parts[250, 6]), "per example: the KL share does not grow with the batch"


@pytest.mark.parametrize("progress", [0.0, 0.2, 0.5, 0.8])
def test_bayesnn_kl_warms_up_linearly_then_leaves_the_elbo(progress):
    warmup = 0.4
    cfg, model = _network("bayesnn", [f"method.kl_warmup={warmup}"])
    x, y = _batch()

    def loss(at: float):
        torch.manual_seed(3)  # the same weight draw at every progress
        return bayesnn_loss(model, x, y, LossContext(_settings(cfg), TaskHead("multiclass"), 250, progress=at))

    full, warming = loss(1.0), loss(progress)
    assert_close(warming.parts["ce"], full.parts["ce"])
    assert_close(warming.parts["kl"], min(1.0, progress / warmup) * full.parts["kl"])
    assert_close(warming.total - warming.parts["ce"], min(1.0, progress / warmup) * (full.total - full.parts["ce"]))
    if progress >= warmup:
        assert_close(warming.total, full.total)  # the ELBO, as without a warm-up


def test_eq7_agreement_term_is_kl_m_to_f_with_gradient_softmax_f_minus_softmax_m():
    generator = torch.Generator().manual_seed(2)
    f_logits = torch.randn(5, 4, generator=generator, requires_grad=True)
    m_logits = torch.randn(5, 4, generator=generator, requires_grad=True)
    value = composition.agreement_term(f_logits, m_logits)
    p_m, log_p_f = F.softmax(m_logits, -1), F.log_softmax(f_logits, -1)
    assert_close(value, (p_m * (p_m.log() - log_p_f)).sum(-1).mean())
    value.backward()
    # d/d f_logits of KL(m || f), averaged over the batch: (softmax(f) - softmax(m)) / B, towards m.
    assert_close(f_logits.grad, (F.softmax(f_logits, -1) - p_m).detach() / 5)
    assert m_logits.grad is None, "m's prediction is a target"


def test_eq7_sgd_step_moves_f_towards_m_on_the_decoded_input_and_leaves_m_alone(tmp_path: Path, monkeypatch):
    m_cfg, m_net = _network("standard", [], seed=1)  # not f's initial weights: f and m must disagree at first
    engine.save_checkpoint(tmp_path / "m.pt", m_net, m_cfg, SPEC)
    captured = {}
    original = composition.load_frozen

    def spy(*args, **kwargs):
        captured["m"] = original(*args, **kwargs)
        return captured["m"]

    monkeypatch.setattr(composition, "load_frozen", spy)
    cfg, model = _network("redecnn", [f"method.compose_with={tmp_path / 'm.pt'}", "method.recursion_depth=1"])
    ctx = LossContext(_settings(cfg), TaskHead("multiclass"), num_train=100)
    composition.attach_pretrained_terms(ctx, get_method("redecnn").terms_of(cfg), SPEC, torch.device("cpu"))
    m = captured["m"]
    m.requires_grad_(True)  # even trainable, m must receive no gradient from the term
    (agree,) = ctx.decoded_terms
    x, y = _batch()
    with torch.no_grad():
        _, hidden = model(x)
        x_hat = _decode(model, hidden, torch.tensor([0, 1, 2, 0, 1, 2]))  # decoded inputs, held fixed

    def divergence() -> torch.Tensor:
        return agree(x, x_hat, model(x_hat)[0])["compose"]

    before = divergence()
    assert float(before.detach()) > 0
    optimizer = torch.optim.SGD(model.classifier.parameters(), lr=0.5)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    assert all(p.grad is None for p in m.parameters())
    with torch.no_grad():
        after = divergence()
        assert_close(after, composition.agreement_term(model(x_hat)[0], m(x_hat)))
    assert float(after) < float(before.detach())

    # Through the whole ReDecNN loss as well: m's weights get no gradient and do not move.
    state = {k: v.clone() for k, v in m.state_dict().items()}
    terms = redecnn_loss(model, x, y, ctx)
    assert "compose" in terms.parts
    terms.total.backward()
    assert all(p.grad is None for p in m.parameters())
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
