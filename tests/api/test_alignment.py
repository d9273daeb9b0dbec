"""``align_to`` for every algorithm, covariance type and weight prior, over HTTP.

Each case fits the estimator here too, reorders that copy's components with the
permutation the service answers (the attribute list below is written out on its
own, not taken from the service), and checks that the stored model is that
permuted estimator: the same arrays, the same predictions to the last bit, and the
unpermuted estimator's ``predict_proba`` / ``transform`` with its columns permuted.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from tests.conftest import SEED_BLOBS

K = 4
#: Reference component i sits on fitted component DERANGEMENT[i]: a permutation that
#: moves every component, so that an attribute left unpermuted cannot go unnoticed.
DERANGEMENT = [2, 0, 3, 1]
ESTIMATORS: dict[str, type] = {
    "gaussian_mixture": GaussianMixture,
    "bayesian_gaussian_mixture": BayesianGaussianMixture,
    "kmeans": KMeans,
    "minibatch_kmeans": MiniBatchKMeans,
}
COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]

CASES: list[Any] = [
    pytest.param("gaussian_mixture", {"covariance_type": c}, id=f"gm-{c}") for c in COVARIANCE_TYPES
]
CASES += [
    pytest.param(
        "bayesian_gaussian_mixture",
        {"covariance_type": c, "weight_concentration_prior_type": "dirichlet_distribution"},
        id=f"bgm-{c}-dirichlet_distribution",
    )
    for c in COVARIANCE_TYPES
]
CASES += [
    pytest.param("kmeans", {"n_init": 1}, id="kmeans"),
    pytest.param("minibatch_kmeans", {"n_init": 1}, id="minibatch_kmeans"),
]


def _points() -> np.ndarray:
    params = {k: v for k, v in SEED_BLOBS.items() if k != "kind"}
    X, _ = make_blobs(**params)
    return X


def _k_param(algorithm: str) -> str:
    return "n_components" if "mixture" in algorithm else "n_clusters"


def _permuted(algorithm: str, est: Any, perm: np.ndarray) -> Any:
    """A copy of ``est`` with new component i = old ``perm[i]``, as sklearn stores them."""
    est = copy.deepcopy(est)
    if "mixture" not in algorithm:
        est.cluster_centers_ = est.cluster_centers_[perm]
        return est
    names = ["weights_", "means_"]
    if est.covariance_type != "tied":  # tied: one matrix (and one dof) for every component
        names += ["covariances_", "precisions_", "precisions_cholesky_"]
    if algorithm == "bayesian_gaussian_mixture":
        names += ["weight_concentration_", "mean_precision_"]
        if est.covariance_type != "tied":
            names.append("degrees_of_freedom_")
    for name in names:
        setattr(est, name, getattr(est, name)[perm])
    return est


def _reference(client: TestClient, X: np.ndarray, means: np.ndarray) -> str:
    """A stored model whose component i lies on ``means[DERANGEMENT[i]]``."""
    body = {
        "algorithm": "kmeans",
        "params": {"n_clusters": K, "init": means[DERANGEMENT].tolist(), "max_iter": 1},
        "data": {"points": X.tolist()},
        "include": [],
    }
    r = client.post("/v1/models", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.mark.parametrize(("algorithm", "extra"), CASES)
def test_aligned_model_is_the_permuted_sklearn_estimator(
    client: TestClient, algorithm: str, extra: dict[str, Any]
) -> None:
    X = _points()
    params = {_k_param(algorithm): K, "random_state": 0, **extra}
    raw = ESTIMATORS[algorithm](**params).fit(X)
    mixture = "mixture" in algorithm
    means = raw.means_ if mixture else raw.cluster_centers_
    reference = _reference(client, X, means)

    r = client.post(
        "/v1/models",
        json={
            "algorithm": algorithm,
            "params": params,
            "data": {"points": X.tolist()},
            "align_to": reference,
        },
    )
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["alignment"] == {"model_id": reference, "permutation": DERANGEMENT}
    perm = np.array(DERANGEMENT)
    inverse = np.argsort(perm)
    expected = _permuted(algorithm, raw, perm)

    assert_array_equal(model["means"], means[perm])
    assert_array_equal(model["labels"], inverse[raw.predict(X)])
    predicted = client.post(f"/v1/models/{model['id']}/predict", json={"points": X.tolist()})
    assert predicted.status_code == 200, predicted.text
    answer = predicted.json()
    assert_array_equal(answer["labels"], expected.predict(X))
    assert_array_equal(answer["labels"], inverse[raw.predict(X)])
    if not mixture:
        assert_array_equal(model["labels"], inverse[raw.labels_])
        assert_array_equal(answer["distances"], expected.transform(X))
        assert_allclose(answer["distances"], raw.transform(X)[:, perm], rtol=1e-12)
        return

    assert_array_equal(model["weights"], expected.weights_)
    assert_array_equal(model["covariances"], expected.covariances_)
    assert_array_equal(model["precisions"], expected.precisions_)
    if extra["covariance_type"] == "tied":
        assert_array_equal(model["covariances"], raw.covariances_)
    # predict answers from the compiled model arrays: sklearn's numbers to 1e-12
    # (tests/domain/test_compiled.py), summed in another order.
    assert_allclose(answer["probabilities"], expected.predict_proba(X), rtol=0, atol=1e-12)
    assert_allclose(answer["probabilities"], raw.predict_proba(X)[:, perm], rtol=1e-9, atol=1e-300)
    scored = client.post(f"/v1/models/{model['id']}/score", json={"points": X.tolist()})
    assert scored.status_code == 200, scored.text
    assert_array_equal(scored.json()["log_likelihood"], expected.score_samples(X))
    assert_allclose(scored.json()["log_likelihood"], raw.score_samples(X), rtol=1e-12)
    if algorithm == "bayesian_gaussian_mixture":
        assert_array_equal(model["weight_concentration"], expected.weight_concentration_)
        assert_array_equal(model["mean_precision"], expected.mean_precision_)
        assert_array_equal(model["degrees_of_freedom"], expected.degrees_of_freedom_)
        assert_array_equal(model["mean_precision"], raw.mean_precision_[perm])
        if extra["covariance_type"] == "tied":
            assert np.ndim(raw.degrees_of_freedom_) == 0  # what made permute raise
            assert model["degrees_of_freedom"] == raw.degrees_of_freedom_
        else:
            assert_array_equal(model["degrees_of_freedom"], raw.degrees_of_freedom_[perm])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_align_to_refuses_a_dirichlet_process_prior(
    client: TestClient, covariance_type: str
) -> None:
    """Stick breaking orders the components, so they cannot be permuted: 422, nothing stored."""
    X = _points()
    reference = _reference(client, X, KMeans(K, n_init=1, random_state=0).fit(X).cluster_centers_)
    params = {
        "n_components": K,
        "covariance_type": covariance_type,
        "weight_concentration_prior_type": "dirichlet_process",
        "random_state": 0,
    }
    body = {
        "algorithm": "bayesian_gaussian_mixture",
        "params": params,
        "data": {"points": X.tolist()},
        "align_to": reference,
    }
    r = client.post("/v1/models", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["loc"] == ["body", "align_to"]
    assert "dirichlet_process" in r.json()["detail"]
    assert client.get("/v1/models").json()["total"] == 1  # the reference alone


def test_a_store_outage_while_reading_align_to_is_a_503_not_the_clients_fault(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a missing model is the request's fault (422 naming ``align_to``); a store
    that cannot answer is the server's (503), as it is everywhere else."""
    from service.errors import StoreUnavailable

    fit = {"algorithm": "gaussian_mixture", "params": {"n_components": 4, "random_state": 0},
           "data": {"generator": SEED_BLOBS}, "include": []}  # fmt: skip
    reference = client.post("/v1/models", json=fit).json()["id"]
    missing = client.post("/v1/models", json={**fit, "align_to": "0" * 28})
    assert missing.status_code == 422, missing.text
    assert missing.json()["errors"][0]["loc"] == ["body", "align_to"]
    catalogue = client.app.state.services.catalogue  # type: ignore[attr-defined]

    def outage(model_id: str) -> None:
        raise StoreUnavailable("The model store is not reachable.")

    monkeypatch.setattr(catalogue, "stored", outage)
    r = client.post("/v1/models", json={**fit, "align_to": reference})
    assert r.status_code == 503, r.text
    assert r.json()["type"].endswith("store-unavailable")
