"""What a method is: its settings, its capabilities, how to build its network, its training loss and how it
samples predictions.

This module and the method modules import no torch at module level (torch is imported inside the functions
that run it), so the registry answers ``decnn methods``, the CLI's choices and name errors instantly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch
    from torch import nn

    from decnn_cli.config import MethodConfig, ModelConfig, RunConfig
    from decnn_cli.data.spec import DataSpec
    from decnn_cli.tasks import TaskHead


class MethodSettings(BaseModel):
    """The keys of the flat ``[method]`` section that one method reads, each documented where it is defined.

    A run's folder is keyed on every setting (see ``folder_key``) except those in ``unkeyed`` (settings that do
    not change what the run learns). Settings in ``keyed_when_set`` (added after runs were published) are keyed
    only when set away from their default, so earlier folders keep their names; settings in ``keyed_unless``
    (added with a default that changes training) are keyed unless set to the value that reproduces the training
    before them, so runs at that value keep their earlier names. ``unread`` names the settings that a given
    configuration ignores (a weight whose term is off): they are keyed at their default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    keyed_when_set: ClassVar[frozenset[str]] = frozenset()
    keyed_unless: ClassVar[dict[str, Any]] = {}
    unkeyed: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def of(cls, section: MethodConfig) -> Self:
        """These settings from a run's ``[method]`` section; the keys of other methods are not read."""
        return cls.model_validate({k: v for k, v in section.model_dump().items() if k in cls.model_fields})

    def unread(self) -> set[str]:
        """Settings this configuration does not read; none by default."""
        return set()

    def folder_key(self) -> dict[str, Any]:
        """What of these settings a run folder is named by (None values and unkeyed settings left out)."""
        fields = type(self).model_fields
        pinned = self.model_copy(update={k: fields[k].default for k in self.unread()})
        values = pinned.model_dump(mode="json", exclude_none=True)
        return {
            k: v
            for k, v in values.items()
            if k not in self.unkeyed
            and not (k in self.keyed_when_set and v == fields[k].default)
            and not (k in self.keyed_unless and v == self.keyed_unless[k])
        }


class NoSettings(MethodSettings):
    """A method that reads no key of ``[method]``."""


class PretrainedTerms(MethodSettings):
    """The Eq. 7 / Eq. 8 terms with frozen pretrained models, for methods that accept them
    (``MethodSpec.accepts_pretrained_terms``); ``decnn_cli.composition`` adds them to the loss."""

    compose_with: Path | None = Field(
        None, description="Checkpoint of a frozen pretrained model m to compose with (Eq. 7)."
    )
    compose_target: Literal["reconstruction", "direct"] = Field(
        "reconstruction", description="Regularise f(g(h)) towards m(g(h)) (Eq. 7) or towards m(x) (Table 6)."
    )
    compose_weight: float = Field(1.0, ge=0.0, description="Weight of the Eq. 7 divergence.")
    protect_with: Path | None = Field(
        None, description="Checkpoint of a frozen classifier of a protected attribute (Eq. 8)."
    )
    protect_weight: float = Field(1.0, ge=0.0, description="Weight of the Eq. 8 uniformity term.")
    protect_trains_decoder: bool = Field(
        True,
        description="Whether the Eq. 8 term also trains the decoder g (the paper's joint objective). False: g's "
        "weights are held fixed in the decode the term judges, so g cannot learn to hide the attribute from m while "
        "f keeps it; the gradient reaches f (and the path's earlier decodes) instead.",
    )

    keyed_when_set: ClassVar[frozenset[str]] = frozenset({"protect_trains_decoder"})

    @property
    def active(self) -> bool:
        """Whether any pretrained model is named (else the terms add nothing)."""
        return self.compose_with is not None or self.protect_with is not None

    def unread(self) -> set[str]:
        unread = set()
        if self.compose_with is None:
            unread |= {"compose_target", "compose_weight"}
        if self.protect_with is None:
            unread |= {"protect_weight", "protect_trains_decoder"}
        return unread


class AdversaryTerms(MethodSettings):
    """Terms that remove the protected attribute from f's last hidden layer h_L, for methods that accept them
    (``MethodSpec.accepts_adversary``); ``decnn_cli.adversary`` adds them to the loss: an adversary that reads the
    attribute off h_L, trained against f through gradient reversal (Ganin & Lempitsky 2015; the label-conditioned
    form of Zhang et al. 2018), and a penalty on the gap between the groups' means of h_L within each class.

    Eq. 8 constrains what the decoder g draws from h; this term acts on h itself, the quantity a linear probe reads
    (Table 8): the adversary minimises its cross-entropy on the protected attribute, and the same cross-entropy
    reaches f multiplied by -weight, so f learns to leave the attribute out of h_L.
    """

    protect_adversary_weight: float = Field(
        0.0,
        ge=0.0,
        description="Weight of the reversed gradient the adversary's cross-entropy sends into f (0: no adversary). "
        "Needs the protected attribute's labels in training: data.protected on CelebA; the coloured datasets "
        "always carry their colour.",
    )
    protect_adversary_hidden: int = Field(
        64,
        ge=0,
        description="Hidden units of the adversary's one hidden layer (ReLU); 0 makes it a logistic regression. A "
        "hidden layer lets it read the attribute differently per class (with the label as input), and makes it a "
        "stronger reader than the linear probe that measures the result, so a fall in the probe's F1 is not merely "
        "the linear reading being dodged.",
    )
    protect_adversary_given_label: bool = Field(
        True,
        description="Give the adversary the task label (one-hot) beside h_L, so that f is asked to hide only what "
        "h_L says about the attribute beyond the label (equalised odds). Without it (demographic parity) f must "
        "also hide the label wherever the attribute is correlated with it in training, as the colour is (0.95) in "
        "the coloured datasets and Male with Bearded in CelebA.",
    )
    protect_mean_match_weight: float = Field(
        0.0,
        ge=0.0,
        description="Weight of a penalty on how far apart the protected groups' means of h_L lie within each task "
        "class (each unit's gap divided by its standard deviation in the batch, squared and averaged over units; "
        "each batch's gap averaged over about 20 batches; 0: off). Where the group means of a representation are "
        "equal, no linear reader of it does better than a constant one (linear guardedness: Ravfogel et al. 2022; "
        "Belrose et al. 2023), so this asks directly for what Table 8's linear probe measures, with no adversary to "
        "train. Usable alone or with the adversary.",
    )
    protect_mean_match_layers: Literal["last", "every"] = Field(
        "last",
        description="Where the mean gap is measured: 'last' (h_L, which Table 8's probe reads) or 'every' (each "
        "hidden layer's gap, averaged over the layers; convolutional maps averaged over space). Under Eq. 4 / 5 the "
        "earlier layers must carry what g redraws, the attribute included, unless g is given it "
        "(method.decode_given_protected).",
    )
    protect_adversary_objective: Literal["reverse", "confusion"] = Field(
        "reverse",
        description="What f is asked of the adversary: 'reverse' (gradient reversal: f raises the adversary's "
        "cross-entropy, Ganin & Lempitsky) or 'confusion' (f makes the adversary's prediction uniform, KL(uniform "
        "|| adversary), the adversary's weights held for f's term; Alvi et al. 2018). Reversal rewards f for making "
        "the adversary confidently wrong, which a flipped code in h_L achieves while the attribute stays readable; "
        "confusion is lowest when the adversary can only guess.",
    )

    protect_adversary_standardised: bool = Field(
        False,
        description="Let the adversary read h_L z-scored over the batch (each unit centred and divided by its batch "
        "standard deviation, both inside the gradient), as Table 8's linear probe reads it standardised. Reading h_L "
        "raw, the adversary can be fooled by scale: under the reversed gradient f grows h_L without bound and "
        "training diverges at weight 1 (results/README.md); z-scored, growing or shifting h_L changes nothing it "
        "reads, so f can raise its loss only by taking the attribute out.",
    )

    keyed_when_set: ClassVar[frozenset[str]] = frozenset(
        {
            "protect_adversary_standardised",
            "protect_adversary_weight",
            "protect_adversary_hidden",
            "protect_adversary_given_label",
            "protect_adversary_objective",
            "protect_mean_match_weight",
            "protect_mean_match_layers",
        }
    )

    @property
    def adversary_on(self) -> bool:
        """Whether the adversary's head is trained against f."""
        return self.protect_adversary_weight > 0

    @property
    def mean_match_on(self) -> bool:
        """Whether the groups' means of h_L are pulled together."""
        return self.protect_mean_match_weight > 0

    @property
    def active(self) -> bool:
        """Whether any term on h_L is on (else they add nothing and nothing of them is keyed)."""
        return self.adversary_on or self.mean_match_on

    def unread(self) -> set[str]:
        unread = set() if self.mean_match_on else {"protect_mean_match_layers"}
        if not self.adversary_on:
            unread |= {
                "protect_adversary_hidden",
                "protect_adversary_given_label",
                "protect_adversary_objective",
                "protect_adversary_standardised",
            }
        return unread


@dataclass
class LossTerms:
    """A training loss: ``total`` to minimise, its named ``parts`` (detached), and f(x)'s ``logits``."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]
    logits: torch.Tensor


# A term added at every decoded input: (x, x_hat, logits of f(x_hat)) -> named scalar losses. The
# composition (Eq. 7) and protection (Eq. 8) objectives plug in here.
DecodedTerm = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], dict[str, "torch.Tensor"]]
# A term on the hidden activations of f(x): (hidden [h_1..h_L], labels y, protected-attribute groups (B,), index of
# the classifier in the model: 0, or the member of an ensemble) -> named scalar losses. The adversary plugs in here.
HiddenTerm = Callable[[list["torch.Tensor"], "torch.Tensor", "torch.Tensor", int], dict[str, "torch.Tensor"]]


@dataclass
class LossContext:
    """What a loss needs besides the batch: the method's own settings, the task, the training-set size and how far
    training has come."""

    settings: MethodSettings
    task: TaskHead
    num_train: int
    # Share of the training steps taken before this one, in [0, 1]; the training loop updates it every step, and
    # outside training it stays 1 (a fully trained objective).
    progress: float = 1.0
    decoded_terms: list[DecodedTerm] = field(default_factory=list)
    # Terms that see x_hat decoded by g with its weights held fixed: their gradient reaches f, not g.
    fixed_decoder_terms: list[DecodedTerm] = field(default_factory=list)
    input_terms: list[Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]] = field(default_factory=list)
    hidden_terms: list[HiddenTerm] = field(default_factory=list)
    # Modules with weights that the terms own (the adversary): trained by the same optimizer as the model (and
    # synchronised by DistributedDataParallel), never saved in its checkpoint.
    modules: list[nn.Module] = field(default_factory=list)
    # The batch's protected-attribute groups (B,), set by the training loop every step when the data carries them
    # (None otherwise); what the hidden terms are trained to predict.
    groups: torch.Tensor | None = None


@dataclass(frozen=True)
class MethodSpec:
    """A method of the registry: what it reads, what it can do, and its four functions.

    ``build(model_cfg, settings, spec)`` returns the network, whose forward is ``x -> (logits, [h_1..h_L])``.
    ``loss(model, x, y, ctx)`` returns the training loss (``ctx.settings`` holds the method's settings).
    ``sample(model, x, n, settings)`` returns logits (S, B, K) of S sampled classifiers (S = n for stochastic
    methods, the member count for the ensemble, 1 for deterministic ones); the model is in eval mode.
    ``point(model)`` returns the single deterministic classifier x -> logits that attacks are crafted against.

    Capabilities: ``predictive`` says which distribution the method predicts with: f's own forward pass
    ("point") or the mean of the sampled probabilities ("sample-mean"); ``uses_decoder``: the network has a
    shared decoder g (its settings key the run folder, it is drawn and its reconstruction error reported);
    ``stochastic``: ``sample`` draws distinct predictions; ``accepts_pretrained_terms``: the Eq. 7 / Eq. 8
    terms act on its decoded inputs; ``accepts_adversary``: its loss passes f(x)'s hidden activations to the hidden
    terms (``add_hidden_terms``), so the adversary of ``AdversaryTerms`` can act on them; ``needs_hidden_layers``:
    it cannot be built on a classifier without hidden layers (the linear and ResNet-18 models used as pretrained m).
    """

    name: str
    summary: str
    settings: type[MethodSettings]
    build: Callable[[ModelConfig, Any, DataSpec], nn.Module]
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor, LossContext], LossTerms]
    sample: Callable[[nn.Module, torch.Tensor, int, Any], torch.Tensor]
    point: Callable[[nn.Module], nn.Module]
    predictive: Literal["point", "sample-mean"] = "point"
    uses_decoder: bool = False
    stochastic: bool = False
    accepts_pretrained_terms: bool = False
    accepts_adversary: bool = False
    needs_hidden_layers: bool = True

    def settings_of(self, cfg: RunConfig) -> MethodSettings:
        """The method's own settings in a run's config."""
        return self.settings.of(cfg.method)

    def terms_of(self, cfg: RunConfig) -> PretrainedTerms:
        """The pretrained-model terms of a run (none for a method that does not accept them)."""
        return PretrainedTerms.of(cfg.method) if self.accepts_pretrained_terms else PretrainedTerms()

    def adversary_of(self, cfg: RunConfig) -> AdversaryTerms:
        """The adversary settings of a run (off for a method that does not accept it)."""
        return AdversaryTerms.of(cfg.method) if self.accepts_adversary else AdversaryTerms()

    def network(self, cfg: RunConfig, spec: DataSpec) -> nn.Module:
        """The method's network for a run's config and data."""
        return self.build(cfg.model, self.settings_of(cfg), spec)

    def folder_key(self, cfg: RunConfig) -> dict[str, Any]:
        """The method's part of a run folder's key: its name, its settings, any pretrained-model terms and the
        adversary (keyed only when on)."""
        key = {"name": self.name, **self.settings_of(cfg).folder_key()}
        if self.accepts_pretrained_terms:
            key |= self.terms_of(cfg).folder_key()
        if self.accepts_adversary:
            key |= self.adversary_of(cfg).folder_key()
        return key


def warmup_factor(progress: float, warmup: float) -> float:
    """Linear warm-up of a loss term: 0 at the first step, 1 once ``warmup`` (a share, 0-1) of the training steps are
    taken, and 1 throughout when ``warmup`` is 0. ``progress`` is ``LossContext.progress``."""
    return 1.0 if warmup == 0 else min(1.0, progress / warmup)


def add_terms(
    total: torch.Tensor, parts: dict[str, torch.Tensor], terms: dict[str, torch.Tensor], weight: float
) -> torch.Tensor:
    """Add ``weight`` times each term to ``total``, accumulating the detached values in ``parts``."""
    for name, value in terms.items():
        total = total + weight * value
        parts[name] = parts.get(name, 0.0) + weight * value.detach()
    return total


def add_hidden_terms(
    total: torch.Tensor,
    parts: dict[str, torch.Tensor],
    hidden: list[torch.Tensor],
    y: torch.Tensor,
    ctx: LossContext,
    member: int = 0,
) -> torch.Tensor:
    """Add the hidden terms of ``ctx`` (the adversary) on f(x)'s ``hidden`` activations to ``total``; ``member``:
    which classifier of the model produced them (an ensemble's member; 0 otherwise)."""
    if not ctx.hidden_terms:
        return total
    if ctx.groups is None:
        from decnn_cli.errors import DecnnError

        raise DecnnError(
            "the adversary (method.protect_adversary_weight) needs the protected attribute's labels in training: "
            "set data.protected (CelebA), or use a coloured dataset"
        )
    for term in ctx.hidden_terms:
        total = add_terms(total, parts, term(hidden, y, ctx.groups, member), 1.0)
    return total


@contextmanager
def weights_held(module: nn.Module) -> Iterator[None]:
    """Within the block, ``module`` computes as usual but records no gradient for its own weights."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in zip(module.parameters(), flags, strict=True):
            param.requires_grad_(flag)
