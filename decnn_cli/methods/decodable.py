"""DecNN (Eq. 4) and ReDecNN (Eq. 5): a classifier f trained jointly with one shared decoder g."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from decnn_cli.methods.base import (
    LossContext,
    LossTerms,
    MethodSettings,
    MethodSpec,
    add_hidden_terms,
    add_terms,
    warmup_factor,
    weights_held,
)
from decnn_cli.methods.standard import point, sample_point

if TYPE_CHECKING:
    import torch

    from decnn_cli.config import ModelConfig
    from decnn_cli.data.spec import DataSpec
    from decnn_cli.models import Network


class DecNNSettings(MethodSettings):
    keyed_when_set: ClassVar[frozenset[str]] = frozenset({"decode_given_protected"})

    beta: float = Field(
        100.0,
        ge=0.0,
        description="Weight of the reconstruction term in Eq. 4 and Eq. 5. The term is a per-pixel MSE (about "
        "0.02 once trained), so beta ~100 puts it on the scale of the cross-entropy.",
    )
    decode_given_protected: bool = Field(
        False,
        description="g reads the protected attribute a beside h_l: g(h_l, a), a learned code of a added to g's "
        "input (the fader decoder of Lample et al. 2017). Eq. 4 / 5 then no longer ask h_l to carry a, so the "
        "adversary (protect_adversary_weight) can take it out of h_L without fighting the reconstruction. Training "
        "decodes each example with its own a; where a is not known (sampled paths, detectors, outliers) every "
        "decoding draws a uniformly, so N paths vote over drawn values of the attribute. Needs the protected "
        "attribute's labels: data.protected on CelebA; the coloured datasets carry their colour.",
    )


class ReDecNNSettings(DecNNSettings):
    # Runs trained before the warm-up existed had none: they keep their folder names at warmup = 0.
    keyed_unless: ClassVar[dict[str, Any]] = {"warmup": 0.0}

    alpha: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Geometric down-weighting of recursion depth d in Eq. 5 (alpha^d). The paper gives no value; "
        "on MNIST with the 8-layer MLP, 0.9 (recursive terms weighing ~5x the direct cross-entropy) stalled "
        "training, 0.5 (~1x) cost 1.2 accuracy points at 10 epochs, and 0.3 (~0.4x) kept ReDecNN within 0.5 "
        "points of a standard network at 20 epochs (results/README.md).",
    )
    recursion_depth: int = Field(8, ge=1, description="Recursion depth D of ReDecNN (the paper: D = L = 8).")
    warmup: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Share of the training steps over which the recursive terms' weight rises linearly from 0 to "
        "alpha^d (all of depth d's terms: its cross-entropy, its reconstruction and any Eq. 7/8 term); 0 gives Eq. 5 "
        "from the first step. Early decodings are noise, and classifying them from the start slows f: on FSDD (20 "
        "epochs, 3 seeds) ReDecNN reached 85.8% test accuracy without warm-up and 92.2% with 0.5 (standard: 94.7%); "
        "chosen on validation accuracy (86.1%, 93.3%), with 0.5 over warming up the cross-entropy alone (88.9%).",
    )

    def ramp(self, progress: float) -> float:
        """The warm-up factor of the recursive terms after ``progress`` (0-1) of the training steps."""
        return warmup_factor(progress, self.warmup)


def build(model_cfg: ModelConfig, settings: DecNNSettings, spec: DataSpec) -> Network:
    from decnn_cli.errors import DecnnError
    from decnn_cli.models import Network, build_classifier, build_decoder

    groups = 0
    if settings.decode_given_protected:
        if not spec.group_names:
            raise DecnnError(
                "method.decode_given_protected needs the protected attribute's labels: set data.protected (CelebA), "
                "or use a coloured dataset"
            )
        groups = len(spec.group_names)
    classifier = build_classifier(model_cfg, spec)
    return Network(classifier, build_decoder(model_cfg, classifier, spec, groups))


def decnn_loss(model: Network, x: torch.Tensor, y: torch.Tensor, ctx: LossContext) -> LossTerms:
    """Eq. 4: CE(f(x), y) + beta * mean over layers l of the per-pixel MSE between g(h_l) and x."""
    from torch.nn import functional as F

    beta = ctx.settings.beta
    logits, hidden = model(x)
    ce = ctx.task.loss(logits, y)
    decoded = model.decoder.decode_all(hidden, ctx.groups)  # (L, B, C, H, W): every layer in one decoder call
    recon = F.mse_loss(decoded, x.unsqueeze(0).expand_as(decoded))
    total = ce + beta * recon
    parts = {"ce": ce.detach(), "recon": beta * recon.detach()}
    for term in ctx.input_terms:
        total = add_terms(total, parts, term(x, logits), 1.0)
    total = add_hidden_terms(total, parts, hidden, y, ctx)
    if ctx.decoded_terms or ctx.fixed_decoder_terms:
        # The Eq. 7 / Eq. 8 edit for DecNN: classify every decoded layer and average the terms over layers.
        flat = decoded.flatten(0, 1)  # (L * B, C, H, W)
        logits_hat, _ = model(flat)
        x_rep = x.unsqueeze(0).expand_as(decoded).flatten(0, 1)
        for term in ctx.decoded_terms:
            total = add_terms(total, parts, term(x_rep, flat, logits_hat), 1.0)
        if ctx.fixed_decoder_terms:
            with weights_held(model.decoder):
                fixed = model.decoder.decode_all(hidden, ctx.groups).flatten(0, 1)
            for term in ctx.fixed_decoder_terms:
                total = add_terms(total, parts, term(x_rep, fixed, logits_hat), 1.0)
    return LossTerms(total, parts, logits)


def redecnn_loss(model: Network, x: torch.Tensor, y: torch.Tensor, ctx: LossContext) -> LossTerms:
    """Eq. 5: CE(f(x), y) + sum_d r alpha^d [CE(f(x_d), y) + beta * MSE(x_d, x)], x_d = g(h^(d-1)_{l_{d-1}}).

    l_{d-1} is drawn uniformly per example; gradients flow through the whole recursion. r is the warm-up factor
    (``ReDecNNSettings.ramp``; 1 once warmed up, and always outside training). ``parts`` also holds each depth's
    unweighted cross-entropy and reconstruction MSE (``ce_depth{d}``, ``mse_depth{d}``), to see where a path loses
    the label or the input.
    """
    import torch
    from torch.nn import functional as F

    settings: ReDecNNSettings = ctx.settings
    logits, hidden = model(x)
    ce = ctx.task.loss(logits, y)
    total = ce
    parts: dict[str, torch.Tensor] = {"ce": ce.detach()}
    for term in ctx.input_terms:
        total = add_terms(total, parts, term(x, logits), 1.0)
    total = add_hidden_terms(total, parts, hidden, y, ctx)  # the adversary reads f(x)'s h_L, not the paths'
    num_layers = len(hidden)
    ramp = settings.ramp(ctx.progress)
    for depth in range(1, settings.recursion_depth + 1):
        layer = torch.randint(num_layers, (x.shape[0],), device=x.device)
        x_hat = model.decoder.decode_selected(hidden, layer, ctx.groups)  # (B, C, H, W)
        hidden_prev = hidden
        logits_hat, hidden = model(x_hat)
        ce_hat, mse_hat = ctx.task.loss(logits_hat, y), F.mse_loss(x_hat, x)
        parts[f"ce_depth{depth}"], parts[f"mse_depth{depth}"] = ce_hat.detach(), mse_hat.detach()
        terms = {"ce_recursive": ce_hat, "recon": settings.beta * mse_hat}
        for term in ctx.decoded_terms:
            terms |= term(x, x_hat, logits_hat)
        if ctx.fixed_decoder_terms:
            with weights_held(model.decoder):
                x_fixed = model.decoder.decode_selected(hidden_prev, layer, ctx.groups)
            for term in ctx.fixed_decoder_terms:
                terms |= term(x, x_fixed, logits_hat)
        total = add_terms(total, parts, terms, ramp * settings.alpha**depth)
    return LossTerms(total, parts, logits)


def sample_paths(model: Network, x: torch.Tensor, n: int, settings: ReDecNNSettings) -> torch.Tensor:
    """N classifiers from the activation tree (Sec. 4.1): logits (N, B, K) at the end of N random paths.

    Path k of input b draws l_0 .. l_{D-1} uniformly and predicts f(g(h^(D-1)_{l_{D-1}})). The layers are drawn
    as one batched recursion over all N * B paths draws them (D draws of N * B layers, row k * B + b for path k of
    input b), so a seed gives the same paths and the same logits as that recursion; the work is done once per
    distinct start of a path: paths that share their first d layers share their first d decodings, f runs once on
    each distinct input and only up to the deepest layer its paths decode, and inputs are taken in chunks whose
    tensors stay within a memory bound (``decnn_cli.methods.chunks``). A decoder conditioned on the protected
    attribute draws it for each distinct (input, layer) pair it decodes (``SharedDecoder.condition``).
    """
    import torch

    from decnn_cli.methods.chunks import row_counts, rows_per_call

    batch, depth = x.shape[0], settings.recursion_depth
    draws = torch.stack([torch.randint(model.decoder.num_layers, (n * batch,), device=x.device) for _ in range(depth)])
    draws = draws.view(depth, n, batch)  # l_d of path k of input b at [d, k, b]
    rows = rows_per_call(model, lambda row: _decode_first_layer(model, row), x)
    sized = row_counts(model, x)
    per_chunk = max(1, rows // n)  # inputs whose N paths are followed together
    logits = [
        _follow_paths(model, x[start : start + per_chunk], draws[:, :, start : start + per_chunk], rows, sized)
        for start in range(0, batch, per_chunk)
    ]
    return torch.cat(logits, dim=1)


def _decode_first_layer(model: Network, x: torch.Tensor) -> torch.Tensor:
    """g(h_1(x)): what one path's step makes (measured on one row to size the chunks)."""
    _, hidden = model(x)
    return model.decoder.body(model.decoder.condition(model.decoder.code(0, hidden[0])))


def _follow_paths(
    model: Network, x: torch.Tensor, draws: torch.Tensor, rows: int, sized: Callable[[int], int]
) -> torch.Tensor:
    """Logits (N, b, K) at the end of the paths whose layers ``draws`` (D, N, b) gives, for the b inputs x; calls
    take at most ``rows`` rows, run as ``sized(rows)`` (``chunks.row_counts``)."""
    import torch

    from decnn_cli.methods.chunks import in_rows, padded

    depth, n, b = draws.shape
    num_layers = model.decoder.num_layers
    inputs = x  # the distinct inputs of f at the current depth
    at = torch.arange(b, device=x.device).repeat(n)  # (N * b,): row k * b + j is path k of input j, at inputs[at]
    for layer in draws.reshape(depth, n * b):
        # Paths at the same input that decode the same layer make the same next input: decode each pair once.
        pairs, at = torch.unique(at * num_layers + layer, return_inverse=True)
        source, chosen = pairs // num_layers, pairs % num_layers
        decoded, slot = [], torch.empty_like(pairs)  # slot: row of each pair's decoding in the next inputs
        for start in range(0, len(pairs), rows):
            part = slice(start, start + rows)
            images, order = _decode_chosen(model, inputs, source[part], chosen[part], sized)
            slot[start + order] = torch.arange(start, start + len(order), device=x.device)
            decoded.append(images)
        inputs, at = torch.cat(decoded), slot[at]
    logits = in_rows(lambda z: model(padded(z, sized(len(z))))[0][: len(z)], inputs, rows)  # (distinct paths, K)
    return logits[at].view(n, b, -1)


def _decode_chosen(
    model: Network, inputs: torch.Tensor, source: torch.Tensor, layer: torch.Tensor, sized: Callable[[int], int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """g(h_{layer[i]}(inputs[source[i]])) for the pairs i: images (P, C, H, W) grouped by layer, and the pair
    (P,) each row decodes.

    f runs once on each distinct source, and only up to the deepest layer decoded from it: sources are ordered by
    that layer, deepest first, so each block runs on a prefix of the rows (``sized`` of them: rows past the prefix
    are computed and dropped).
    """
    import torch

    from decnn_cli.methods.chunks import padded

    f, g = model.classifier, model.decoder
    sources, which = torch.unique(source, return_inverse=True)  # pair i reads sources[which[i]]
    codes, decoded = [], []
    if not hasattr(f, "hidden_layer"):  # a classifier that runs only whole: every layer, then the chosen rows
        hidden = model(inputs[sources])[1]
        for index, h in enumerate(hidden):
            pick = (layer == index).nonzero().squeeze(1)
            if len(pick):
                codes.append(g.code(index, h[which[pick]]))
                decoded.append(pick)
    else:
        deepest = torch.zeros_like(sources).scatter_reduce_(0, which, layer, "amax")
        order = torch.argsort(deepest, descending=True)
        row = torch.empty_like(order)
        row[order] = torch.arange(len(order), device=order.device)  # row of each source in z below
        row = row[which]
        # still[l]: sources whose deepest decoded layer is l or deeper (they lead z, deepest first)
        still = torch.bincount(deepest, minlength=g.num_layers).flip(0).cumsum(0).flip(0).tolist()
        gather = sources[order]
        z = f.prepare(inputs[padded(gather, sized(len(gather)))])
        for index in range(g.num_layers):
            if still[index] == 0:
                break
            z = f.hidden_layer(index, z[: min(len(z), sized(still[index]))])
            pick = (layer == index).nonzero().squeeze(1)
            if len(pick):
                codes.append(g.code(index, z[row[pick]]))
                decoded.append(pick)
    codes = g.condition(torch.cat(codes))  # a conditioned g draws each pair's attribute
    return g.body(padded(codes, sized(len(codes))))[: len(codes)], torch.cat(decoded)


DECNN = MethodSpec(
    name="decnn",
    summary="classifier + one shared decoder reconstructing x from every layer (Eq. 4)",
    settings=DecNNSettings,
    build=build,
    loss=decnn_loss,
    sample=sample_point,
    point=point,
    uses_decoder=True,
    accepts_pretrained_terms=True,
    accepts_adversary=True,
)

REDECNN = MethodSpec(
    name="redecnn",
    summary="recursive self-composition through decoded layers; N sampled paths (Eq. 5, 6)",
    settings=ReDecNNSettings,
    build=build,
    loss=redecnn_loss,
    sample=sample_paths,
    point=point,
    uses_decoder=True,
    stochastic=True,
    accepts_pretrained_terms=True,
    accepts_adversary=True,
)
