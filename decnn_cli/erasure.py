"""Linear concept erasure of the protected attribute from h_L after training: LEACE (Belrose et al. 2023).

The least-squares eraser r(x) = x - W+ P W (x - mean), with W the whitening of the features' covariance and P the
orthogonal projection onto the whitened cross-covariance of the features with the one-hot groups, is the affine map
that changes the features least (in the mean squared Mahalanobis sense) such that no linear classifier of the
groups does better than a constant one on the data it was fitted on: the groups' means of r(x) are equal there.
``decnn fairness --erase`` fits it on the training split and asks what is left on the evaluated one.

Fitted with weights, the guarantee holds for the weighted distribution. ``cell_balanced_weights`` weights every
(label, group) cell equally, which makes the attribute independent of the task label in what the eraser is fitted
on: where the training split ties the two (coloured MNIST: colour and class agree on 95% of the images), the
unweighted eraser removes the label's direction with the attribute's; the balanced one removes only what moves with
the attribute within each class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinearEraser:
    """x -> mean + (x - mean) @ projection.T, the fitted eraser (features of width d: mean (d,), projection (d, d))."""

    mean: np.ndarray
    projection: np.ndarray

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = features.astype(np.float64)
        return self.mean + (x - self.mean) @ self.projection.T

    @classmethod
    def fit(
        cls, features: np.ndarray, groups: np.ndarray, weights: np.ndarray | None = None, tolerance: float = 1e-8
    ) -> LinearEraser:
        """The LEACE eraser of ``groups`` (N,) integer labels from ``features`` (N, d), every example counted with its
        ``weights`` (N,) (equally by default).

        Fitted on units scaled to unit variance and mapped back: ReLU units range over orders of magnitude, and a
        unit nearly constant beside the others would otherwise fall under the whitening's ``tolerance`` (relative
        to the largest variance), be left as it is, and still carry the attribute to a probe that standardises."""
        x = features.astype(np.float64)
        if len(np.unique(groups)) < 2:  # nothing to erase (and a cross-covariance of rounding residue alone)
            return cls(x.mean(axis=0), np.eye(x.shape[1]))
        onehot = np.eye(int(groups.max()) + 1)[groups]
        w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
        w = w / w.sum()
        mean = w @ x
        scale = np.sqrt(w @ (x - mean) ** 2)
        # A constant unit (a dead ReLU) carries nothing and is left exactly as it is: any rounding residue a
        # projection put there would be blown up to unit variance by a probe that standardises.
        live = scale > 0
        scaled = _leace_projection((x[:, live] - mean[live]) / scale[live], onehot, w, tolerance)
        projection = np.eye(x.shape[1])
        projection[np.ix_(live, live)] = scale[live][:, None] * scaled / scale[live][None, :]
        return cls(mean, projection)


def _leace_projection(centred: np.ndarray, onehot: np.ndarray, w: np.ndarray, tolerance: float) -> np.ndarray:
    """I - W+ P W for features (N, d) centred under the weights ``w`` (N,, summing to 1): W whitens their weighted
    covariance, P projects onto W times their weighted cross-covariance with the one-hot groups (N, G)."""
    covariance = (centred * w[:, None]).T @ centred
    cross = (centred * w[:, None]).T @ (onehot - w @ onehot)  # (d, G)
    values, vectors = np.linalg.eigh(covariance)
    kept = values > values.max(initial=0.0) * tolerance
    vectors, roots = vectors[:, kept], np.sqrt(values[kept])
    whiten = (vectors / roots) @ vectors.T
    unwhiten = (vectors * roots) @ vectors.T
    basis, singular, _ = np.linalg.svd(whiten @ cross, full_matrices=False)
    basis = basis[:, singular > singular.max(initial=0.0) * tolerance]
    return np.eye(len(covariance)) - unwhiten @ basis @ basis.T @ whiten


def cell_balanced_weights(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Weights (N,) giving every (label, group) cell present the same total: label and group independent (and each
    uniform over what is present) in the weighted examples. A cell of a few examples gets the weight of a large one,
    so its examples' noise counts as much."""
    cells = np.asarray(labels, dtype=np.int64) * (int(groups.max()) + 1) + groups
    _, index, counts = np.unique(cells, return_inverse=True, return_counts=True)
    return 1.0 / counts[index]
