"""Bayes by Backprop (Blundell et al., 2015): a Gaussian posterior over each weight, a scale-mixture prior.

Written here rather than taken from a library because the maintained Bayesian-layer libraries for PyTorch
offer Gaussian priors only (no scale mixture), and because this layer draws N weight samples at once
(one per leading index of a 3-D input), so N posterior samples are one batched matmul.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _gaussian_log_prob(x: torch.Tensor, mu: torch.Tensor | float, sigma: torch.Tensor | float) -> torch.Tensor:
    sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return -_LOG_SQRT_2PI - torch.log(sigma_t) - (x - mu) ** 2 / (2 * sigma_t**2)


@dataclass(frozen=True)
class ScaleMixturePrior:
    """p(w) = pi N(0, sigma1^2) + (1 - pi) N(0, sigma2^2), per weight."""

    pi: float
    sigma1: float
    sigma2: float

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        """Summed log density of all entries of ``w``."""
        if self.pi >= 1.0:
            return _gaussian_log_prob(w, 0.0, self.sigma1).sum()
        if self.pi <= 0.0:
            return _gaussian_log_prob(w, 0.0, self.sigma2).sum()
        wide = math.log(self.pi) + _gaussian_log_prob(w, 0.0, self.sigma1)
        narrow = math.log1p(-self.pi) + _gaussian_log_prob(w, 0.0, self.sigma2)
        return torch.logaddexp(wide, narrow).sum()


class BayesLinear(nn.Module):
    """A linear layer with weights w = mu + log(1 + e^rho) * eps, eps ~ N(0, 1), drawn every call.

    Input (B, in) uses one weight sample; input (N, B, in) uses N samples, one per leading index. With
    ``use_mean`` set, the posterior mean is used (a deterministic classifier, e.g. to craft attacks).
    After each sampling call, ``kl`` holds the Monte-Carlo estimate log q(w) - log p(w) of the weights just
    drawn (Blundell et al., Eq. 2), averaged over the N samples.
    """

    def __init__(self, in_features: int, out_features: int, prior: ScaleMixturePrior, rho_init: float = -5.0):
        super().__init__()
        self.prior = prior
        bound = 1 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.weight_rho = nn.Parameter(torch.full((out_features, in_features), rho_init))
        self.bias_rho = nn.Parameter(torch.full((out_features,), rho_init))
        self.use_mean = False
        self.kl: torch.Tensor = torch.zeros(())

    def _draw(self, mu: torch.Tensor, rho: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = F.softplus(rho)
        w = mu + sigma * torch.randn((n, *mu.shape), device=mu.device, dtype=mu.dtype)
        log_q = _gaussian_log_prob(w, mu, sigma).sum()
        return w, (log_q - self.prior.log_prob(w)) / n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_mean:
            return F.linear(x, self.weight_mu, self.bias_mu)
        n = x.shape[0] if x.dim() == 3 else 1
        w, kl_w = self._draw(self.weight_mu, self.weight_rho, n)  # (n, out, in)
        b, kl_b = self._draw(self.bias_mu, self.bias_rho, n)  # (n, out)
        self.kl = kl_w + kl_b
        if x.dim() == 3:
            return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))  # (n, B, out)
        return F.linear(x, w[0], b[0])

    def closed_form_kl(self) -> torch.Tensor:
        """KL(q || p) in closed form; exists only for a single-Gaussian prior (pi = 1), used to test ``kl``."""
        if self.prior.pi < 1.0:
            raise ValueError("the scale-mixture KL has no closed form; set pi = 1 for a Gaussian prior")
        total = torch.zeros(())
        for mu, rho in ((self.weight_mu, self.weight_rho), (self.bias_mu, self.bias_rho)):
            sigma = F.softplus(rho)
            s1 = self.prior.sigma1
            total = total + (math.log(s1) - torch.log(sigma) + (sigma**2 + mu**2) / (2 * s1**2) - 0.5).sum()
        return total


def total_kl(model: nn.Module) -> torch.Tensor:
    """Sum of the KL estimates of every BayesLinear in ``model`` from its last forward pass."""
    return sum((m.kl for m in model.modules() if isinstance(m, BayesLinear)), torch.zeros(()))


def use_posterior_mean(model: nn.Module, flag: bool) -> None:
    for module in model.modules():
        if isinstance(module, BayesLinear):
            module.use_mean = flag


class PosteriorMean(nn.Module):
    """The deterministic classifier with every weight at its posterior mean: x -> logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_posterior_mean(self.model, True)
        try:
            return self.model(x)[0]
        finally:
            use_posterior_mean(self.model, False)
