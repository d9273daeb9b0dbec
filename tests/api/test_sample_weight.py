"""``sample_weight`` on ``POST /v1/models``: k-means fits equal sklearn's
``fit(X, sample_weight=...)`` to the last bit, whatever the data source and whether the
fit runs now, as a job or in a worker process; bad weights are refused with a problem
naming ``body.sample_weight``, and the mixtures refuse the field."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.testing import assert_array_equal
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.datasets import make_blobs

from service.config import Settings
from service.main import create_app
from tests.api.test_jobs import wait_for
from tests.conftest import SEED_BLOBS

ESTIMATORS = {"kmeans": KMeans, "minibatch_kmeans": MiniBatchKMeans}
PARAMS = {"n_clusters": 4, "random_state": 0, "n_init": 2}
LOC = ["body", "sample_weight"]


def seed_X() -> np.ndarray:
    """The points ``SEED_BLOBS`` generates, (200, 2)."""
    X, _ = make_blobs(n_samples=200, n_features=2, centers=4, cluster_std=1.6, random_state=10)
    return X


def weights(n: int, seed: int = 0) -> np.ndarray:
    """Uneven weights, some zero, so that a fit ignoring them would differ."""
    w = np.random.RandomState(seed).uniform(0, 5, size=n)
    w[::7] = 0.0
    return w


def fit_body(algorithm: str, data: dict[str, Any], w: Any, **more: Any) -> dict[str, Any]:
    return {
        "algorithm": algorithm,
        "params": PARAMS,
        "data": data,
        "sample_weight": w.tolist() if isinstance(w, np.ndarray) else w,
        "include": ["labels"],
        **more,
    }


def assert_equals_sklearn(
    model: dict[str, Any], algorithm: str, X: np.ndarray, w: np.ndarray
) -> None:
    est = ESTIMATORS[algorithm](**PARAMS).fit(X, sample_weight=w)
    assert_array_equal(model["means"], est.cluster_centers_)
    assert model["inertia"] == est.inertia_
    assert model["n_iter"] == est.n_iter_
    if "labels" in model:
        assert_array_equal(model["labels"], est.labels_)
    assert model["weighted"] is True


def assert_problem(r: Any, status: int, loc: list[str | int]) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = r.json()
    assert loc in [e["loc"] for e in problem["errors"]], problem
    return problem


@pytest.mark.parametrize("algorithm", ESTIMATORS)
@pytest.mark.parametrize("source", ["points", "generator", "dataset_id"])
def test_weighted_fit_equals_sklearns(client: TestClient, algorithm: str, source: str) -> None:
    X = seed_X()
    w = weights(len(X))
    if source == "points":
        data: dict[str, Any] = {"points": X.tolist()}
    elif source == "generator":
        data = {"generator": SEED_BLOBS}
    else:
        stored = client.post("/v1/datasets", json={"points": X.tolist()})
        assert stored.status_code in (200, 201), stored.text
        data = {"dataset_id": stored.json()["id"]}
    r = client.post("/v1/models", json=fit_body(algorithm, data, w))
    assert r.status_code == 201, r.text
    assert_equals_sklearn(r.json(), algorithm, X, w)
    # The stored resource records that weights were used (not the weights).
    stored_model = client.get(f"/v1/models/{r.json()['id']}").json()
    assert stored_model["weighted"] is True
    assert "sample_weight" not in stored_model


@pytest.mark.parametrize("algorithm", ESTIMATORS)
def test_weights_change_the_fit_and_none_is_unweighted(client: TestClient, algorithm: str) -> None:
    X = seed_X()
    plain = client.post(
        "/v1/models",
        json={"algorithm": algorithm, "params": PARAMS, "data": {"points": X.tolist()}},
    ).json()
    assert plain["weighted"] is False
    weighted = client.post(
        "/v1/models", json=fit_body(algorithm, {"points": X.tolist()}, weights(len(X)))
    ).json()
    assert weighted["inertia"] != plain["inertia"]


def test_integer_weights_are_taken(client: TestClient) -> None:
    """sklearn's ``test_kmeans_results`` data: JSON integers are numbers too."""
    X = np.array([[0, 0], [0.5, 0], [0.5, 1], [1, 1]])
    body = {
        "algorithm": "kmeans",
        "params": {"n_clusters": 2, "n_init": 1, "init": [[0, 0], [1, 1]]},
        "data": {"points": X.tolist()},
        "sample_weight": [3, 1, 1, 3],
        "include": ["labels"],
    }
    r = client.post("/v1/models", json=body)
    assert r.status_code == 201, r.text
    est = KMeans(n_clusters=2, n_init=1, init=np.array([[0.0, 0], [1, 1]]))
    est.fit(X, sample_weight=[3, 1, 1, 3])
    assert_array_equal(r.json()["means"], est.cluster_centers_)
    assert r.json()["inertia"] == est.inertia_ == 0.375


@pytest.mark.parametrize("algorithm", ESTIMATORS)
@pytest.mark.parametrize(
    ("w", "loc", "words"),
    [
        ([1.0] * 199, LOC, "sample_weight.shape == (199,), expected (200,)!"),
        ([1.0] * 201, LOC, "sample_weight.shape == (201,), expected (200,)!"),
        ([0.0] * 200, LOC, "Sample weights must contain at least one non-zero number"),
        ([1.0] * 10 + [-1.0] + [1.0] * 189, [*LOC, 10], "greater than or equal to 0"),
        ([], LOC, "at least 1 item"),
        (["1"] * 200, [*LOC, 0], "valid number"),
        ([[1.0]] * 200, [*LOC, 0], "valid number"),
        (1.0, LOC, "valid list"),
    ],
)
def test_bad_weights_are_refused_naming_the_field(
    client: TestClient, algorithm: str, w: Any, loc: list[str | int], words: str
) -> None:
    r = client.post("/v1/models", json=fit_body(algorithm, {"generator": SEED_BLOBS}, w))
    problem = assert_problem(r, 422, loc)
    assert words in r.text, problem


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_refused(client: TestClient, value: float) -> None:
    """Python's JSON writes NaN and Infinity; the service refuses them by position."""
    w = [1.0] * 200
    w[3] = value
    body = fit_body("kmeans", {"generator": SEED_BLOBS}, w)
    r = client.post(
        "/v1/models",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
    )
    problem = assert_problem(r, 422, [*LOC, 3])
    assert "finite number" in problem["detail"]


@pytest.mark.parametrize("algorithm", ["gaussian_mixture", "bayesian_gaussian_mixture"])
def test_mixtures_refuse_sample_weight(client: TestClient, algorithm: str) -> None:
    body = {
        "algorithm": algorithm,
        "params": {"n_components": 2},
        "data": {"generator": SEED_BLOBS},
        "sample_weight": [1.0] * 200,
    }
    problem = assert_problem(client.post("/v1/models", json=body), 422, LOC)
    assert any(e.get("type") == "extra_forbidden" for e in problem["errors"]), problem


@pytest.fixture
def jobs_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(store_dir=tmp_path / "store", secret_key="k", job_workers=1)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize("algorithm", ESTIMATORS)
def test_a_weighted_job_equals_sklearns(jobs_client: TestClient, algorithm: str) -> None:
    X = seed_X()
    w = weights(len(X), seed=1)
    body = fit_body(algorithm, {"points": X.tolist()}, w, wait=False)
    r = jobs_client.post("/v1/models", json=body)
    assert r.status_code == 202, r.text
    job = wait_for(jobs_client, r.headers["location"], {"succeeded"})
    assert job["request"]["weighted"] is True
    assert "sample_weight" not in job["request"]
    model = jobs_client.get(f"/v1/models/{job['model_id']}").json()
    assert_equals_sklearn(model, algorithm, X, w)


def test_bad_weights_are_refused_before_any_job(jobs_client: TestClient) -> None:
    body = fit_body("kmeans", {"generator": SEED_BLOBS}, [1.0] * 3, wait=False)
    assert_problem(jobs_client.post("/v1/models", json=body), 422, LOC)
    assert jobs_client.get("/v1/jobs").json()["total"] == 0


def test_weights_reach_a_worker_process(tmp_path: Path) -> None:
    """With a fit time limit every fit runs in a worker process: the weights go too."""
    settings = Settings(store_dir=tmp_path / "store", secret_key="k", fit_timeout_seconds=120)
    X = seed_X()
    w = weights(len(X), seed=2)
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/models", json=fit_body("kmeans", {"points": X.tolist()}, w))
        assert r.status_code == 201, r.text
        assert_equals_sklearn(r.json(), "kmeans", X, w)
