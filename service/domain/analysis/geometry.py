"""Geometry of the pictures: covariance ellipses, PCA projections, the components a
model shows and the subsample of points drawn. Numbers only; ``plotting`` draws them.

Conventions (the ``/ellipses`` JSON and the figures agree on them):

- an ellipse's ``width`` is its full major axis, ``2 * n_sigma * sqrt(lambda_max)``,
  ``height`` its full minor axis, ``2 * n_sigma * sqrt(lambda_min)``, where the
  lambdas are the eigenvalues of the component's 2 x 2 covariance (as shown);
- ``angle`` is the major axis' direction in degrees, counterclockwise from the x
  axis, in ``[0, 180)``; a circle (equal eigenvalues) has angle 0;
- these are exactly matplotlib's ``Ellipse(xy, width, height, angle=...)`` arguments.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.decomposition import PCA

from service.domain.training import estimators
from service.errors import UnsupportedOperation

#: The sigma levels drawn and described for every mixture component.
N_SIGMAS: tuple[int, ...] = (1, 2, 3)
#: More training points than this are drawn as a deterministic random subsample.
MAX_PLOT_POINTS = 20_000
#: Relative eigenvalue gap under which a covariance counts as a circle (angle 0).
_ISOTROPIC_RTOL = 1e-12


@dataclass(frozen=True)
class SigmaEllipse:
    """One n-sigma contour of a 2-D Gaussian; lengths are full axes, angle in degrees."""

    n_sigma: int
    width: float
    height: float
    angle: float


def ellipse_axes(cov: np.ndarray, n_sigmas: Sequence[int] = N_SIGMAS) -> list[SigmaEllipse]:
    """The n-sigma ellipses of a (2, 2) covariance, from its eigen-decomposition.

    Eigenvalues below zero (a covariance drawn with ``check_valid="warn"``, or
    rounding) are clipped to zero: the ellipse degenerates to a segment.
    """
    cov = np.asarray(cov, dtype=np.float64)
    if cov.shape != (2, 2):
        raise ValueError(f"expected a (2, 2) covariance, got shape {cov.shape}")
    # eigh reads one triangle; symmetrise so that rounding in a projection is not lost.
    eigvals, eigvecs = np.linalg.eigh((cov + cov.T) / 2.0)
    lam_min, lam_max = (max(float(v), 0.0) for v in eigvals)
    if lam_max - lam_min <= _ISOTROPIC_RTOL * lam_max:
        angle = 0.0
    else:
        major = eigvecs[:, 1]
        angle = math.degrees(math.atan2(float(major[1]), float(major[0]))) % 180.0
        if angle >= 180.0:  # -tiny % 180 rounds up to 180.0
            angle = 0.0
    return [
        SigmaEllipse(
            n_sigma=int(n),
            width=2.0 * n * math.sqrt(lam_max),
            height=2.0 * n * math.sqrt(lam_min),
            angle=angle,
        )
        for n in n_sigmas
    ]


@dataclass(frozen=True)
class Projection:
    """How d-dimensional points become the two plotted coordinates.

    ``identity`` keeps 2-D data as it is (1-D data gets a zero second coordinate);
    ``pca`` projects onto the first two principal components of the training data,
    as ``sklearn.decomposition.PCA(n_components=2, random_state=0)`` finds them:
    ``x' = (x - mean) @ components.T`` and ``cov' = components @ cov @ components.T``.
    """

    kind: Literal["identity", "pca"]
    n_features: int
    mean: np.ndarray | None = None  # (n_features,)
    components: np.ndarray | None = None  # (2, n_features), orthonormal rows
    explained_variance_ratio: np.ndarray | None = None  # (2,)

    def points(self, X: np.ndarray) -> np.ndarray:
        """(n, n_features) -> (n, 2)."""
        X = np.asarray(X, dtype=np.float64)
        if self.kind == "pca":
            assert self.mean is not None and self.components is not None
            return (X - self.mean) @ self.components.T
        if self.n_features == 1:
            return np.column_stack([X[:, 0], np.zeros(len(X))])
        return X

    def covariances(self, covs: np.ndarray) -> np.ndarray:
        """(k, n_features, n_features) -> (k, 2, 2)."""
        covs = np.asarray(covs, dtype=np.float64)
        if self.kind == "pca":
            assert self.components is not None
            V = self.components
            return np.einsum("ij,kjl,ml->kim", V, covs, V)
        if self.n_features == 1:
            out = np.zeros((len(covs), 2, 2))
            out[:, 0, 0] = covs[:, 0, 0]
            return out
        return covs

    def axis_labels(self) -> tuple[str, str]:
        if self.kind == "pca":
            assert self.explained_variance_ratio is not None
            r1, r2 = (100.0 * float(r) for r in self.explained_variance_ratio)
            return f"PC1 ({r1:.1f}% of variance)", f"PC2 ({r2:.1f}% of variance)"
        return "feature 0", "feature 1"

    def describe(self) -> str:
        """The title line that says what the axes are."""
        if self.kind != "pca":
            return ""
        return (
            f"{self.n_features} features projected onto the first two principal components "
            "of the training data"
        )

    def basis(self) -> dict[str, Any] | None:
        if self.kind != "pca":
            return None
        assert self.mean is not None and self.components is not None
        assert self.explained_variance_ratio is not None
        # Plain lists: sklearn's PCA arrays are not always C-contiguous, which orjson needs.
        return {
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "explained_variance_ratio": self.explained_variance_ratio.tolist(),
        }


def projection_for(X: np.ndarray | None, n_features: int, *, what: str) -> Projection:
    """Identity for 1-2 features; otherwise PCA fitted on all of ``X``.

    ``what`` names the thing being projected, for the error an imported model (no
    training points, so no principal components) answers.
    """
    if n_features <= 2:
        return Projection("identity", n_features)
    if X is None:
        raise UnsupportedOperation(
            f"{what} has {n_features} features and is projected onto the principal "
            "components of its training points, but it was imported and the service "
            "holds no training points for it."
        )
    if len(X) < 2:
        raise UnsupportedOperation(
            f"{what} has {n_features} features but only {len(X)} training point; a PCA "
            "projection needs at least 2."
        )
    # sklearn picks the solver (covariance eigh for tall data, which is most data here);
    # the seed pins the randomized one it may pick for wide data.
    pca = PCA(n_components=2, random_state=0).fit(X)
    return Projection(
        "pca",
        n_features,
        mean=pca.mean_,
        components=pca.components_,
        explained_variance_ratio=pca.explained_variance_ratio_,
    )


@dataclass(frozen=True)
class Components:
    """What a model says about its components: means, and for mixtures covariances."""

    means: np.ndarray  # (k, d)
    covariances: np.ndarray | None  # (k, d, d) full matrices, None for centroid models
    weights: np.ndarray | None  # (k,)
    #: Which components get a mean marker and ellipses (None: all). A Bayesian
    #: mixture's unused components would otherwise clutter the picture.
    drawn: np.ndarray | None = None  # (k,) bool

    def drawn_indices(self) -> np.ndarray:
        if self.drawn is None:
            return np.arange(len(self.means))
        return np.flatnonzero(self.drawn)


def model_components(algorithm: str, est: Any) -> Components:
    if estimators.is_mixture(algorithm):
        return Components(
            np.asarray(est.means_), estimators.full_covariances(est), np.asarray(est.weights_)
        )
    return Components(np.asarray(est.cluster_centers_), None, None)


def ellipses_document(components: Components, projection: Projection) -> dict[str, Any]:
    """The ``/ellipses`` answer: per component its projected centre and n-sigma ellipses.

    Centroid models (KMeans) have no covariances: their components carry the
    projected centre, ``weight`` null and an empty ``sigmas`` list.
    """
    means = projection.points(components.means)
    covs = (
        projection.covariances(components.covariances)
        if components.covariances is not None
        else None
    )
    items = []
    for i, mean in enumerate(means):
        sigmas = ellipse_axes(covs[i]) if covs is not None else []
        items.append(
            {
                "component": i,
                "mean": [float(mean[0]), float(mean[1])],
                "weight": float(components.weights[i]) if components.weights is not None else None,
                "sigmas": [dataclasses.asdict(s) for s in sigmas],
            }
        )
    return {
        "projection": projection.kind,
        "n_features": projection.n_features,
        "n_sigmas": list(N_SIGMAS),
        "components": items,
        "pca": projection.basis(),
    }


def model_ellipses(resource: dict[str, Any], bundle: dict[str, Any]) -> dict[str, Any]:
    """``GET /v1/models/{id}/ellipses`` for a loaded model."""
    projection = projection_for(
        bundle.get("X"), int(resource["n_features"]), what=f"Model {resource['id']}"
    )
    doc = ellipses_document(
        model_components(resource["algorithm"], bundle["estimator"]), projection
    )
    return {
        "model_id": resource["id"],
        "algorithm": resource["algorithm"],
        "covariance_type": resource.get("covariance_type"),
        **doc,
    }


def subsample(n: int, limit: int = MAX_PLOT_POINTS) -> np.ndarray | None:
    """Sorted row indices of a fixed-seed random subsample, or None when all ``n`` fit.

    The seed is fixed so that the same model always gives the same picture.
    """
    if n <= limit:
        return None
    return np.sort(np.random.RandomState(0).choice(n, size=limit, replace=False))


def training_points(resource: dict[str, Any], bundle: dict[str, Any], limit: int) -> dict[str, Any]:
    """A model's training points for a client to draw (the explorer opening a stored
    model): every ``step``-th row, at most ``limit`` of them, in the data's own
    features (``/ellipses`` says how to project them). An import holds none: 422."""
    X = bundle.get("X")
    if X is None:
        raise UnsupportedOperation(
            f"Model {resource['id']} was imported: the service holds no training points for it."
        )
    n_samples = int(X.shape[0])
    step = max(1, -(-n_samples // limit))
    return {
        "model_id": resource["id"],
        "n_samples": n_samples,
        "n_features": int(X.shape[1]),
        "step": step,
        "points": np.asarray(X[::step]),
    }
