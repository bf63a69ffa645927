"""BayesNN: Bayes by Backprop (weight uncertainty, Blundell et al. 2015) on the same MLP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from decnn_cli.errors import DecnnError
from decnn_cli.methods.base import (
    LossContext,
    LossTerms,
    MethodSettings,
    MethodSpec,
    add_hidden_terms,
    warmup_factor,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from decnn_cli.config import ModelConfig
    from decnn_cli.data.spec import DataSpec
    from decnn_cli.models import Network


class BayesNNSettings(MethodSettings):
    # Runs trained before the KL warm-up existed had none: they keep their folder names at kl_warmup = 0.
    keyed_unless: ClassVar[dict[str, Any]] = {"kl_warmup": 0.0}

    prior_sigma1: float = Field(1.0, gt=0.0, description="BayesNN: std of the wide scale-mixture component.")
    prior_sigma2: float = Field(
        0.0025, gt=0.0, description="BayesNN: std of the narrow scale-mixture component (e^-6 in Blundell)."
    )
    prior_pi: float = Field(0.5, ge=0.0, le=1.0, description="BayesNN: weight of the wide component.")
    posterior_rho_init: float = Field(
        -5.0, description="BayesNN: initial rho of the posterior, sigma = log(1 + e^rho) (about 0.007)."
    )
    kl_warmup: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="BayesNN: share of the training steps over which the KL term's weight rises linearly from 0 to 1 "
        "(deterministic warm-up, Sonderby et al. 2016); the objective is the full ELBO afterwards, and 0 gives it "
        "from the first step. Per example the KL term is the whole network's KL over the training-set size: on "
        "FSDD's 1,620 clips about 1,500 nats against a cross-entropy of 2.3 at the start, which drove every run to "
        "its prior within the first epoch (10% accuracy, 3 seeds). With 0.5 (the share of ReDecNN's warm-up, not "
        "tuned) FSDD seed 0 reached 92.8% on validation and kept it at full KL weight (results/README.md).",
    )


def build(model_cfg: ModelConfig, settings: BayesNNSettings, spec: DataSpec) -> Network:
    from decnn_cli.models import Network
    from decnn_cli.models.bayesian import ScaleMixturePrior
    from decnn_cli.models.classifiers import bayesian_mlp

    if model_cfg.arch != "mlp":
        raise DecnnError(f"bayesnn is built on the MLP only; drop --arch {model_cfg.arch}")
    s = settings
    prior = ScaleMixturePrior(pi=s.prior_pi, sigma1=s.prior_sigma1, sigma2=s.prior_sigma2)
    return Network(bayesian_mlp(spec, model_cfg.depth, model_cfg.width, prior, s.posterior_rho_init))


def loss(model: Network, x: torch.Tensor, y: torch.Tensor, ctx: LossContext) -> LossTerms:
    """Minibatch ELBO per example: NLL(y | f_w(x)) + r KL(q(w) || p(w)) / N_train, w ~ q drawn once; r is the KL
    warm-up factor (``BayesNNSettings.kl_warmup``; 1 once warmed up, and always outside training); ``parts["kl"]``
    is the term as added, warm-up included."""
    from decnn_cli.models.bayesian import total_kl

    logits, hidden = model(x)
    nll = ctx.task.loss(logits, y)
    kl = warmup_factor(ctx.progress, ctx.settings.kl_warmup) * total_kl(model) / ctx.num_train
    parts = {"ce": nll.detach(), "kl": kl.detach()}
    return LossTerms(add_hidden_terms(nll + kl, parts, hidden, y, ctx), parts, logits)


def sample(model: Network, x: torch.Tensor, n: int, settings: BayesNNSettings) -> torch.Tensor:
    """N weight samples from the posterior, each one network for the whole batch: (N, B, K).

    Every layer draws the weights of several samples at once and multiplies them batched; the inputs are normalised
    once and shared by all samples (a view, not N copies). Samples are taken in chunks whose tensors (activations
    and drawn weights) stay under a memory bound (``decnn_cli.methods.chunks``); each chunk draws its own
    weights, so with one chunk the draws are those of one batched call over N copies of the batch.
    """
    import torch

    from decnn_cli.methods.chunks import largest_row_bytes, tensor_bound

    f = model.classifier
    weights = max(p.numel() * p.element_size() for p in model.parameters())  # per sample, drawn by the largest layer
    per_sample = max(x.shape[0] * largest_row_bytes(model, lambda row: model(row.unsqueeze(0)), x), weights)
    per_chunk = max(1, tensor_bound(x.device) // per_sample)
    prepared = f.prepare(x)  # (B, features)
    logits = []
    for start in range(0, n, per_chunk):
        z = prepared.unsqueeze(0).expand(min(per_chunk, n - start), *prepared.shape)  # (S, B, features), a view
        for index in range(len(f.hidden_shapes)):
            z = f.hidden_layer(index, z)
        logits.append(f.logits_from(z))
    return torch.cat(logits)


def point(model: Network) -> nn.Module:
    """The classifier with every weight at its posterior mean."""
    from decnn_cli.models.bayesian import PosteriorMean

    return PosteriorMean(model)


BAYESNN = MethodSpec(
    name="bayesnn",
    summary="Bayes by Backprop: Gaussian weight posterior, scale-mixture prior (Blundell et al.)",
    settings=BayesNNSettings,
    build=build,
    loss=loss,
    sample=sample,
    point=point,
    predictive="sample-mean",
    stochastic=True,
    accepts_adversary=True,
)
