"""A model's size is bounded before it is fitted (GMM_MAX_MODEL_PARAMETERS), and a list
of models never carries the arrays that grow as n_components x n_features^2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app


@pytest.fixture
def small(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(store_dir=tmp_path / "store", secret_key="k", max_model_parameters=100)
    with TestClient(create_app(settings)) as client:
        yield client


def _points(n: int, d: int) -> list[list[float]]:
    return np.random.default_rng(0).normal(size=(n, d)).tolist()


def _fit(client: TestClient, covariance_type: str, d: int = 10) -> Any:
    body = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 2, "covariance_type": covariance_type, "random_state": 0},
        "data": {"points": _points(20, d)},
    }
    return client.post("/v1/models", json=body)


def test_a_model_too_large_is_refused_before_it_is_fitted(small: TestClient) -> None:
    r = _fit(small, "full")  # 2 + 2*10 + 2*10*10 = 222 numbers
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["errors"][0]["loc"] == ["body", "params", "n_components"]
    assert "GMM_MAX_MODEL_PARAMETERS" in problem["detail"] and "222" in problem["detail"]
    assert _fit(small, "diag").status_code == 201  # 2 + 20 + 20 = 42
    assert small.get("/v1/models").json()["total"] == 1


def test_the_reviewers_request_is_refused_at_the_default_limit(client: TestClient) -> None:
    """k=16, d=1000 full: 16 million numbers, a gigabyte stored. Refused without a fit."""
    body = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 16},
        "data": {"generator": {"kind": "blobs", "n_samples": 32, "n_features": 1000}},
    }
    r = client.post("/v1/models", json=body)
    assert r.status_code == 422, r.text
    assert "GMM_MAX_MODEL_PARAMETERS" in r.json()["detail"]
    assert client.get("/v1/models").json()["total"] == 0


def test_model_selection_cells_are_bounded_too(small: TestClient) -> None:
    body = {
        "data": {"points": _points(20, 10)},
        "grid": {"n_components": [1, 2], "covariance_type": ["diag", "full"]},
    }
    r = small.post("/v1/model-selection", json=body)
    assert r.status_code == 422, r.text
    assert "GMM_MAX_MODEL_PARAMETERS" in r.json()["detail"]


def test_a_listing_leaves_out_the_large_arrays_and_get_has_them(client: TestClient) -> None:
    model = _fit(client, "full").json()
    [item] = client.get("/v1/models").json()["items"]
    for key in ("covariances", "precisions", "lower_bounds"):
        assert key not in item and key in model
    assert item["means"] == model["means"] and item["weights"] == model["weights"]
    got = client.get(f"/v1/models/{model['id']}").json()
    assert got["covariances"] == model["covariances"]
    assert got["lower_bounds"] == model["lower_bounds"]


@pytest.mark.parametrize("algorithm", ["gaussian_mixture", "bayesian_gaussian_mixture"])
def test_large_arrays_stay_out_of_the_catalogue_row(tmp_path: Path, algorithm: str) -> None:
    """Past ``ROW_ARRAYS_MAX_BYTES`` the row holds the summary only, whatever the model's
    size; GET, PATCH and a new worker (no cache) answer the arrays from the artifact, as
    sklearn has them. A small model's row holds them all (GET reads no artifact)."""
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    from service.domain.catalogue.service import ROW_ARRAYS_MAX_BYTES
    from tests.helpers_store import read_row

    points = _points(200, 40)  # 4 x 40 x 40 covariances, twice: ~250 KB of JSON
    params = {"n_components": 4, "covariance_type": "full", "random_state": 0}
    settings = Settings(store_dir=tmp_path / "store", secret_key="k")
    with TestClient(create_app(settings)) as client:
        body = {"algorithm": algorithm, "params": params, "data": {"points": points}}
        made = client.post("/v1/models", json={**body, "include": []}).json()
        small = client.post("/v1/models", json={**body, "data": {"points": _points(20, 2)}})
        rows = [read_row(tmp_path / "store", "model", m["id"]) for m in (made, small.json())]
        patched = client.patch(f"/v1/models/{made['id']}", json={"name": "big"}).json()
    large = {"covariances", "precisions", "lower_bounds"}
    assert not large & set(json.loads(rows[0])["resource"])
    assert len(rows[0]) < ROW_ARRAYS_MAX_BYTES  # a Bayesian prior's 40 x 40 stays
    assert large <= set(json.loads(rows[1])["resource"])
    with TestClient(create_app(settings)) as fresh:
        got = fresh.get(f"/v1/models/{made['id']}").json()
    Estimator = GaussianMixture if algorithm == "gaussian_mixture" else BayesianGaussianMixture
    est = Estimator(**params).fit(np.asarray(points))
    for resource in (made, patched, got):
        np.testing.assert_array_equal(resource["covariances"], est.covariances_)
        np.testing.assert_array_equal(resource["precisions"], est.precisions_)
        assert len(resource["lower_bounds"]) == est.n_iter_
    assert patched["name"] == got["name"] == "big"
    assert {k: v for k, v in got.items() if k != "name"} == {
        k: v for k, v in made.items() if k != "name"
    }


def test_past_the_store_quota_writes_are_507_and_reads_go_on(tmp_path: Path) -> None:
    settings = Settings(store_dir=tmp_path / "store", secret_key="k", store_max_bytes=14_000)
    X = _points(100, 3)  # 2,400 bytes as a dataset
    with TestClient(create_app(settings)) as client:
        body = {"algorithm": "kmeans", "params": {"n_clusters": 2}, "data": {"points": X}}
        model = client.post("/v1/models", json=body)
        assert model.status_code == 201, model.text
        other = {**body, "data": {"points": _points(300, 3)}}  # 7,200 bytes, and its model
        r = client.post("/v1/models", json=other)
        assert r.status_code == 507, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "GMM_STORE_MAX_BYTES" in r.json()["detail"]
        url = f"/v1/models/{model.json()['id']}"
        assert client.post(f"{url}/predict", json={"points": X[:2]}).status_code == 200
        assert client.get("/v1/models").json()["total"] == 1
        # Deleting frees the space (the quota's sum is at most a second old): the
        # model, and the dataset its fit stored from the body's points with it.
        assert client.delete(url).status_code == 204
        assert client.get(f"/v1/datasets/{model.json()['dataset_id']}").status_code == 404
        import time

        time.sleep(1.1)
        assert client.post("/v1/models", json=other).status_code == 201
