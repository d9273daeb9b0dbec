"""Out-of-core k-means (Lloyd) over row-chunked dask arrays, with sklearn's numbers.

``fit_kmeans_dask(X, ...)`` returns an ordinary fitted ``sklearn.cluster.KMeans``
whose ``cluster_centers_``, ``inertia_`` and ``n_iter_`` are those of
``KMeans(init=..., n_init=1, algorithm="lloyd").fit(X)`` to rounding.

Why not ``dask_ml.cluster.KMeans``: dask-ml 2025.1.0 installs and runs with
scikit-learn 1.9.1, but it is not sklearn's algorithm. Its convergence test compares
the squared centre shift with ``tol`` itself, not with sklearn's ``tol`` scaled by
the data's mean variance (``_tolerance``), so it stops at other iterations (24
against sklearn's 8 on a 5,000 x 3 test); its ``inertia_`` after a final re-labelling
sums Euclidean, not squared, distances (7,505 reported where the true inertia is
13,355); it gives empty clusters no new centre; and it returns its own estimator, not
a ``KMeans``. With the iterations forced equal its centres do match sklearn's (4e-15),
so the map-reduce is sound; the rules around it are not sklearn's.

Each Lloyd iteration here is one map-reduce (``dask_mapreduce.map_reduce``): every row
chunk labels its rows with the nearest centre (sklearn's ``||c||^2 - 2 x.c``) and
returns per-centre sums and counts; the client averages them. As sklearn does, the
data are centred on their mean first (inside each chunk, lazily), the tolerance is
``tol * mean(var(X, axis=0))``, the fit stops when the summed squared centre shift is
``<= tol`` (identical labels give a zero shift, so sklearn's "strict convergence"
stops at the same iteration), and an empty cluster gets the row farthest from its
centre (a second pass, only in that iteration; with several empty clusters they take
the farthest rows in decreasing distance, where sklearn's order is argpartition's).
One last pass labels the rows under the final centres for ``inertia_``, as sklearn's
closing E-step does.

``labels_`` is not set: it would be an (n_samples,) array on the client, which for
out-of-core data is exactly what must not be. ``predict_dask(km, X)`` gives them as a
lazy dask array. Nothing computes ``X`` whole; only a few kilobytes per chunk travel.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any

import dask.array as da
import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from service.domain import sklearn_compat
from service.domain.outofcore.mapreduce import (
    compute,
    map_reduce,
    row_chunked,
    sample_rows,
    sum_dicts,
)
from service.domain.training.progress import FitProgress

#: Rows gathered for k-means++ seeding when ``init`` is not an array.
DEFAULT_SAMPLE_SIZE = 20_000


def _labels(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Nearest centre of each row, by sklearn's Lloyd formula ``||c||^2 - 2 x.c``."""
    return ((centers**2).sum(axis=1) - 2.0 * (X @ centers.T)).argmin(axis=1)


def _lloyd_chunk(X: np.ndarray, *, centers: np.ndarray, x_mean: np.ndarray) -> dict:
    """One chunk's part of a Lloyd iteration: per-centre sums (n_clusters, n_features),
    counts (n_clusters,) of its rows, labelled under ``centers`` (centred data)."""
    X = np.asarray(X, dtype=np.float64) - x_mean
    labels = _labels(X, centers)
    k = centers.shape[0]
    sums = np.stack([np.bincount(labels, weights=col, minlength=k) for col in X.T], axis=1)
    return {"sums": sums, "counts": np.bincount(labels, minlength=k).astype(np.float64)}


def _inertia_chunk(X: np.ndarray, *, centers: np.ndarray, x_mean: np.ndarray) -> dict:
    """One chunk's inertia under ``centers`` and how many of its rows each centre has."""
    X = np.asarray(X, dtype=np.float64) - x_mean
    labels = _labels(X, centers)
    return {
        "inertia": np.array(((X - centers[labels]) ** 2).sum()),
        "counts": np.bincount(labels, minlength=centers.shape[0]).astype(np.float64),
    }


def _farthest_chunk(
    X: np.ndarray, *, centers: np.ndarray, x_mean: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n`` rows of a chunk farthest from their centre: (distances (m,), rows
    (m, n_features), labels (m,)), m <= n, farthest first."""
    X = np.asarray(X, dtype=np.float64) - x_mean
    labels = _labels(X, centers)
    dist = ((X - centers[labels]) ** 2).sum(axis=1)
    top = np.argsort(-dist, kind="stable")[:n]
    return dist[top], X[top], labels[top]


def _keep_farthest(
    parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dist = np.concatenate([p[0] for p in parts])
    top = np.argsort(-dist, kind="stable")[:n]
    rows = np.concatenate([p[1] for p in parts])
    labels = np.concatenate([p[2] for p in parts])
    return dist[top], rows[top], labels[top]


def fit_kmeans_dask(
    X: da.Array,
    *,
    n_clusters: int = 8,
    init: Any = "k-means++",
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: Any = None,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    progress: FitProgress | None = None,
) -> KMeans:
    """Lloyd's k-means on row-chunked ``X``, one map-reduce per iteration.

    Parameters
    ----------
    X : dask array of shape (n_samples, n_features), chunked by rows
        Never computed whole.
    n_clusters, max_iter, tol, random_state : as ``sklearn.cluster.KMeans``
        (``n_init=1``, ``algorithm="lloyd"``, unit sample weights).
    init : ndarray of shape (n_clusters, n_features) or "k-means++"
        Initial centres; "k-means++" seeds with sklearn's ``kmeans_plusplus`` on
        ``sample_size`` rows sampled from the chunks.
    progress : FitProgress, optional
        Counts Lloyd iterations (total ``max_iter``); its ``FitCancelled`` stops the
        fit between iterations.

    Returns
    -------
    KMeans
        Fitted: ``cluster_centers_``, ``inertia_``, ``n_iter_``, ``n_features_in_``;
        no ``labels_`` (``predict_dask``).
    """
    X = row_chunked(X)
    n_samples, n_features = X.shape
    if X.dtype != np.float64:
        X = X.astype(np.float64)
    km = KMeans(
        n_clusters=n_clusters,
        init=init,
        n_init=1,
        max_iter=max_iter,
        tol=tol,
        random_state=random_state,
        algorithm="lloyd",
    )
    sklearn_compat.validate_params(km)
    if n_samples < n_clusters:
        raise ValueError(f"n_samples={n_samples} should be >= n_clusters={n_clusters}.")
    if progress is not None:
        progress.total, progress.unit = max(max_iter, 1), "iterations"
        progress.check()

    # One pass for the mean (sklearn centres X on it) and the variance (its tolerance).
    x_mean, variances = compute(X.mean(axis=0), X.var(axis=0))
    tol_ = float(np.mean(variances) * tol) if tol != 0 else 0.0

    if isinstance(init, str):
        if init != "k-means++":
            raise ValueError(f"init must be 'k-means++' or an array, got {init!r}.")
        rng = check_random_state(random_state)
        sample = sample_rows(X, sample_size, rng)
        centers, _ = kmeans_plusplus(sample - x_mean, n_clusters, random_state=rng)
    else:
        centers = np.array(init, dtype=np.float64, copy=True)
        if centers.shape != (n_clusters, n_features):
            raise ValueError(
                f"The shape of the initial centers {centers.shape} does not match "
                f"(n_clusters, n_features) = {(n_clusters, n_features)}."
            )
        centers -= x_mean

    n_iter = 0
    for i in range(max_iter):
        stats = map_reduce(X, partial(_lloyd_chunk, centers=centers, x_mean=x_mean), sum_dicts)
        sums, counts = stats["sums"], stats["counts"]
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            _relocate(X, centers, x_mean, sums, counts, empty)
        new_centers = sums / counts[:, np.newaxis]
        shift = np.sqrt(((new_centers - centers) ** 2).sum(axis=1))
        centers = new_centers
        n_iter = i + 1
        if progress is not None:
            progress.advance_to(n_iter)
        if (shift**2).sum() <= tol_:
            break

    final = map_reduce(X, partial(_inertia_chunk, centers=centers, x_mean=x_mean), sum_dicts)
    distinct = int(np.count_nonzero(final["counts"]))
    if distinct < n_clusters:
        warnings.warn(
            f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
            f"({n_clusters}). Possibly due to duplicate points in X.",
            ConvergenceWarning,
            stacklevel=2,
        )
    km.cluster_centers_ = centers + x_mean
    km.inertia_ = float(final["inertia"])
    km.n_iter_ = n_iter
    km.n_features_in_ = n_features
    sklearn_compat.set_centroid_fitted_state(km, n_clusters)
    sklearn_compat.set_kmeans_fit_state(km, tol=tol_, n_init=1, algorithm="lloyd")
    if progress is not None:
        progress.finish()
    return km


def _relocate(
    X: da.Array,
    centers: np.ndarray,
    x_mean: np.ndarray,
    sums: np.ndarray,
    counts: np.ndarray,
    empty: np.ndarray,
) -> None:
    """sklearn's ``_relocate_empty_clusters_dense``, in place on ``sums``/``counts``:
    each empty cluster takes one of the rows farthest from their (old) centre, which
    leaves its own cluster."""
    n = empty.size
    _, rows, labels = map_reduce(
        X,
        partial(_farthest_chunk, centers=centers, x_mean=x_mean, n=n),
        partial(_keep_farthest, n=n),
    )
    for new_id, row, old_id in zip(empty, rows, labels, strict=True):
        sums[old_id] -= row
        counts[old_id] -= 1
        sums[new_id] = row
        counts[new_id] = 1


def predict_dask(km: KMeans, X: da.Array) -> da.Array:
    """``km.predict`` of every row of ``X``, lazily: a dask array (n_samples,) of ints."""
    return row_chunked(X).map_blocks(km.predict, drop_axis=1, dtype=np.int32)
