"""Out-of-core EM for Gaussian mixtures: sklearn's numbers from data in row chunks.

``fit_gaussian_mixture_dask(X, ...)`` fits a ``GaussianMixture`` to a dask array
``X`` (n_samples, n_features) chunked by rows, which may be larger than any one
worker's memory, and returns an ordinary fitted ``sklearn.mixture.GaussianMixture``
(``predict``, ``score``, ``sample``, pickling all work). Started from the same
``weights_init``/``means_init``/``precisions_init``, it reaches sklearn's
``GaussianMixture(n_init=1)`` parameters, lower bounds, ``n_iter_`` and
``converged_`` to rounding (tests/domain/test_dask_em.py: 1e-8 relative).

One EM iteration is one map-reduce (``dask_mapreduce.map_reduce``): each row chunk
runs sklearn's own E-step (``_estimate_log_prob_resp``, the cached precision Cholesky
factors) under the current parameters and returns only sufficient statistics:

- ``nk``: sum of responsibilities, (n_components,);
- ``s1``: ``resp.T @ X``, (n_components, n_features);
- the second moments the covariance type needs:
  full: ``s1c``/``s2c``, first and second moments about a shift ``c_k`` (below);
  tied: ``gram`` = ``X.T @ X``, (n_features, n_features), as sklearn's tied formula;
  diag and spherical: ``sq`` = ``resp.T @ (X * X)``, as sklearn's diag formula;
- ``ll``: the sum of ``log p(x)``, whose mean is the EM lower bound.

They are summed up a tree and the M-step runs in numpy on the client, with sklearn's
formulas: ``nk + 10 * eps``, ``reg_covar`` added to the diagonal, weights normalised,
``_compute_precision_cholesky``. The lower bound of iteration ``n`` is the mean
log-likelihood under the parameters that iteration starts from, exactly as in
sklearn's ``fit_predict``, so it comes from the same pass as the statistics.

Full covariances. sklearn computes them two-pass, ``(resp_k * diff.T) @ diff / nk``
with ``diff = X - means_k`` and the *new* means, which a single pass cannot know. The
raw-moment form ``sum r x x^T / nk - m m^T`` cancels catastrophically when the data
sit far from the origin. So each chunk accumulates moments about a shift ``c_k``, the
means the iteration starts from (the k-means centres in the initial pass):
``s1c_k = sum_i r_ik (x_i - c_k)`` and ``s2c_k = sum_i r_ik (x_i - c_k)(x_i - c_k)^T``;
then with ``d_k = m_k - c_k`` (small once EM settles) the exact identity
``sum_i r_ik (x_i - m_k)(x_i - m_k)^T = s2c_k - d_k s1c_k^T - s1c_k d_k^T + r_k d_k d_k^T``
gives sklearn's covariance with next to no cancellation. tied, diag and spherical use
the raw-moment formulas sklearn itself uses, so they round as sklearn rounds.

Default start (no ``means_init`` etc.): k-means on a uniform random sample of rows
(``sample_size``, 20,000 by default) gathered from the chunks, with sklearn's
``KMeans(n_init=1)``, k-means++ seeded; then one pass over all of ``X`` assigns every
row to its nearest centre and, as sklearn's ``init_params="kmeans"`` does with its
k-means labels, the one-hot responsibilities give the initial weights, means and
covariances. Why not k-means||: it costs ~5 passes over the data plus a weighted
re-clustering to choose seeds; a 20,000-row sample already places k-means++ seeds
well for any k the service allows, costs one gather, is reproducible from
``random_state``, and EM then refines the result on all the data anyway.

Memory: nothing here computes ``X`` whole, on a worker or on the client. Chunks are
mapped one at a time by ``X.to_delayed()`` tasks and only statistics (kilobytes)
travel. If ``X`` comes from files or a random generator, each iteration reads or
regenerates its chunks; ``X.persist()`` first if the cluster's memory holds it.
float32 data are fitted in float64 (sums over millions of rows need it).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, Literal

import dask.array as da
import numpy as np
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.utils import check_random_state

from service.domain import sklearn_compat
from service.domain.outofcore.mapreduce import map_reduce, row_chunked, sample_rows, sum_dicts
from service.domain.training.progress import FitProgress

CovarianceType = Literal["full", "tied", "diag", "spherical"]

#: Rows gathered for the k-means that starts EM when no initial parameters are given.
DEFAULT_SAMPLE_SIZE = 20_000


def _shell(
    weights: np.ndarray, means: np.ndarray, precisions_cholesky: Any, covariance_type: str
) -> GaussianMixture:
    """A GaussianMixture holding just what sklearn's E-step reads, so chunks run
    sklearn's own ``_estimate_log_prob_resp``."""
    gm = GaussianMixture(n_components=len(weights), covariance_type=covariance_type)
    gm.weights_ = weights
    gm.means_ = means
    gm.precisions_cholesky_ = precisions_cholesky
    return gm


def _moments(
    X: np.ndarray, resp: np.ndarray, covariance_type: str, shift: np.ndarray
) -> dict[str, np.ndarray]:
    """The sufficient statistics of one chunk given its responsibilities.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
    resp : ndarray of shape (n_rows, n_components)
    shift : ndarray of shape (n_components, n_features)
        Centre of the full-covariance moments (see the module docstring).
    """
    stats = {"nk": resp.sum(axis=0), "s1": resp.T @ X}
    if covariance_type == "full":
        k, d = shift.shape
        s1c = np.empty((k, d))
        s2c = np.empty((k, d, d))
        for j in range(k):
            diff = X - shift[j]
            s1c[j] = resp[:, j] @ diff
            s2c[j] = (resp[:, j] * diff.T) @ diff
        stats.update(s1c=s1c, s2c=s2c)
    elif covariance_type == "tied":
        stats["gram"] = X.T @ X
    else:
        stats["sq"] = resp.T @ (X * X)
    return stats


def _e_step_chunk(
    X: np.ndarray,
    *,
    weights: np.ndarray,
    means: np.ndarray,
    precisions_cholesky: Any,
    covariance_type: str,
) -> dict[str, np.ndarray]:
    """One chunk's part of an EM iteration: sklearn's E-step, then its statistics."""
    X = np.asarray(X, dtype=np.float64)
    gm = _shell(weights, means, precisions_cholesky, covariance_type)
    log_prob_norm, log_resp = sklearn_compat.estimate_log_prob_resp(gm, X)
    stats = _moments(X, np.exp(log_resp), covariance_type, means)
    stats["ll"] = np.array(log_prob_norm.sum())
    return stats


def _assign_chunk(X: np.ndarray, *, centers: np.ndarray, covariance_type: str) -> dict:
    """One chunk's part of the initialisation: one-hot responsibilities of the
    nearest k-means centre, then the same statistics as an EM pass."""
    X = np.asarray(X, dtype=np.float64)
    dist = (centers**2).sum(axis=1) - 2.0 * (X @ centers.T)
    resp = np.zeros((X.shape[0], centers.shape[0]))
    resp[np.arange(X.shape[0]), dist.argmin(axis=1)] = 1.0
    return _moments(X, resp, covariance_type, centers)


def _m_step(
    stats: dict[str, np.ndarray], shift: np.ndarray, covariance_type: str, reg_covar: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's ``_estimate_gaussian_parameters`` from summed statistics.

    Returns
    -------
    nk : ndarray of shape (n_components,), ``sum(resp) + 10 * eps`` as sklearn has it
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray, shaped as ``covariances_`` for ``covariance_type``
    """
    nk = stats["nk"] + 10 * np.finfo(np.float64).eps
    means = stats["s1"] / nk[:, np.newaxis]
    d_features = means.shape[1]
    if covariance_type == "full":
        r = stats["nk"]
        delta = means - shift
        s1c, s2c = stats["s1c"], stats["s2c"]
        covariances = (
            s2c
            - delta[:, :, np.newaxis] * s1c[:, np.newaxis, :]
            - s1c[:, :, np.newaxis] * delta[:, np.newaxis, :]
            + r[:, np.newaxis, np.newaxis] * delta[:, :, np.newaxis] * delta[:, np.newaxis, :]
        ) / nk[:, np.newaxis, np.newaxis]
        covariances[:, np.arange(d_features), np.arange(d_features)] += reg_covar
    elif covariance_type == "tied":
        covariances = stats["gram"] - nk * means.T @ means
        covariances /= np.sum(nk)
        covariances.flat[:: d_features + 1] += reg_covar
    else:
        covariances = stats["sq"] / nk[:, np.newaxis] - means**2 + reg_covar
        if covariance_type == "spherical":
            covariances = covariances.mean(axis=1)
    return nk, means, covariances


def _inverse_precisions(precisions: np.ndarray, covariance_type: str) -> np.ndarray:
    """Covariances from ``precisions_init``, for ``max_iter=0`` with every init given
    (sklearn then has no covariances_ at all and fails)."""
    if covariance_type in ("full", "tied"):
        return np.linalg.inv(precisions)
    return 1.0 / precisions


def fit_gaussian_mixture_dask(
    X: da.Array,
    *,
    n_components: int = 1,
    covariance_type: CovarianceType = "full",
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    max_iter: int = 100,
    init_params: Literal["kmeans"] = "kmeans",
    weights_init: Any = None,
    means_init: Any = None,
    precisions_init: Any = None,
    random_state: Any = None,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    progress: FitProgress | None = None,
) -> GaussianMixture:
    """Fit a Gaussian mixture to row-chunked ``X`` by EM, one map-reduce per iteration.

    Parameters
    ----------
    X : dask array of shape (n_samples, n_features), chunked by rows
        Never computed whole (see the module docstring).
    n_components, covariance_type, tol, reg_covar, max_iter, weights_init, means_init,
    precisions_init, random_state :
        As ``sklearn.mixture.GaussianMixture``, with ``n_init=1``.
    init_params : {"kmeans"}
        k-means on ``sample_size`` sampled rows, then one pass over ``X`` (module
        docstring). Only used for the initial values not given.
    sample_size : int
        Rows sampled for that k-means.
    progress : FitProgress, optional
        Counts EM iterations (total ``max_iter``) and records each lower bound; its
        ``FitCancelled`` stops the fit between iterations.

    Returns
    -------
    GaussianMixture
        Fitted: ``weights_``, ``means_``, ``covariances_``, ``precisions_cholesky_``,
        ``precisions_``, ``converged_``, ``n_iter_``, ``lower_bound_``,
        ``lower_bounds_``, ``n_features_in_`` as sklearn sets them. Labels of the
        training rows are ``predict_dask(gm, X)``, lazily.

    Raises
    ------
    ValueError
        Invalid parameters or initial values (sklearn's own checks and messages), too
        few samples, or a component whose covariance is ill-defined.
    ConvergenceWarning
        Warned, as sklearn does, when ``max_iter > 0`` iterations did not converge.
    """
    X = row_chunked(X)
    n_samples, n_features = X.shape
    if X.dtype != np.float64:
        X = X.astype(np.float64)
    gm = GaussianMixture(
        n_components=n_components,
        covariance_type=covariance_type,
        tol=tol,
        reg_covar=reg_covar,
        max_iter=max_iter,
        n_init=1,
        init_params=init_params,
        weights_init=weights_init,
        means_init=means_init,
        precisions_init=precisions_init,
        random_state=random_state,
    )
    sklearn_compat.validate_params(gm)
    if n_samples < max(2, n_components):
        raise ValueError(
            f"Expected n_samples >= max(2, n_components) but got n_components = "
            f"{n_components}, n_samples = {n_samples}"
        )
    # sklearn's checks of the initial values, on an empty array of the right width.
    sklearn_compat.check_mixture_parameters(gm, np.empty((0, n_features)))
    if progress is not None:
        progress.total, progress.unit = max(max_iter, 1), "iterations"
        progress.check()

    weights, means, covariances, prec_chol = _initial_parameters(
        gm, X, random_state=random_state, sample_size=sample_size
    )
    if progress is not None:
        progress.advance_to(0)

    lower_bound = -np.inf
    lower_bounds: list[Any] = []
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        prev_lower_bound = lower_bound
        stats = map_reduce(
            X,
            partial(
                _e_step_chunk,
                weights=weights,
                means=means,
                precisions_cholesky=prec_chol,
                covariance_type=covariance_type,
            ),
            sum_dicts,
        )
        nk, new_means, covariances = _m_step(stats, means, covariance_type, reg_covar)
        weights, means = nk / np.sum(nk), new_means
        prec_chol = sklearn_compat.compute_precision_cholesky(covariances, covariance_type)
        lower_bound = np.float64(stats["ll"]) / n_samples
        lower_bounds.append(lower_bound)
        if progress is not None:
            progress.lower_bound = float(lower_bound)
            progress.advance_to(n_iter)
        if abs(lower_bound - prev_lower_bound) < tol:
            converged = True
            break

    if not converged and max_iter > 0:
        warnings.warn(
            "Best performing initialization did not converge. Try different init "
            "parameters, or increase max_iter, tol, or check for degenerate data.",
            ConvergenceWarning,
            stacklevel=2,
        )
    sklearn_compat.set_mixture_parameters(gm, (weights, means, covariances, prec_chol))
    gm.converged_ = converged
    gm.n_iter_ = n_iter
    gm.lower_bound_ = lower_bound
    gm.lower_bounds_ = lower_bounds
    gm.n_features_in_ = n_features
    if progress is not None:
        progress.finish()
    return gm


def _initial_parameters(
    gm: GaussianMixture, X: da.Array, *, random_state: Any, sample_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """sklearn's ``_initialize``: given initial values win, the k-means start fills the
    rest (one sample gather and one pass, only when something is missing).

    Returns
    -------
    weights, means, covariances, precisions_cholesky
        ``covariances`` is None when it cannot be known before the first M-step.
    """
    n_samples = X.shape[0]
    cov_type = gm.covariance_type
    weights = means = covariances = None
    if gm.weights_init is None or gm.means_init is None or gm.precisions_init is None:
        rng = check_random_state(random_state)
        sample = sample_rows(X, sample_size, rng)
        centers = (
            KMeans(n_clusters=gm.n_components, n_init=1, random_state=rng)
            .fit(sample)
            .cluster_centers_
        )
        stats = map_reduce(
            X, partial(_assign_chunk, centers=centers, covariance_type=cov_type), sum_dicts
        )
        nk, means, covariances = _m_step(stats, centers, cov_type, gm.reg_covar)
        weights = nk / n_samples
    if gm.weights_init is not None:
        weights = np.asarray(gm.weights_init, dtype=np.float64)
    if gm.means_init is not None:
        means = np.asarray(gm.means_init, dtype=np.float64)
    if gm.precisions_init is None:
        prec_chol = sklearn_compat.compute_precision_cholesky(covariances, cov_type)
    else:
        precisions = np.asarray(gm.precisions_init, dtype=np.float64)
        prec_chol = sklearn_compat.compute_precision_cholesky_from_precisions(precisions, cov_type)
        if covariances is None:
            covariances = _inverse_precisions(precisions, cov_type)
    return weights, means, covariances, prec_chol


def predict_dask(gm: GaussianMixture, X: da.Array) -> da.Array:
    """``gm.predict`` of every row of ``X``, lazily: a dask array (n_samples,) of ints.

    The labels sklearn's fit_predict returns from its final E-step; computed chunk by
    chunk under the fitted parameters, so they equal ``gm.predict`` on the same rows.
    """
    X = row_chunked(X)
    return X.map_blocks(gm.predict, drop_axis=1, dtype=np.int64)
