"""Out-of-core EM and k-means give sklearn's numbers from data in uneven row chunks,
count and stop between iterations, never hold X in one piece, and run on real
distributed workers."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from service.domain.outofcore.em import fit_gaussian_mixture_dask, predict_dask
from service.domain.outofcore.kmeans import fit_kmeans_dask
from service.domain.training.progress import FitCancelled, FitProgress
from tests.conftest import require

K = 3
#: 5,000 rows in 7 uneven chunks.
CHUNKS = ((500, 1200, 300, 900, 700, 1000, 400), (3,))


def _data() -> np.ndarray:
    rng = np.random.default_rng(0)
    X = np.vstack(
        [
            rng.normal([0, 0, 0], 1.0, (2000, 3)),
            rng.normal([4, 4, 0], 0.7, (1800, 3)),
            rng.normal([0, 5, 5], [1.5, 0.5, 1.0], (1200, 3)),
        ]
    )
    rng.shuffle(X)
    # Off the origin, so moment cancellation is exercised a little.
    return X + 5.0


XN = _data()
XD = da.from_array(XN, chunks=CHUNKS)
PRECISIONS_INIT = {
    "full": np.stack([np.eye(3)] * K),
    "tied": np.eye(3),
    "diag": np.ones((K, 3)),
    "spherical": np.ones(K),
}
COV_TYPES = list(PRECISIONS_INIT)
ATTRIBUTES = [
    "weights_",
    "means_",
    "covariances_",
    "precisions_cholesky_",
    "precisions_",
    "lower_bound_",
    "lower_bounds_",
]


def _params(covariance_type: str, **overrides: Any) -> dict[str, Any]:
    params = {
        "n_components": K,
        "covariance_type": covariance_type,
        "tol": 1e-6,
        "reg_covar": 1e-6,
        "max_iter": 500,
        "weights_init": np.full(K, 1 / K),
        "means_init": XN[[10, 20, 30]],
        "precisions_init": PRECISIONS_INIT[covariance_type],
    }
    return params | overrides


def _assert_same_mixture(ours: GaussianMixture, theirs: GaussianMixture) -> None:
    for name in ATTRIBUTES:
        np.testing.assert_allclose(
            np.asarray(getattr(ours, name)),
            np.asarray(getattr(theirs, name)),
            rtol=1e-8,
            atol=0,
            err_msg=name,
        )
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.converged_ == theirs.converged_
    assert ours.n_features_in_ == theirs.n_features_in_
    np.testing.assert_array_equal(ours.predict(XN), theirs.predict(XN))


class _LargestResult(Callback):
    """Records the largest array any task of the local scheduler returned."""

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        values = result.values() if isinstance(result, dict) else [result]
        for value in values:
            self.nbytes = max(self.nbytes, int(getattr(value, "nbytes", 0)))


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_em_matches_sklearn(covariance_type: str) -> None:
    params = _params(covariance_type)
    theirs = GaussianMixture(n_init=1, **params).fit(XN)
    with _LargestResult() as largest:
        ours = fit_gaussian_mixture_dask(XD, **params)
    _assert_same_mixture(ours, theirs)
    assert theirs.converged_ and theirs.n_iter_ > 5
    # No task ever held more than one chunk of X: nothing gathered it whole.
    assert 0 < largest.nbytes <= max(CHUNKS[0]) * 3 * 8
    np.testing.assert_array_equal(predict_dask(ours, XD).compute(), theirs.predict(XN))
    np.testing.assert_allclose(ours.score(XN), theirs.score(XN), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_em_max_iter_reached_warns_like_sklearn(covariance_type: str) -> None:
    params = _params(covariance_type, max_iter=3, tol=1e-12)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        theirs = GaussianMixture(n_init=1, **params).fit(XN)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        ours = fit_gaussian_mixture_dask(XD, **params)
    assert ours.converged_ is False and ours.n_iter_ == 3
    _assert_same_mixture(ours, theirs)


def test_em_progress_counts_iterations() -> None:
    seen: list[dict[str, Any]] = []
    progress = FitProgress(1, "steps", on_change=lambda p: seen.append(p.snapshot()), interval=0)
    ours = fit_gaussian_mixture_dask(XD, **_params("diag"), progress=progress)
    assert [s["done"] for s in seen] == [*range(ours.n_iter_ + 1), 500]
    assert seen[-1]["total"] == 500 and seen[-1]["unit"] == "iterations"
    assert seen[-2]["lower_bound"] == ours.lower_bound_


def test_em_cancel_stops_between_iterations() -> None:
    passes: list[int] = []
    progress = FitProgress(1, "steps", should_stop=lambda: progress.done >= 3)
    with pytest.raises(FitCancelled), _CountPasses(passes):
        fit_gaussian_mixture_dask(XD, **_params("full"), progress=progress)
    assert progress.done == 3
    assert len(passes) == 3  # three map-reduces, none started after the cancel


class _CountPasses(Callback):
    def __init__(self, passes: list[int]) -> None:
        super().__init__()
        self._passes = passes

    def _start(self, dsk: Any) -> None:
        self._passes.append(1)


def test_em_max_iter_zero_keeps_the_initial_values() -> None:
    params = _params("tied", max_iter=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = fit_gaussian_mixture_dask(XD, **params)
    assert ours.n_iter_ == 0 and ours.converged_ is False
    assert ours.lower_bound_ == -np.inf and ours.lower_bounds_ == []
    np.testing.assert_allclose(ours.precisions_, PRECISIONS_INIT["tied"])


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_em_default_start_reaches_sklearns_fit(covariance_type: str) -> None:
    """k-means on a row sample seeds EM; on well-separated blobs it ends where
    sklearn's k-means start does (not bit for bit: another start)."""
    theirs = GaussianMixture(K, covariance_type=covariance_type, random_state=0).fit(XN)
    ours = fit_gaussian_mixture_dask(
        XD, n_components=K, covariance_type=covariance_type, random_state=0, sample_size=1000
    )
    assert ours.converged_
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, rtol=1e-4)
    order = np.lexsort(ours.means_.T), np.lexsort(theirs.means_.T)
    np.testing.assert_allclose(ours.means_[order[0]], theirs.means_[order[1]], atol=1e-2)


def test_em_rejects_what_sklearn_rejects() -> None:
    with pytest.raises(ValueError, match="weights"):
        fit_gaussian_mixture_dask(XD, **_params("diag", weights_init=np.array([0.5, 0.6, 0.1])))
    with pytest.raises(ValueError, match="covariance_type"):
        fit_gaussian_mixture_dask(XD, n_components=2, covariance_type="nope")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n_clusters", "tol", "init_rows"),
    [(3, 1e-4, [10, 20, 30]), (5, 0.0, [1, 2, 3, 4, 5]), (8, 1e-3, list(range(40, 48)))],
)
def test_kmeans_matches_sklearn(n_clusters: int, tol: float, init_rows: list[int]) -> None:
    init = XN[init_rows]
    theirs = KMeans(n_clusters, init=init, n_init=1, algorithm="lloyd", tol=tol).fit(XN)
    with _LargestResult() as largest:
        ours = fit_kmeans_dask(XD, n_clusters=n_clusters, init=init, tol=tol)
    np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, rtol=1e-8)
    np.testing.assert_allclose(ours.inertia_, theirs.inertia_, rtol=1e-10)
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_array_equal(ours.predict(XN), theirs.predict(XN))
    assert largest.nbytes <= max(CHUNKS[0]) * 3 * 8


def test_kmeans_relocates_an_empty_cluster_like_sklearn() -> None:
    init = np.vstack([XN[:2], [[1e3, 1e3, 1e3]]])
    theirs = KMeans(3, init=init, n_init=1, algorithm="lloyd").fit(XN)
    ours = fit_kmeans_dask(XD, n_clusters=3, init=init)
    np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, rtol=1e-8)
    np.testing.assert_allclose(ours.inertia_, theirs.inertia_, rtol=1e-10)
    assert ours.n_iter_ == theirs.n_iter_


def test_kmeans_progress_and_default_seeding() -> None:
    progress = FitProgress(1, "steps")
    ours = fit_kmeans_dask(XD, n_clusters=K, random_state=0, progress=progress)
    assert progress.total == 300 and progress.done == 300  # finish() after n_iter_ steps
    theirs = KMeans(K, random_state=0, n_init=1).fit(XN)
    np.testing.assert_allclose(ours.inertia_, theirs.inertia_, rtol=1e-6)


@pytest.fixture(scope="module")
def cluster_client() -> Iterator[Any]:
    distributed = require("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.mark.slow
def test_em_runs_on_distributed_workers(cluster_client: Any) -> None:
    from distributed import get_task_stream

    params = _params("full", max_iter=8)  # short: not converged, as sklearn
    with pytest.warns(ConvergenceWarning):
        theirs = GaussianMixture(n_init=1, **params).fit(XN)
    with get_task_stream(cluster_client) as stream, pytest.warns(ConvergenceWarning):
        ours = fit_gaussian_mixture_dask(XD, **params)
    _assert_same_mixture(ours, theirs)
    chunk_tasks = [t for t in stream.data if "_e_step_chunk" in str(t["key"])]
    assert len(chunk_tasks) == len(CHUNKS[0]) * ours.n_iter_
    assert {t["worker"] for t in chunk_tasks} == set(cluster_client.scheduler_info()["workers"])
