"""The notebook's story, told over HTTP, with every number checked against sklearn.

The seed notebook makes blobs, fits a 4-component mixture, then shows two elongated
Gaussians that k-means splits badly and a mixture recovers. A client following the
README must see exactly what the notebook sees in-process, so each step here runs
the same computation locally and compares.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

#: ``make_blobs(n_samples=200, n_features=2, centers=4, cluster_std=1.6, random_state=10)``
SEED_BLOBS: dict[str, Any] = {
    "kind": "blobs",
    "n_samples": 200,
    "n_features": 2,
    "centers": 4,
    "cluster_std": 1.6,
    "random_state": 10,
}

#: The notebook's second scene, covariances as typed there: neither is symmetric PSD.
NOTEBOOK_COMPONENTS: list[dict[str, Any]] = [
    {"mean": [0, 1], "cov": [[1, 2], [0.7, 2]], "n_samples": 1000},
    {"mean": [1, -2], "cov": [[2, 1], [-2, 1]], "n_samples": 1000},
]

#: A valid version of the story: two long ellipses crossing like an X. Their means
#: are close, so k-means (round clusters) cuts the X in half while a full-covariance
#: mixture follows each arm. Seed chosen so the gap is wide (checked in the test).
CROSSING_COMPONENTS: list[dict[str, Any]] = [
    {"mean": [0, 0], "cov": [[4, 3.8], [3.8, 4]], "n_samples": 300},
    {"mean": [0, 0.5], "cov": [[4, -3.8], [-3.8, 4]], "n_samples": 300},
]
SCENE_SEED = 0


def assert_close(actual: Any, expected: Any) -> None:
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), rtol=1e-10
    )


def seed_points() -> tuple[np.ndarray, np.ndarray]:
    params = {k: v for k, v in SEED_BLOBS.items() if k != "kind"}
    X, y = make_blobs(**params)
    return X, y


def draw(components: list[dict[str, Any]], seed: int, **kwargs: Any) -> np.ndarray:
    """The points the contract promises: one RandomState, components drawn in order."""
    rs = np.random.RandomState(seed)
    return np.concatenate(
        [rs.multivariate_normal(c["mean"], c["cov"], c["n_samples"], **kwargs) for c in components]
    )


def fit_quietly(estimator: Any, X: np.ndarray) -> Any:
    """Reference fit; warnings are the service's business to report, not ours to raise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(X)


# -- part one: blobs and a 4-component mixture -------------------------------------------


def test_generate_seed_blobs_is_make_blobs_bit_for_bit(client: TestClient) -> None:
    r = client.post("/v1/datasets/generate", json=SEED_BLOBS)
    assert r.status_code == 200, r.text
    body = r.json()
    X, y = seed_points()
    np.testing.assert_array_equal(np.asarray(body["points"]), X)
    assert body["labels"] == y.tolist()
    assert "warnings" not in body


def test_seed_blobs_mixture_equals_sklearn(client: TestClient) -> None:
    r = client.post(
        "/v1/models",
        json={
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 4, "random_state": 0},
            "data": {"generator": SEED_BLOBS},
            "name": "seed-blobs",
        },
    )
    assert r.status_code == 201, r.text
    model = r.json()
    assert r.headers["location"] == f"/v1/models/{model['id']}"

    X, _ = seed_points()
    gm = GaussianMixture(n_components=4, random_state=0).fit(X)
    assert model["algorithm"] == "gaussian_mixture"
    assert model["name"] == "seed-blobs"
    assert (model["n_samples"], model["n_features"], model["n_components"]) == (200, 2, 4)
    assert model["covariance_type"] == "full"
    assert_close(model["means"], gm.means_)
    assert_close(model["weights"], gm.weights_)
    assert_close(model["covariances"], gm.covariances_)
    assert_close(model["precisions"], gm.precisions_)
    assert model["converged"] is bool(gm.converged_)
    assert model["n_iter"] == gm.n_iter_
    assert_close(model["lower_bound"], gm.lower_bound_)
    assert_close(model["bic"], gm.bic(X))
    assert_close(model["aic"], gm.aic(X))
    assert model["labels"] == gm.predict(X).tolist()
    assert_close(model["probabilities"], gm.predict_proba(X))
    assert model["warnings"] == []

    # The Location is the stored resource: the same numbers, without per-point arrays.
    stored = client.get(r.headers["location"])
    assert stored.status_code == 200
    resource = stored.json()
    per_point = {"labels", "probabilities", "distances"}
    assert per_point.isdisjoint(resource)
    assert resource == {k: v for k, v in model.items() if k not in per_point}

    # New points: predict and predict_proba of the same fitted mixture.
    rng = np.random.RandomState(1)
    new = rng.uniform(-15, 15, size=(25, 2))
    p = client.post(f"/v1/models/{model['id']}/predict", json={"points": new.tolist()})
    assert p.status_code == 200, p.text
    assert p.json()["labels"] == gm.predict(new).tolist()
    assert_close(p.json()["probabilities"], gm.predict_proba(new))
    assert p.json().get("distances") is None


def test_seed_blobs_mixture_without_random_state_has_the_right_shapes(client: TestClient) -> None:
    """The notebook's own call, ``GaussianMixture(n_components=4)``: unseeded, so only the
    shapes and the invariants (weights and memberships sum to one) are fixed."""
    r = client.post(
        "/v1/models",
        json={
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 4},
            "data": {"generator": SEED_BLOBS},
        },
    )
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["params"]["random_state"] is None
    assert np.shape(model["means"]) == (4, 2)
    assert np.shape(model["weights"]) == (4,)
    assert np.shape(model["covariances"]) == (4, 2, 2)
    assert np.shape(model["precisions"]) == (4, 2, 2)
    np.testing.assert_allclose(np.sum(model["weights"]), 1.0, rtol=1e-12)
    assert len(model["labels"]) == 200
    assert set(model["labels"]) <= {0, 1, 2, 3}
    probabilities = np.asarray(model["probabilities"])
    assert probabilities.shape == (200, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
    assert model["labels"] == probabilities.argmax(axis=1).tolist()


# -- part two: two elongated Gaussians ------------------------------------------------------


def test_notebook_covariances_are_refused_by_default(client: TestClient) -> None:
    r = client.post(
        "/v1/models",
        json={
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 2, "random_state": 0},
            "data": {
                "generator": {
                    "kind": "gaussian_mixture",
                    "components": NOTEBOOK_COMPONENTS,
                    "random_state": 0,
                }
            },
        },
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    locs = [e["loc"] for e in problem["errors"]]
    assert ["body", "data", "generator", "components", 0, "cov"] in locs
    assert "check_valid" in problem["detail"]


def test_notebook_covariances_with_check_valid_warn(client: TestClient) -> None:
    """numpy draws from the bad matrices anyway and warns once per component; the
    service must give the same points and hand each warning back."""
    spec = {
        "kind": "gaussian_mixture",
        "components": NOTEBOOK_COMPONENTS,
        "random_state": 3,
        "check_valid": "warn",
    }
    with pytest.warns(RuntimeWarning) as record:
        X = draw(NOTEBOOK_COMPONENTS, 3, check_valid="warn")
    numpy_messages = [str(w.message) for w in record]
    assert len(numpy_messages) == 2
    y = np.repeat([0, 1], 1000)

    r = client.post("/v1/datasets/generate", json=spec)
    assert r.status_code == 200, r.text
    body = r.json()
    np.testing.assert_array_equal(np.asarray(body["points"]), X)
    assert body["labels"] == y.tolist()
    assert [w["category"] for w in body["warnings"]] == ["RuntimeWarning", "RuntimeWarning"]
    for i, (item, message) in enumerate(zip(body["warnings"], numpy_messages, strict=True)):
        assert f"component {i}" in item["message"]
        assert message in item["message"]

    fit = client.post(
        "/v1/models",
        json={
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 2, "random_state": 0},
            "data": {"generator": spec},
            "include": ["labels"],
        },
    )
    assert fit.status_code == 201, fit.text
    model = fit.json()
    assert model["warnings"][:2] == body["warnings"]
    gm = fit_quietly(GaussianMixture(n_components=2, random_state=0), X)
    assert_close(model["means"], gm.means_)
    assert_close(model["covariances"], gm.covariances_)
    assert model["labels"] == gm.predict(X).tolist()


def test_mixture_recovers_crossing_ellipses_better_than_kmeans(client: TestClient) -> None:
    """The notebook's conclusion, with valid matrices: both fits equal sklearn's, and the
    mixture's labels agree with the truth far better than k-means' do."""
    spec = {"kind": "gaussian_mixture", "components": CROSSING_COMPONENTS, "random_state": 0}
    generated = client.post("/v1/datasets/generate", json=spec)
    assert generated.status_code == 200, generated.text
    X = draw(CROSSING_COMPONENTS, SCENE_SEED)
    np.testing.assert_array_equal(np.asarray(generated.json()["points"]), X)
    truth = np.asarray(generated.json()["labels"])

    km_r = client.post(
        "/v1/models",
        json={
            "algorithm": "kmeans",
            "params": {"n_clusters": 2, "init": "random", "n_init": 10, "random_state": 0},
            "data": {"generator": spec},
        },
    )
    gm_r = client.post(
        "/v1/models",
        json={
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 2, "random_state": 0},
            "data": {"generator": spec},
        },
    )
    assert km_r.status_code == 201, km_r.text
    assert gm_r.status_code == 201, gm_r.text
    km_model, gm_model = km_r.json(), gm_r.json()

    km = fit_quietly(KMeans(n_clusters=2, init="random", n_init=10, random_state=0), X)
    gm = fit_quietly(GaussianMixture(n_components=2, random_state=0), X)
    assert_close(km_model["means"], km.cluster_centers_)
    assert_close(km_model["inertia"], km.inertia_)
    assert km_model["n_iter"] == km.n_iter_
    assert km_model["labels"] == km.labels_.tolist()
    assert_close(gm_model["means"], gm.means_)
    assert_close(gm_model["covariances"], gm.covariances_)
    assert gm_model["labels"] == gm.predict(X).tolist()

    km_ari = adjusted_rand_score(truth, km_model["labels"])
    gm_ari = adjusted_rand_score(truth, gm_model["labels"])
    assert gm_ari > km_ari + 0.5, (gm_ari, km_ari)
