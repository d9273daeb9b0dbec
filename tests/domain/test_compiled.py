"""The compiled prediction path equals sklearn's own methods, for every model kind."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from service.domain.inference import compiled as compiled_module
from service.domain.inference.compiled import compile_estimator

COV_TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    X, _ = make_blobs(n_samples=300, n_features=3, centers=4, cluster_std=1.6, random_state=10)
    rng = np.random.RandomState(0)
    # New points: near the data, far from it, and exactly on the means.
    new = np.vstack([rng.normal(0, 8, size=(200, 3)), rng.normal(0, 1e3, size=(20, 3))])
    return X, new


def _check_mixture(est: Any, new: np.ndarray) -> None:
    compiled = compile_estimator(est)
    new = np.vstack([new, est.means_])
    np.testing.assert_allclose(
        compiled.weighted_log_prob(new), est._estimate_weighted_log_prob(new), rtol=1e-12
    )
    out = compiled.evaluate(new, {"labels", "probabilities", "log_likelihood"})
    np.testing.assert_array_equal(out["labels"], est.predict(new))
    np.testing.assert_allclose(out["probabilities"], est.predict_proba(new), rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["log_likelihood"], est.score_samples(new), rtol=1e-12)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_gaussian_mixture_equals_sklearn(data: Any, covariance_type: str) -> None:
    X, new = data
    est = GaussianMixture(4, covariance_type=covariance_type, random_state=0).fit(X)
    _check_mixture(est, new)


@pytest.mark.parametrize("prior", ["dirichlet_process", "dirichlet_distribution"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_bayesian_mixture_equals_sklearn(data: Any, covariance_type: str, prior: str) -> None:
    X, new = data
    est = BayesianGaussianMixture(
        n_components=5,
        covariance_type=covariance_type,
        weight_concentration_prior_type=prior,
        random_state=0,
        max_iter=500,
    ).fit(X)
    _check_mixture(est, new)


def test_one_dimensional_and_one_component() -> None:
    X = np.random.RandomState(1).normal(size=(50, 1))
    for kind in COV_TYPES:
        est = GaussianMixture(1, covariance_type=kind, random_state=0).fit(X)
        _check_mixture(est, X[:5])


@pytest.mark.parametrize("cls", [KMeans, MiniBatchKMeans])
def test_kmeans_equals_sklearn(data: Any, cls: Any) -> None:
    X, new = data
    est = cls(n_clusters=4, random_state=0, n_init=3).fit(X)
    new = np.vstack([new, est.cluster_centers_])
    out = compile_estimator(est).evaluate(new, {"labels", "distances"})
    np.testing.assert_array_equal(out["labels"], est.predict(new))
    # Exactly sklearn's transform; at the centers, what transform(cluster_centers_) gives.
    expected = est.transform(new)
    expected[-4:] = est.transform(est.cluster_centers_)
    np.testing.assert_array_equal(out["distances"], expected)
    np.testing.assert_array_equal(np.diag(out["distances"][-4:]), np.zeros(4))


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_large_batches_go_in_blocks_with_the_same_results(
    data: Any, covariance_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of a few rows (BLOCK_VALUES made tiny) answer what one block answers."""
    X, new = data
    mixture = GaussianMixture(4, covariance_type=covariance_type, random_state=0).fit(X)
    kmeans = KMeans(4, n_init=1, random_state=0).fit(X)
    cases = [
        (compile_estimator(mixture), {"labels", "probabilities", "log_likelihood"}),
        (compile_estimator(kmeans), {"labels", "distances"}),
    ]
    whole = [compiled.evaluate(new, fields) for compiled, fields in cases]
    monkeypatch.setattr(compiled_module, "BLOCK_VALUES", 50)  # a few rows per block
    for (compiled, fields), expected in zip(cases, whole, strict=True):
        blocked = compiled.evaluate(new, fields)
        assert blocked.keys() == expected.keys()
        for name, value in expected.items():
            assert blocked[name].dtype == value.dtype
            # BLAS may sum a block's products in another order: equal to rounding.
            np.testing.assert_allclose(blocked[name], value, rtol=1e-13, atol=0)
