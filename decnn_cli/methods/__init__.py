"""The method registry: name -> MethodSpec. Typer's choices and the tests' parametrisation come from here."""

from __future__ import annotations

from decnn_cli.errors import DecnnError
from decnn_cli.methods import bayesnn, decodable, ensemble, standard
from decnn_cli.methods.base import LossContext, LossTerms, MethodSpec

METHODS: dict[str, MethodSpec] = {
    "standard": MethodSpec(
        "standard",
        "plain classifier, cross-entropy only (Eq. 1)",
        standard.build,
        standard.loss,
        standard.sample_point,
        "point",
        standard.point,
    ),
    "decnn": MethodSpec(
        "decnn",
        "classifier + one shared decoder reconstructing x from every layer (Eq. 4)",
        decodable.build,
        decodable.decnn_loss,
        standard.sample_point,
        "point",
        standard.point,
        uses_decoder=True,
    ),
    "redecnn": MethodSpec(
        "redecnn",
        "recursive self-composition through decoded layers; N sampled paths (Eq. 5, 6)",
        decodable.build,
        decodable.redecnn_loss,
        decodable.sample_paths,
        "point",
        standard.point,
        uses_decoder=True,
        stochastic=True,
    ),
    "dropout": MethodSpec(
        "dropout",
        "dropout in training, off at test",
        standard.build_with_dropout,
        standard.loss,
        standard.sample_point,
        "point",
        standard.point,
    ),
    "mc-dropout": MethodSpec(
        "mc-dropout",
        "dropout in training and N sampled masks at test (Gal & Ghahramani)",
        standard.build_with_dropout,
        standard.loss,
        standard.sample_mc_dropout,
        "sample-mean",
        standard.point,
        stochastic=True,
    ),
    "bayesnn": MethodSpec(
        "bayesnn",
        "Bayes by Backprop: Gaussian weight posterior, scale-mixture prior (Blundell et al.)",
        bayesnn.build,
        bayesnn.loss,
        bayesnn.sample,
        "sample-mean",
        bayesnn.point,
        stochastic=True,
    ),
    "ensemble": MethodSpec(
        "ensemble",
        "D independently initialised standard networks",
        ensemble.build,
        ensemble.loss,
        ensemble.sample,
        "sample-mean",
        ensemble.point,
        stochastic=True,
    ),
}


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise DecnnError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "LossContext", "LossTerms", "MethodSpec", "get_method"]
