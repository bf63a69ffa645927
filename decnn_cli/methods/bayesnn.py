"""BayesNN: Bayes by Backprop (weight uncertainty, Blundell et al. 2015) on the same MLP."""

from __future__ import annotations

import torch
from torch import nn

from decnn_cli.config import MethodConfig, RunConfig
from decnn_cli.data.spec import DataSpec
from decnn_cli.errors import DecnnError
from decnn_cli.methods.base import LossContext, LossTerms
from decnn_cli.models import Network
from decnn_cli.models.bayesian import ScaleMixturePrior, total_kl, use_posterior_mean
from decnn_cli.models.classifiers import bayesian_mlp


def build(cfg: RunConfig, spec: DataSpec) -> Network:
    if cfg.model.arch != "mlp":
        raise DecnnError(f"bayesnn is built on the MLP only; drop --arch {cfg.model.arch}")
    m = cfg.method
    prior = ScaleMixturePrior(pi=m.prior_pi, sigma1=m.prior_sigma1, sigma2=m.prior_sigma2)
    return Network(bayesian_mlp(spec, cfg.model.depth, cfg.model.width, prior, m.posterior_rho_init))


def loss(model: Network, x: torch.Tensor, y: torch.Tensor, ctx: LossContext) -> LossTerms:
    """Minibatch ELBO per example: NLL(y | f_w(x)) + KL(q(w) || p(w)) / N_train, w ~ q drawn once."""
    logits, _ = model(x)
    nll = ctx.task.loss(logits, y)
    kl = total_kl(model) / ctx.num_train
    return LossTerms(nll + kl, {"ce": nll.detach(), "kl": kl.detach()}, logits)


def sample(model: Network, x: torch.Tensor, n: int, cfg: MethodConfig) -> torch.Tensor:
    """N weight samples from the posterior, one per copy of the batch, in one batched call: (N, B, K)."""
    logits, _ = model(x.unsqueeze(0).expand(n, *x.shape))
    return logits


class PosteriorMean(nn.Module):
    """The deterministic classifier with every weight at its posterior mean: x -> logits."""

    def __init__(self, model: Network):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_posterior_mean(self.model, True)
        try:
            return self.model(x)[0]
        finally:
            use_posterior_mean(self.model, False)


def point(model: Network) -> nn.Module:
    return PosteriorMean(model)
