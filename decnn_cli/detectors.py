"""Post-hoc OOD detectors as scores beside the sampled ones: the field's baselines from pytorch-ood, and the
reconstruction error of the decodings, a score only a decodable network has.

Every score is oriented like those of ``decnn_cli.uncertainty``: **higher = more OOD** (pytorch-ood's own
convention for its outlier scores), so outliers, the positive class, should score higher than inliers.

They act on the run's single deterministic classifier (``MethodSpec.point``: f itself for ReDecNN and DecNN, dropout
off, BayesNN's posterior mean, the ensemble's member 0): its logits, and as features its last hidden layer h_L
(flattened), the input of the linear head that makes the logits. Mahalanobis, ViM and KNN are fitted on the run's
training split (at most ``FIT_EXAMPLES`` examples, a seeded sample). This registry imports no torch; pytorch-ood is
imported when scores are computed, so the CLI stays instant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from decnn_cli.errors import DecnnError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from rich.progress import Progress
    from torch import nn
    from torch.utils.data import Dataset

    from decnn_cli.methods import MethodSpec

# Training examples the fitted detectors see at most (a seeded sample of the training split): 10,000 give
# Mahalanobis's shared covariance of a 256-wide layer some 40 examples per dimension, and keep KNN's index small.
FIT_EXAMPLES = 10_000
# KNN's k: the paper's choice for CIFAR-10 (Sun et al. 2022; pytorch-ood's default), 50 of 10,000 fitted examples.
KNN_K = 50


@dataclass(frozen=True)
class DetectorSpec:
    """One detector: what it reads of the network (``logits``, ``features`` h_L, or the ``decoder``) and whether it
    is fitted on training examples first."""

    summary: str
    reads: Literal["logits", "features", "decoder"]
    fitted: bool = False


DETECTORS: dict[str, DetectorSpec] = {
    "msp": DetectorSpec("maximum softmax probability, negated (Hendrycks & Gimpel 2017)", "logits"),
    "energy": DetectorSpec("energy, -logsumexp of the logits (Liu et al. 2020)", "logits"),
    "maxlogit": DetectorSpec("maximum logit, negated (Hendrycks et al. 2022)", "logits"),
    "mahalanobis": DetectorSpec(
        "Mahalanobis distance of h_L to the nearest class mean, shared covariance (Lee et al. 2018)", "features", True
    ),
    "vim": DetectorSpec(
        "virtual-logit matching: h_L's residual off its principal subspace (Wang et al. 2022)", "features", True
    ),
    "knn": DetectorSpec(
        f"distance of normalised h_L to its {KNN_K}th nearest training example (Sun et al. 2022)", "features", True
    ),
    "recon_error": DetectorSpec(
        "per-pixel MSE between x and its decodings g(h_l), mean over layers (per layer: recon_error_l<l>)", "decoder"
    ),
}
ALL = "all"


def parse_detectors(names: Iterable[str]) -> tuple[str, ...]:
    """The detectors ``names`` ask for, in registry order (``all``: every one); an unknown name is one DecnnError."""
    wanted = set()
    for name in names:
        if name == ALL:
            wanted |= set(DETECTORS)
        elif name in DETECTORS:
            wanted.add(name)
        else:
            raise DecnnError(f"unknown detector {name!r}; choose from {[*DETECTORS, ALL]}")
    return tuple(name for name in DETECTORS if name in wanted)


def vim_dimension(features: int) -> int:
    """ViM's principal-subspace dimension d for features of this width: the rule of ViM's reference code
    (github.com/haoqiwang/vim): 1000 from 2048 features, 512 from 768, else half the width."""
    if features >= 2048:
        return 1000
    if features >= 768:
        return 512
    return max(1, features // 2)


@dataclass
class PointOutputs:
    """What the detectors read of a run on some inputs: ``logits`` (N, K) of the point classifier, its last hidden
    layer ``features`` (N, D) (None without hidden layers), the reconstruction errors ``recon`` (N, L) of the
    decodings of every layer (None without a decoder), and the ``labels`` (N,)."""

    logits: torch.Tensor
    features: torch.Tensor | None
    recon: torch.Tensor | None
    labels: torch.Tensor


def point_outputs(
    model: nn.Module,
    method: MethodSpec,
    dataset: Dataset,
    device: torch.device,
    batch_size: int = 512,
    progress: Progress | None = None,
    description: str = "detectors",
) -> PointOutputs:
    """The logits, h_L and reconstruction errors of the run's point classifier on ``dataset``.

    h_L is read from the ``(logits, [h_1 .. h_L])`` that the point classifier's network returns, whatever wraps it
    (a forward hook on every module keeps the outermost such pair). Reconstruction errors use the run's own forward
    pass and its decoder g (``MethodSpec.uses_decoder``): per-pixel MSE of g(h_l) against x for each layer l.
    """
    import torch

    from decnn_cli.data.splitting import make_loader

    model.eval()
    point = method.point(model).eval()
    seen: list[tuple[torch.Tensor, list[torch.Tensor]]] = []

    def keep(module: nn.Module, args: tuple, output: object) -> None:
        if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], list):
            seen.append(output)  # inner modules finish first: the last one is the outermost

    hooks = [m.register_forward_hook(keep) for m in point.modules()]
    logits, features, recon, labels = [], [], [], []
    task = progress.add_task(description, total=None, status="") if progress is not None else None
    try:
        with torch.no_grad():
            for batch in make_loader(dataset, batch_size, shuffle=False):
                x = batch[0].to(device)
                seen.clear()
                logits.append(point(x).float().cpu())
                hidden = seen[-1][1] if seen else []
                if hidden:
                    features.append(hidden[-1].flatten(1).float().cpu())
                if method.uses_decoder:
                    _, own = model(x)
                    decoded = model.decoder.decode_all(own)  # (L, B, C, H, W): every layer in one call
                    err = ((decoded.float() - x.unsqueeze(0).float()) ** 2).flatten(2).mean(2)  # (L, B)
                    recon.append(err.t().cpu())
                labels.append(torch.as_tensor(batch[1]))
                if progress is not None:
                    progress.advance(task)
    finally:
        for hook in hooks:
            hook.remove()
        if progress is not None:
            progress.remove_task(task)
    return PointOutputs(
        torch.cat(logits),
        torch.cat(features) if features else None,
        torch.cat(recon) if recon else None,
        torch.cat(labels),
    )


class Detectors:
    """The detectors ``names`` of one run, fitted on ``fit`` (the point outputs of training examples) where they
    need fitting; ``scores(outputs)`` gives each one's score per example (higher = more OOD).

    Detectors that cannot act on the run are left out and named in ``skipped`` with the reason: features for a
    classifier without hidden layers, the reconstruction error for a method without a decoder, the post-hoc
    detectors for a multi-label task (they assume one softmax over classes).
    """

    def __init__(self, names: tuple[str, ...], fit: PointOutputs, multilabel: bool = False):
        self.names: list[str] = []
        self.skipped: dict[str, str] = {}
        self.notes: list[str] = []  # what a fit had to adapt to the run (ViM's d)
        self._fitted: dict[str, object] = {}
        for name in names:
            reason = self._unusable(name, fit, multilabel)
            if reason:
                self.skipped[name] = reason
            else:
                self.names.append(name)
        if any(DETECTORS[n].fitted for n in self.names):
            self._fit(fit)

    @staticmethod
    def _unusable(name: str, fit: PointOutputs, multilabel: bool) -> str | None:
        reads = DETECTORS[name].reads
        if reads == "decoder":
            return None if fit.recon is not None else "the method has no decoder"
        if multilabel:
            return "it assumes one softmax over classes, and the task is multi-label"
        if reads == "features" and fit.features is None:
            return "the classifier has no hidden layer"
        return None

    def _fit(self, fit: PointOutputs) -> None:
        import torch
        from pytorch_ood.detector import KNN, Mahalanobis, ViM

        labels = fit.labels.long()
        if "mahalanobis" in self.names:
            present = set(labels.unique().tolist())
            missing = sorted(set(range(int(labels.max()) + 1)) - present)
            if missing:
                raise DecnnError(
                    f"mahalanobis needs training examples of every class; classes {missing} have none among the "
                    f"{len(labels)} fitted (raise --fit-examples or drop the subset)"
                )
            # pytorch-ood allocates its means and covariance in the default dtype: float64 here, so that inverting
            # the covariance of a layer with near-constant units stays accurate.
            default = torch.get_default_dtype()
            torch.set_default_dtype(torch.float64)
            try:
                self._fitted["mahalanobis"] = Mahalanobis(None).fit_features(fit.features.double(), labels)
            finally:
                torch.set_default_dtype(default)
        if "vim" in self.names:
            self._fitted["vim"], note = fit_vim(ViM, fit.features, fit.logits, labels)
            self.notes += [note] if note else []
        if "knn" in self.names:
            self._fitted["knn"] = KNN(None, k=min(KNN_K, len(labels))).fit_features(fit.features.float(), labels)

    def scores(self, outputs: PointOutputs) -> dict[str, np.ndarray]:
        """Each detector's score per example (N,), and ``recon_error_l<l>`` for every layer; higher = more OOD."""
        from pytorch_ood.detector import EnergyBased, MaxLogit, MaxSoftmax

        out: dict[str, np.ndarray] = {}
        logits = outputs.logits.float()
        for name in self.names:
            if name == "msp":
                score = MaxSoftmax.score(logits)
            elif name == "energy":
                score = EnergyBased.score(logits)
            elif name == "maxlogit":
                score = MaxLogit.score(logits)
            elif name == "mahalanobis":
                score = self._fitted[name].predict_features(outputs.features.double())
            elif name in ("vim", "knn"):
                score = self._fitted[name].predict_features(outputs.features.float())
            else:  # recon_error: the mean over layers, then each layer's
                out[name] = outputs.recon.mean(dim=1).double().numpy()
                for layer in range(outputs.recon.shape[1]):
                    out[f"{name}_l{layer + 1}"] = outputs.recon[:, layer].double().numpy()
                continue
            out[name] = score.detach().cpu().double().numpy()
        return out


def head_of(features: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear head (W (K, D), b (K,)) with logits = features W^T + b, recovered by least squares from the fitted
    examples, whatever module holds it (a plain linear layer, BayesNN's posterior mean, an ensemble member's).

    ViM needs W and b. The head is exactly linear in h_L, so the fit is exact up to rounding on the span of the
    features (directions h_L never takes, dead units, get weight 0, the minimum-norm solution); a residual beyond
    rounding means the head is not linear in h_L, and is an error.
    """
    import torch

    x = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], dim=1)  # (N, D + 1)
    solution = torch.linalg.lstsq(x, logits.double(), driver="gelsd").solution  # (D + 1, K)
    residual = (x @ solution - logits.double()).abs().max().item()
    scale = max(1.0, logits.abs().max().item())
    if residual > 1e-3 * scale:
        raise DecnnError(
            f"vim needs logits linear in the last hidden layer; the best linear fit is off by {residual:.3g}: "
            "leave vim out for this run"
        )
    return solution[:-1].t().float(), solution[-1].float()


def fit_vim(vim_class: type, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor):
    """pytorch-ood's ``ViM`` fitted on training features (N, D) and logits (N, K), with the head from ``head_of`` and
    d from ``vim_dimension``; returns the fitted detector and a note when d had to change (else None).

    When the centred features span only r <= d dimensions (many units that never fire, few fitting examples), the
    residual of every training example off the principal subspace is zero and ViM's scale alpha (mean max logit
    over mean residual norm) is infinite: d is then r // 2. ViM fits in float32, where LAPACK's eigendecomposition
    can fail to converge on such a covariance; then the same steps as its ``fit_features`` (covariance about
    u = -W^+ b, the eigenvectors of the D - d smallest eigenvalues, alpha) are taken in float64.
    """
    import torch

    weight, bias = head_of(features, logits)
    vim = vim_class(None, d=vim_dimension(features.shape[1]), w=weight, b=bias)
    centred = features.double() - vim.u.double()  # (N, D)
    rank = int(torch.linalg.matrix_rank(centred))
    note = None
    if rank <= vim.d:
        note = f"vim: d = {max(1, rank // 2)}, not {vim.d}: the fitted features span only {rank} dimensions"
        vim.d = max(1, rank // 2)
    try:
        return vim.fit_features(features.float(), labels), note
    except torch.linalg.LinAlgError:
        _, vectors = torch.linalg.eigh(centred.T @ centred / len(centred))  # ascending eigenvalues
        vim.principal_subspace = vectors[:, : centred.shape[1] - vim.d].float().contiguous()  # (D, D - d)
        residual = (centred.float() @ vim.principal_subspace).norm(dim=-1)  # (N,)
        vim.alpha = (vim._get_logits(features.float()).max(dim=-1).values.mean() / residual.mean()).item()
        return vim, note
