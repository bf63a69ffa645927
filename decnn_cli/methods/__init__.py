"""The method registry: name -> MethodSpec, in the order of the paper's rows. Typer's choices, ``decnn methods``,
the tests' parametrisation and the row order of every results table come from here.

Adding a method is one module under ``decnn_cli/methods/`` (its settings, functions and ``MethodSpec``) and one
line below. Importing the registry imports no torch (the method modules import it inside their functions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from decnn_cli.errors import ConfigError, DecnnError
from decnn_cli.methods import bayesnn, decodable, ensemble, standard
from decnn_cli.methods.base import (
    AdversaryTerms,
    LossContext,
    LossTerms,
    MethodSettings,
    MethodSpec,
    PretrainedTerms,
)

if TYPE_CHECKING:
    from decnn_cli.config import MethodConfig

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        standard.STANDARD,
        decodable.DECNN,
        decodable.REDECNN,
        standard.DROPOUT,
        standard.MC_DROPOUT,
        bayesnn.BAYESNN,
        ensemble.ENSEMBLE,
    )
}

# The method a run trains when none is named: the paper's ReDecNN.
DEFAULT_METHOD = decodable.REDECNN.name
# The plain classifier that costs are compared with (`decnn bench` reports every method's ratio to it).
BASELINE = standard.STANDARD.name


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise DecnnError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name]


def method_keys() -> list[str]:
    """Every key of the flat ``[method]`` section: ``name``, the settings of every registered method, and the
    shared pretrained-model terms and adversary."""
    keys = {"name", *PretrainedTerms.model_fields, *AdversaryTerms.model_fields}
    for spec in METHODS.values():
        keys |= set(spec.settings.model_fields)
    return sorted(keys)


def decodes_given_protected(method: MethodConfig) -> bool:
    """Whether a run's decoder reads the protected attribute beside h_l (``decode_given_protected`` on a method
    with a decoder; the flat ``[method]`` section may carry it for methods that do not read it)."""
    spec = METHODS.get(str(method.name))
    return spec is not None and spec.uses_decoder and bool(getattr(method, "decode_given_protected", False))


def accepting_pretrained_terms() -> list[str]:
    return [name for name, spec in METHODS.items() if spec.accepts_pretrained_terms]


def accepting_adversary() -> list[str]:
    return [name for name, spec in METHODS.items() if spec.accepts_adversary]


def resolve_method_section(section: dict[str, Any]) -> dict[str, Any]:
    """A run's ``[method]`` section as the run reads it: the method's name, its own settings and (when it accepts
    them) the pretrained-model terms, each validated with its defaults filled in.

    A key is an error only if no registered method (nor the pretrained-model terms) knows it; a value is checked
    against every model that declares its key, so a shared recipe section is checked once for all its methods.
    """
    name = section.get("name") or DEFAULT_METHOD
    if name not in METHODS:
        raise ConfigError(
            f"invalid configuration at method.name: unknown method {name!r}; choose from {sorted(METHODS)}"
        )
    known = method_keys()
    for key in section:
        if key not in known:
            raise ConfigError(f"invalid configuration at method.{key}: unknown key; valid keys here: {known}")
    models: list[type[MethodSettings]] = [
        PretrainedTerms,
        AdversaryTerms,
        *dict.fromkeys(spec.settings for spec in METHODS.values()),
    ]
    for model in models:
        given = {k: v for k, v in section.items() if k in model.model_fields}
        try:
            model.model_validate(given)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            raise ConfigError(f"invalid configuration at method.{where}: {message}") from None
    spec = METHODS[name]
    settings = spec.settings.model_validate({k: v for k, v in section.items() if k in spec.settings.model_fields})
    terms = PretrainedTerms.model_validate({k: v for k, v in section.items() if k in PretrainedTerms.model_fields})
    if terms.active and not spec.accepts_pretrained_terms:
        raise ConfigError(
            "--compose-with and --protect-with act on decoded activations; use them with "
            f"{' or '.join(accepting_pretrained_terms())}, not {name}"
        )
    adversary = AdversaryTerms.model_validate({k: v for k, v in section.items() if k in AdversaryTerms.model_fields})
    if adversary.active and not spec.accepts_adversary:
        raise ConfigError(
            "method.protect_adversary_weight and method.protect_mean_match_weight act on the hidden activations that "
            "a method's loss passes on; use them "
            f"with {', '.join(accepting_adversary())}, not {name}"
        )
    resolved = {"name": name, **settings.model_dump(mode="json", exclude_none=True)}
    if spec.accepts_pretrained_terms:
        resolved |= terms.model_dump(mode="json", exclude_none=True)
    if spec.accepts_adversary:
        resolved |= adversary.model_dump(mode="json", exclude_none=True)
    return resolved


__all__ = [
    "BASELINE",
    "DEFAULT_METHOD",
    "METHODS",
    "AdversaryTerms",
    "LossContext",
    "LossTerms",
    "MethodSettings",
    "MethodSpec",
    "PretrainedTerms",
    "get_method",
    "method_keys",
    "resolve_method_section",
]
