"""Linear concept erasure of the protected attribute from h_L after training: LEACE (Belrose et al. 2023).

The least-squares eraser r(x) = x - W+ P W (x - mean), with W the whitening of the features' covariance and P the
orthogonal projection onto the whitened cross-covariance of the features with the one-hot groups, is the affine map
that changes the features least (in the mean squared Mahalanobis sense) such that no linear classifier of the
groups does better than a constant one on the data it was fitted on: the groups' means of r(x) are equal there.
``decnn fairness --erase`` fits it on the training split and asks what is left on the evaluated one.
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
    def fit(cls, features: np.ndarray, groups: np.ndarray, tolerance: float = 1e-8) -> LinearEraser:
        """The LEACE eraser of ``groups`` (N,) integer labels from ``features`` (N, d).

        Fitted on units scaled to unit variance and mapped back: ReLU units range over orders of magnitude, and a
        unit nearly constant beside the others would otherwise fall under the whitening's ``tolerance`` (relative
        to the largest variance), be left as it is, and still carry the attribute to a probe that standardises."""
        x = features.astype(np.float64)
        onehot = np.eye(int(groups.max()) + 1)[groups]
        mean, scale = x.mean(axis=0), x.std(axis=0)
        # A constant unit (a dead ReLU) carries nothing and is left exactly as it is: any rounding residue a
        # projection put there would be blown up to unit variance by a probe that standardises.
        live = scale > 0
        scaled = _leace_projection((x[:, live] - mean[live]) / scale[live], onehot, tolerance)
        projection = np.eye(x.shape[1])
        projection[np.ix_(live, live)] = scale[live][:, None] * scaled / scale[live][None, :]
        return cls(mean, projection)


def _leace_projection(centred: np.ndarray, onehot: np.ndarray, tolerance: float) -> np.ndarray:
    """I - W+ P W for centred features (N, d): W whitens their covariance, P projects onto W times their
    cross-covariance with the one-hot groups (N, G)."""
    covariance = centred.T @ centred / len(centred)
    cross = centred.T @ (onehot - onehot.mean(axis=0)) / len(centred)  # (d, G)
    values, vectors = np.linalg.eigh(covariance)
    kept = values > values.max(initial=0.0) * tolerance
    vectors, roots = vectors[:, kept], np.sqrt(values[kept])
    whiten = (vectors / roots) @ vectors.T
    unwhiten = (vectors * roots) @ vectors.T
    basis, singular, _ = np.linalg.svd(whiten @ cross, full_matrices=False)
    basis = basis[:, singular > singular.max(initial=0.0) * tolerance]
    return np.eye(len(covariance)) - unwhiten @ basis @ basis.T @ whiten
