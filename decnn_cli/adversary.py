"""The terms of ``AdversaryTerms`` on f's last hidden layer h_L: an adversary, a small head that predicts the
protected attribute from h_L, trained against f through gradient reversal (Ganin & Lempitsky 2015); and the gap
between the protected groups' means of h_L within each task class (``MeanGap``).

The head minimises its cross-entropy CE_adv on the protected groups. Between h_L and the head sits a gradient
reversal (identity forward, -weight times the gradient backward), so the one loss term CE_adv trains the head to
read the attribute and sends f the gradient of -weight * CE_adv: f learns to leave the attribute out of h_L. With
the task label as a second input (``protect_adversary_given_label``, the default) the adversary asks only for what
h_L says about the attribute beyond the label (Zhang, Lemoine & Mitchell 2018), which the task may need where the
two are correlated in training. This is the mutual-information view the paper's related work cites: Eq. 8 asks a
frozen m to find nothing in the decoded images; the adversary asks a trained reader to find nothing in h.

Only h_L is read: f's logits are a function of h_L alone, so what h_L does not carry the prediction cannot use;
Table 8's probe reads h_L; and the earlier layers must still carry what the decoder needs to reconstruct x (the
colour included) under Eq. 4 / 5, which an adversary on every layer would fight head-on. Convolutional maps are
averaged over space, as the probe does. Groups are weighted by n / (G * n_g) counted on the training split, so a
rare group (Bald: 1.5% of the training faces) is not learned as "never" by the adversary. The adversary is part
of training only: it is not saved with the model (the fairness evaluation fits its own probe).

The mean gap asks for what a linear probe needs without a reader to train: a linear classifier of the attribute
does no better than a constant one exactly when the groups' means of the representation are equal (Ravfogel et
al. 2022; Belrose et al. 2023, LEACE). It is measured within each task class (the label given, as the adversary
is by default), so that f need not hide the label where the attribute is correlated with it in training. It may
also be asked of every hidden layer (``protect_mean_match_layers = "every"``): with a decoder given the attribute,
g(h, a), reconstruction no longer needs it in any h_l, and a first layer with equal group means is a property of
f's weights, which carries to new inputs as h_L's trace of the attribute does not (results/README.md).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from decnn_cli.composition import uniformity_term
from decnn_cli.data.spec import DataSpec
from decnn_cli.data.splitting import groups_of
from decnn_cli.errors import DecnnError
from decnn_cli.methods import AdversaryTerms, LossContext
from decnn_cli.methods.base import weights_held
from decnn_cli.models import classifiers_of


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x unchanged forward; backward, the gradient times -``scale``."""
    return _Reverse.apply(x, scale)


def last_features(hidden: list[torch.Tensor]) -> torch.Tensor:
    """h_L as (B, width): an MLP's layer as it is, a convolutional map (B, C, H, W) averaged over space."""
    last = hidden[-1]
    return last.mean(dim=(-2, -1)) if last.dim() == 4 else last


class GroupAdversary(nn.Module):
    """One head per classifier of the model (an ensemble's members each get their own): (h_L [, one-hot label])
    -> logits (B, G) of the protected groups; a logistic regression, or one hidden ReLU layer."""

    def __init__(
        self,
        widths: list[int],
        spec: DataSpec,
        settings: AdversaryTerms,
        group_weights: torch.Tensor,
    ):
        super().__init__()
        self.weight = settings.protect_adversary_weight
        self.objective = settings.protect_adversary_objective
        self.given_label = settings.protect_adversary_given_label
        self.standardised = settings.protect_adversary_standardised
        self.multilabel = spec.task == "multilabel"
        self.num_labels = spec.num_outputs
        extra = spec.num_outputs if self.given_label else 0
        hidden = settings.protect_adversary_hidden
        groups = len(group_weights)

        def head(width: int) -> nn.Module:
            if hidden == 0:
                return nn.Linear(width + extra, groups)
            return nn.Sequential(nn.Linear(width + extra, hidden), nn.ReLU(), nn.Linear(hidden, groups))

        self.heads = nn.ModuleList([head(width) for width in widths])
        self.register_buffer("group_weights", group_weights.float())

    def logits(self, features: torch.Tensor, y: torch.Tensor, member: int = 0) -> torch.Tensor:
        """Group logits (B, G) from h_L features (B, width) and the task labels (B,) or (B, K)."""
        if self.standardised:
            features = zscored(features)
        if self.given_label:
            label = y.float() if self.multilabel else F.one_hot(y, self.num_labels).float()
            features = torch.cat([features, label.to(features.dtype)], dim=1)
        return self.heads[member](features)

    def loss(self, features: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, member: int = 0) -> torch.Tensor:
        """The adversary's own group-weighted cross-entropy: lower = it reads the attribute better."""
        logits = self.logits(features, y, member).float()
        return F.cross_entropy(logits, groups.long(), weight=self.group_weights)

    def term(
        self, hidden: list[torch.Tensor], y: torch.Tensor, groups: torch.Tensor, member: int = 0
    ) -> dict[str, torch.Tensor]:
        """The hidden term of the training loss (``LossContext.hidden_terms``).

        'reverse': CE_adv through the reversal; its gradient trains the head to lower CE_adv and reaches f as
        -weight times dCE_adv/dh_L. 'confusion': CE_adv on h_L detached (trains the head only) plus weight times
        KL(uniform || adversary(h_L)) with the head's weights held (trains f only).
        """
        features = last_features(hidden)
        if self.objective == "reverse":
            return {"adversary": self.loss(reverse_gradient(features, self.weight), y, groups, member)}
        with weights_held(self):
            confusion = uniformity_term(self.logits(features, y, member).float())
        return {
            "adversary": self.loss(features.detach(), y, groups, member),
            "adversary_confusion": self.weight * confusion,
        }


def _floored_std(variance: torch.Tensor) -> torch.Tensor:
    """Per-unit standard deviation from a batch variance, floored at a tenth of the layer's typical one, so
    near-constant units are not blown up; the floor scales with the layer, so scaling h_L changes nothing."""
    return (variance + 1e-2 * variance.mean() + 1e-12).sqrt()


def standardised(features: torch.Tensor) -> torch.Tensor:
    """``features`` (B, width) with every unit divided by its standard deviation in the batch (held out of the
    gradient; ``_floored_std``): scaling h_L changes nothing."""
    return features.float() / _floored_std(features.detach().float().var(dim=0, unbiased=False))


def zscored(features: torch.Tensor) -> torch.Tensor:
    """``features`` (B, width) with every unit centred and divided by its standard deviation in the batch, both
    inside the gradient (batch normalisation without its affine part, with ``_floored_std``'s floor relative to the
    layer where batch normalisation's is absolute): neither scaling nor shifting h_L changes the result, and the
    gradient back to h_L has no component along either."""
    centred = features.float() - features.float().mean(dim=0)
    return centred / _floored_std(centred.pow(2).mean(dim=0))


def class_masks(y: torch.Tensor) -> list[tuple[object, torch.Tensor]]:
    """(class, mask (B,)) for each task class in a batch: a label ((B,)), or a label vector for multi-label targets
    ((B, K)); the class is hashable, so running gaps keep it across batches."""
    if y.dim() == 1:
        return [(int(c), y == c) for c in torch.unique(y)]
    return [(tuple(row.tolist()), (y == row).all(dim=1)) for row in torch.unique(y, dim=0)]


def exact_mean_gap(features: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> float:
    """The statistic ``MeanGap`` trains on, from a whole split at once (one batch: its means are exact, no running
    averages). NaN where no class holds two groups."""
    term = MeanGap(1.0)
    value = float(term([features], y, groups)["mean_gap"])
    return value if term.compared else float("nan")


class MeanGap:
    """The gap between the protected groups' means of h_L within each task class, averaged over batches.

    A rare group has few examples in a batch (5% of a class of coloured MNIST: about 3 of 128), so one batch's gap
    is mostly noise: its square is biased up by that noise, and its gradient pulls every example of a class
    together; a cross-fitted square is unbiased but so noisy that its gradient swamps the task's. Here each
    (classifier, class, group) keeps an exponential moving average of the batches' gaps (``momentum`` 0.95: about
    the last 20 batches that held the group beside another), and the term's gradient is that of the true squared
    gap with one factor read from that average and the other from the batch: low-noise and unbiased but for the
    average's lag. Each gap is taken within one batch, between means standardised by that batch: averaging group
    means taken from different batches instead mixes their offsets and scales, and an h_L whose units sit far
    from zero relative to their spread (as at initialisation: up to ~250 standard deviations) then shows gaps of
    15-54 per batch where the exact gap is below 0.5. Its value is the running gap: per class, each group's squared
    distance to the mean of the other groups, averaged over units (so the weight does not scale with the width) and
    over the groups, and weighted by the classes' shares of the batch. A class whose batch holds one group adds
    nothing.
    """

    def __init__(self, weight: float, momentum: float = 0.95, every_layer: bool = False):
        self.weight = weight
        self.momentum = momentum
        self.every_layer = every_layer
        self.gaps: dict[tuple, torch.Tensor] = {}
        self.compared = False  # whether any class has held two groups yet

    def _running(self, key: tuple, batch_gap: torch.Tensor) -> torch.Tensor:
        previous = self.gaps.get(key)
        gap = batch_gap if previous is None else self.momentum * previous + (1 - self.momentum) * batch_gap
        self.gaps[key] = gap
        return gap

    def __call__(
        self, hidden: list[torch.Tensor], y: torch.Tensor, groups: torch.Tensor, member: int = 0
    ) -> dict[str, torch.Tensor]:
        layers = range(len(hidden)) if self.every_layer else [len(hidden) - 1]
        surrogate = hidden[-1].new_zeros(())
        value = hidden[-1].new_zeros(())
        for layer in layers:
            features = standardised(last_features([hidden[layer]]))
            for key, in_class in class_masks(y):
                present = torch.unique(groups[in_class])
                if len(present) < 2:
                    continue
                self.compared = True
                share = in_class.float().mean() / len(layers)
                means = torch.stack([features[in_class & (groups == g)].mean(dim=0) for g in present])  # (G, width)
                for index, g in enumerate(present.tolist()):
                    others = torch.cat([means[:index], means[index + 1 :]])
                    batch_gap = means[index] - others.mean(dim=0)
                    gap = self._running((member, layer, key, g), batch_gap.detach())
                    surrogate = surrogate + share / len(present) * (gap * batch_gap).mean()
                    value = value + share / len(present) * gap.pow(2).mean()
        term = self.weight * (surrogate + (value - surrogate).detach())  # the value of the gap, its gradient
        return {"mean_gap": term}


def attach_mean_match(ctx: LossContext, weight: float, every_layer: bool = False) -> MeanGap:
    """Add ``weight`` times the running mean gap of f(x)'s h_L (``every_layer``: of each h_l, averaged over l) to
    ``ctx``'s hidden terms; return the term."""
    term = MeanGap(weight, every_layer=every_layer)
    ctx.hidden_terms.append(term)
    return term


def group_weights(groups: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """n / (G * n_g) per group g of the training split; a group absent from it is one clear error."""
    count = max(len(names), int(groups.max()) + 1)
    sizes = torch.bincount(groups.long(), minlength=count).float()
    if (sizes == 0).any():
        missing = [names[g] if g < len(names) else str(g) for g in (sizes == 0).nonzero().flatten().tolist()]
        raise DecnnError(
            f"the training split holds no example of the protected group(s) {missing}: the adversary would have "
            "nothing to learn; use a split that holds both (CelebA: --set data.split=identity)"
        )
    return sizes.sum() / (count * sizes)


def attach_adversary(
    ctx: LossContext,
    settings: AdversaryTerms,
    model: nn.Module,
    spec: DataSpec,
    train: Dataset,
    device: torch.device,
    group_balanced: bool = False,
) -> GroupAdversary | None:
    """Add the terms on h_L that ``settings`` turns on to ``ctx``: the adversary (its term and its module), the
    mean gap; return the adversary, if any. ``train`` is the training split, whose groups weigh the adversary's
    loss, unless training draws the groups evenly already (``group_balanced``: equal weights)."""
    if not settings.active:
        return None
    train_groups = groups_of(train)
    if train_groups is None:
        raise DecnnError(
            "the adversary and the mean gap (method.protect_adversary_weight, method.protect_mean_match_weight) need "
            "the protected attribute's labels in training: set data.protected (CelebA), or use a coloured dataset"
        )
    if settings.mean_match_on:
        attach_mean_match(ctx, settings.protect_mean_match_weight, settings.protect_mean_match_layers == "every")
    if not settings.adversary_on:
        return None
    widths = []
    for classifier in classifiers_of(model):
        if not classifier.hidden_shapes:
            raise DecnnError("the adversary reads f's last hidden layer; this classifier has none (use mlp or cnn)")
        widths.append(classifier.hidden_shapes[-1][0])
    weights = group_weights(train_groups, spec.group_names)
    if group_balanced:
        weights = torch.ones_like(weights)
    adversary = GroupAdversary(widths, spec, settings, weights).to(device)
    ctx.hidden_terms.append(adversary.term)
    ctx.modules.append(adversary)
    return adversary
