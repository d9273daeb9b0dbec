"""Prediction straight from a fitted model's arrays: the hot path of ``predict``.

sklearn's ``predict_proba`` validates its input on every call (``check_array``,
feature-name checks, a thread-pool limit) and, for full and tied covariances, loops
over components with one matrix product each. Over HTTP the input has already been
validated once, and the same model answers thousands of requests, so everything
that depends only on the model is computed once here, when the model is loaded:

- the Cholesky factors of all components side by side, so that one matrix product
  (one BLAS call) projects a batch of points for every component at once;
- each component's constant term: ``-d/2 log(2 pi)``, the log-determinant of its
  precision Cholesky factor, its log-weight and, for Bayesian mixtures, the
  variational terms of ``BayesianGaussianMixture._estimate_log_prob``.

The results equal sklearn's ``predict_proba``/``score_samples`` to about 1e-12
(the same formulas, summed in a different order), which ``tests/domain`` checks for
every covariance type.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import digamma
from sklearn.metrics.pairwise import euclidean_distances

__all__ = ["CompiledKMeans", "CompiledMixture", "compile_estimator"]

#: Values of the largest temporary array a block of rows may make (8 MiB of float64).
#: A full mixture projects each row once per component, k x d values a row: over a
#: million rows at once that was gigabytes; block by block it is this much, and the
#: answer's arrays are the only memory that grows with the rows. Blocks of this size
#: (14,000 rows of 8 features for 8 components) keep BLAS at full speed.
BLOCK_VALUES = 1 << 20


def in_blocks(
    evaluate: Callable[[np.ndarray, set[str]], dict[str, np.ndarray]],
    X: np.ndarray,
    include: set[str],
    values_per_row: int,
) -> dict[str, np.ndarray]:
    """``evaluate(X, include)`` over blocks of rows whose temporaries hold at most
    ``BLOCK_VALUES`` values (``values_per_row`` each), into arrays of all the rows.
    Small batches are one block: no copy, no loop."""
    rows = max(1, BLOCK_VALUES // max(values_per_row, 1))
    if len(X) <= rows:
        return evaluate(X, include)
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(X), rows):
        part = evaluate(X[start : start + rows], include)
        for name, value in part.items():
            if name not in out:
                out[name] = np.empty((len(X), *value.shape[1:]), dtype=value.dtype)
            out[name][start : start + len(value)] = value
    return out


def _log_det_cholesky(prec_chol: np.ndarray, kind: str, k: int, d: int) -> np.ndarray:
    """log det of each component's precision Cholesky factor, (k,)."""
    if kind == "full":
        return np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)
    if kind == "tied":
        return np.full(k, np.log(np.diagonal(prec_chol)).sum())
    if kind == "diag":
        return np.log(prec_chol).sum(axis=1)
    return d * np.log(prec_chol)


def _bayesian_terms(est: Any, d: int) -> np.ndarray:
    """What ``BayesianGaussianMixture._estimate_log_prob`` adds to the Gaussian term."""
    dof = np.asarray(est.degrees_of_freedom_, dtype=np.float64)
    log_lambda = d * np.log(2.0) + np.sum(digamma(0.5 * (dof - np.arange(0, d)[:, np.newaxis])), 0)
    terms = -0.5 * d * np.log(dof) + 0.5 * (log_lambda - d / est.mean_precision_)
    return np.asarray(terms, dtype=np.float64)


def _log_weights(est: Any) -> np.ndarray:
    """The mixture's log-weights as its own ``_estimate_log_weights`` defines them."""
    if hasattr(est, "weight_concentration_"):
        conc = est.weight_concentration_
        if est.weight_concentration_prior_type == "dirichlet_process":
            digamma_sum = digamma(conc[0] + conc[1])
            digamma_a = digamma(conc[0])
            digamma_b = digamma(conc[1])
            return np.asarray(
                digamma_a - digamma_sum + np.hstack((0, np.cumsum(digamma_b - digamma_sum)[:-1]))
            )
        return np.asarray(digamma(conc) - digamma(np.sum(conc)))
    return np.log(est.weights_)


@dataclass(frozen=True)
class CompiledMixture:
    """A Gaussian or Bayesian Gaussian mixture reduced to the arrays prediction needs.

    ``weighted_log_prob(X)`` is ``est._estimate_weighted_log_prob(X)``, (n, k).
    """

    kind: str
    means: np.ndarray  # (k, d)
    #: full/tied: the factors side by side, (d, k*d) or (d, d); diag/spherical: precisions
    projection: np.ndarray
    #: full/tied: each mean projected by its factor, (k*d,) or (k, d)
    projected_means: np.ndarray
    #: diag/spherical: sum(mean**2 * precision) per component, (k,)
    mean_terms: np.ndarray
    constant: np.ndarray  # (k,)

    @classmethod
    def from_estimator(cls, est: Any) -> CompiledMixture:
        means = np.ascontiguousarray(est.means_, dtype=np.float64)
        k, d = means.shape
        kind = est.covariance_type
        prec_chol = np.asarray(est.precisions_cholesky_, dtype=np.float64)
        constant = -0.5 * d * math.log(2 * math.pi) + _log_det_cholesky(prec_chol, kind, k, d)
        if hasattr(est, "degrees_of_freedom_"):
            constant = constant + _bayesian_terms(est, d)
        constant = constant + _log_weights(est)
        empty = np.empty(0)
        if kind == "full":
            projection = np.ascontiguousarray(prec_chol.transpose(1, 0, 2).reshape(d, k * d))
            projected = np.einsum("kd,kde->ke", means, prec_chol).reshape(k * d)
            return cls(kind, means, projection, projected, empty, constant)
        if kind == "tied":
            return cls(kind, means, prec_chol, means @ prec_chol, empty, constant)
        precisions = prec_chol**2
        if kind == "diag":
            mean_terms = np.sum(means**2 * precisions, axis=1)
        else:
            mean_terms = np.sum(means**2, axis=1) * precisions
        return cls(kind, means, precisions, empty, mean_terms, constant)

    @property
    def n_features(self) -> int:
        return int(self.means.shape[1])

    def weighted_log_prob(self, X: np.ndarray) -> np.ndarray:
        """log(weight_k) + log N(x | component k) per row and component, (n, k)."""
        k, d = self.means.shape
        if self.kind == "full":
            y = X @ self.projection
            y -= self.projected_means
            quad = np.einsum("nkd,nkd->nk", y.reshape(-1, k, d), y.reshape(-1, k, d))
        elif self.kind == "tied":
            y = (X @ self.projection)[:, np.newaxis, :] - self.projected_means
            quad = np.einsum("nkd,nkd->nk", y, y)
        elif self.kind == "diag":
            p = self.projection
            quad = self.mean_terms - 2.0 * (X @ (self.means * p).T) + (X**2 @ p.T)
        else:
            p = self.projection
            sq = np.einsum("nd,nd->n", X, X)
            quad = self.mean_terms - 2 * (X @ self.means.T * p) + np.outer(sq, p)
        return -0.5 * quad + self.constant

    def evaluate(self, X: np.ndarray, include: set[str]) -> dict[str, np.ndarray]:
        """``labels`` (predict), ``probabilities`` (predict_proba) and ``log_likelihood``
        (score_samples) from one pass, each only when named in ``include``."""
        k, d = self.means.shape
        per_row = k * d if self.kind in ("full", "tied") else k
        return in_blocks(self._evaluate, X, include, per_row + d)

    def _evaluate(self, X: np.ndarray, include: set[str]) -> dict[str, np.ndarray]:
        wlp = self.weighted_log_prob(X)
        out: dict[str, np.ndarray] = {}
        if "labels" in include:
            out["labels"] = wlp.argmax(axis=1)
        if "probabilities" in include or "log_likelihood" in include:
            top = wlp.max(axis=1, keepdims=True)
            # A row whose every term is -inf gives nan, as sklearn's logsumexp does.
            # (One errstate for both steps: each costs a microsecond, a one-point
            # predict's arithmetic about fifteen. The probabilities are exp(wlp -
            # logsumexp) as sklearn computes them: the shifted exponentials over their
            # sum, one exponential less, differ from it by up to 3e-12.)
            with np.errstate(invalid="ignore", divide="ignore", under="ignore"):
                finite_top = np.where(np.isfinite(top), top, 0.0)
                log_norm = np.log(np.exp(wlp - finite_top).sum(axis=1)) + finite_top[:, 0]
                if "probabilities" in include:
                    out["probabilities"] = np.exp(wlp - log_norm[:, np.newaxis])
            if "log_likelihood" in include:
                out["log_likelihood"] = log_norm
        return out


def kmeans_distances(
    X: np.ndarray, centers: np.ndarray, center_norms: np.ndarray | None = None
) -> np.ndarray:
    """Each row's distance to each center, (n, k): sklearn's ``transform``.

    ``euclidean_distances`` expands ``|x|^2 - 2 x.c + |c|^2``, which leaves ~1e-8 where
    a point equals a center; sklearn answers exactly 0 there only for its own
    ``cluster_centers_`` array (an ``X is Y`` shortcut zeroes the diagonal), as its
    ``test_transform`` checks. Points that arrive over HTTP are never that array, so a
    point exactly equal to a center is set to exactly 0 here: the answer sklearn gives
    for ``transform(cluster_centers_)``, and the true distance. Every other entry is
    ``euclidean_distances``' own.
    """
    distances = euclidean_distances(X, centers, Y_norm_squared=center_norms)
    for j, center in enumerate(centers):  # one center at a time: memory stays (n,)
        distances[np.equal(X, center).all(axis=1), j] = 0.0
    return distances


@dataclass(frozen=True)
class CompiledKMeans:
    """KMeans or MiniBatchKMeans: centers and their squared norms, computed once.

    Distances are ``kmeans_distances``: sklearn's ``transform``, with the centers'
    norms computed once.
    """

    centers: np.ndarray  # (k, d)
    center_norms: np.ndarray  # (1, k)

    @classmethod
    def from_estimator(cls, est: Any) -> CompiledKMeans:
        centers = np.ascontiguousarray(est.cluster_centers_, dtype=np.float64)
        return cls(centers, np.einsum("kd,kd->k", centers, centers)[np.newaxis, :])

    @property
    def n_features(self) -> int:
        return int(self.centers.shape[1])

    def evaluate(self, X: np.ndarray, include: set[str]) -> dict[str, np.ndarray]:
        """``labels`` (predict) and ``distances`` (transform), each only when named in
        ``include``."""
        return in_blocks(self._evaluate, X, include, self.centers.shape[0] + self.n_features)

    def _evaluate(self, X: np.ndarray, include: set[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if "labels" in include:
            # sklearn's predict ranks ||c||^2 - 2 x.c (its Lloyd kernel leaves out ||x||^2).
            ranking = self.center_norms - 2.0 * (X @ self.centers.T)
            out["labels"] = ranking.argmin(axis=1)
        if "distances" in include:
            out["distances"] = kmeans_distances(X, self.centers, self.center_norms)
        return out


def compile_estimator(est: Any) -> CompiledMixture | CompiledKMeans:
    """The prediction form of a fitted estimator of any algorithm the service fits."""
    if hasattr(est, "cluster_centers_"):
        return CompiledKMeans.from_estimator(est)
    return CompiledMixture.from_estimator(est)
