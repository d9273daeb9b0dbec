"""``POST /v1/datasets/generate``: the body is a generator spec, the answer the exact
points and true labels sklearn's (or numpy's) generator gives in-process.

Error locations are JSON paths into *this* body, which is the spec itself: a bad
covariance is ``["body", "components", 0, "cov"]`` here, not under ``data.generator``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn import datasets

from service.config import Settings
from service.main import create_app

URL = "/v1/datasets/generate"


def generated(client: TestClient, spec: dict[str, Any]) -> dict[str, Any]:
    r = client.post(URL, json=spec)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    return body


def assert_same(body: dict[str, Any], X: np.ndarray, y: np.ndarray) -> None:
    np.testing.assert_array_equal(np.asarray(body["points"], dtype=np.float64), X)
    assert body["labels"] == y.tolist()
    assert all(isinstance(label, int) for label in body["labels"])


def assert_problem(r: Any, status: int, loc: list[str | int]) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert {"type", "title", "status", "detail"} <= set(problem)
    assert loc in [e["loc"] for e in problem.get("errors") or []], problem
    return problem


@pytest.mark.parametrize(
    "params",
    [
        {"n_samples": 200, "n_features": 2, "centers": 4, "cluster_std": 1.6, "random_state": 10},
        {"n_samples": [5, 15, 10], "centers": [[0, 0], [4, 4], [-4, 4]], "random_state": 1},
        {
            "n_samples": 30,
            "n_features": 3,
            "cluster_std": [0.5, 2.0],
            "centers": 2,
            "center_box": [-2, 2],
            "shuffle": False,
            "random_state": 2,
        },
    ],
    ids=["seed-notebook", "explicit-centers", "3d-no-shuffle"],
)
def test_blobs(client: TestClient, params: dict[str, Any]) -> None:
    kwargs = dict(params)
    if isinstance(kwargs.get("centers"), list):
        kwargs["centers"] = np.asarray(kwargs["centers"], dtype=np.float64)
    if "center_box" in kwargs:
        kwargs["center_box"] = tuple(kwargs["center_box"])
    body = generated(client, {"kind": "blobs", **params})
    assert_same(body, *datasets.make_blobs(**kwargs))
    assert "warnings" not in body


def test_moons(client: TestClient) -> None:
    params = {"n_samples": 41, "noise": 0.1, "random_state": 3}
    assert_same(generated(client, {"kind": "moons", **params}), *datasets.make_moons(**params))


def test_circles(client: TestClient) -> None:
    params = {"n_samples": 41, "noise": 0.05, "factor": 0.5, "random_state": 4}
    body = generated(client, {"kind": "circles", **params})
    assert_same(body, *datasets.make_circles(**params))


@pytest.mark.parametrize("shuffle", [False, True])
def test_gaussian_mixture(client: TestClient, shuffle: bool) -> None:
    components = [
        {"mean": [0.0, 1.0], "cov": [[1.0, 0.9], [0.9, 2.0]], "n_samples": 25},
        {"mean": [1.0, -2.0], "cov": [[2.0, -1.0], [-1.0, 1.0]], "n_samples": 15},
    ]
    spec = {"kind": "gaussian_mixture", "components": components, "random_state": 5}
    rs = np.random.RandomState(5)
    X = np.concatenate(
        [rs.multivariate_normal(c["mean"], c["cov"], c["n_samples"]) for c in components]
    )
    y = np.repeat([0, 1], [25, 15])
    if shuffle:
        perm = rs.permutation(len(X))
        X, y = X[perm], y[perm]
    assert_same(generated(client, {**spec, "shuffle": shuffle}), X, y)


def test_same_spec_same_points(client: TestClient) -> None:
    spec = {"kind": "blobs", "n_samples": 20, "random_state": 6}
    assert generated(client, spec) == generated(client, spec)


def test_generating_stores_nothing(client: TestClient) -> None:
    generated(client, {"kind": "moons", "random_state": 0})
    assert client.get("/v1/models").json()["total"] == 0


@pytest.mark.parametrize(
    ("spec", "loc"),
    [
        ({"kind": "spirals"}, ["body", "kind"]),
        ({"n_samples": 3}, ["body", "kind"]),
        ({"generator": {"kind": "blobs"}}, ["body", "kind"]),
        ({"kind": "blobs", "foo": 1}, ["body", "foo"]),
        ({"kind": "blobs", "n_features": 0}, ["body", "n_features"]),
        ({"kind": "blobs", "random_state": -1}, ["body", "random_state"]),
        ({"kind": "moons", "noise": -1}, ["body", "noise"]),
        ({"kind": "circles", "factor": 1}, ["body", "factor"]),
        ({"kind": "gaussian_mixture", "components": []}, ["body", "components"]),
        (
            {
                "kind": "gaussian_mixture",
                "components": [{"mean": [0], "cov": [[1]], "n_samples": -1}],
            },
            ["body", "components", 0, "n_samples"],
        ),
        (
            {
                "kind": "gaussian_mixture",
                "components": [
                    {"mean": [0, 0], "cov": [[1, 0], [0, 1]], "n_samples": 3},
                    {"mean": [0], "cov": [[1]], "n_samples": 3},
                ],
            },
            ["body", "components", 1, "mean"],
        ),
        (
            {
                "kind": "gaussian_mixture",
                "components": [{"mean": [0, 1], "cov": [[1, 2], [0.7, 2]], "n_samples": 3}],
            },
            ["body", "components", 0, "cov"],
        ),
        ({"kind": "blobs", "n_samples": [3, 4], "centers": 3}, ["body"]),
    ],
    ids=[
        "unknown-kind",
        "no-kind",
        "wrapped-in-generator",
        "unknown-field",
        "n_features-0",
        "negative-seed",
        "negative-noise",
        "factor-1",
        "no-components",
        "negative-n_samples",
        "mean-width",
        "not-psd",
        "make_blobs-refuses",
    ],
)
def test_bad_specs_name_the_place_in_this_body(
    client: TestClient, spec: dict[str, Any], loc: list[str | int]
) -> None:
    assert_problem(client.post(URL, json=spec), 422, loc)


def test_nan_literal_is_refused(client: TestClient) -> None:
    r = client.post(
        URL,
        content=b'{"kind": "blobs", "center_box": [NaN, 1]}',
        headers={"content-type": "application/json"},
    )
    assert_problem(r, 422, ["body", "center_box", 0])


@pytest.fixture
def small(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(store_dir=tmp_path / "store", secret_key="k", max_points=50)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "blobs", "n_samples": 10**12},
        {"kind": "blobs", "n_samples": [30, 30]},
        {"kind": "moons", "n_samples": 51},
        {
            "kind": "gaussian_mixture",
            "components": [{"mean": [0], "cov": [[1]], "n_samples": 10**12}],
        },
    ],
)
def test_over_the_limit_is_413_from_the_spec(small: TestClient, spec: dict[str, Any]) -> None:
    problem = assert_problem(small.post(URL, json=spec), 413, ["body"])
    assert "GMM_MAX_POINTS" in problem["detail"]
    assert generated(small, {"kind": "moons", "n_samples": 50})["labels"]


def test_a_dataset_with_a_ttl_is_deleted_when_it_expires(tmp_path: Path) -> None:
    """JSON bodies carry ``ttl_seconds``, .npy and CSV uploads the query parameter; a
    model fitted on the dataset keeps working after the dataset is gone."""
    import io
    import time

    import numpy as np

    settings = Settings(store_dir=tmp_path / "store", secret_key="k", sweep_interval_seconds=0.1)
    points = [[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]]
    with TestClient(create_app(settings)) as client:
        doomed = client.post("/v1/datasets", json={"points": points, "ttl_seconds": 1}).json()
        assert doomed["expires_at"] > doomed["created_at"]
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(points) + 1.0)
        uploaded = client.post(
            "/v1/datasets",
            params={"ttl_seconds": 1},
            content=buffer.getvalue(),
            headers={"Content-Type": "application/x-npy"},
        ).json()
        kept = client.post("/v1/datasets", json={"points": [[1.0, 2.0], [3.0, 4.0]]}).json()
        assert kept["expires_at"] is None and uploaded["expires_at"] is not None
        fit = {
            "algorithm": "kmeans",
            "params": {"n_clusters": 2, "n_init": 1},
            "data": {"dataset_id": doomed["id"]},
        }
        model = client.post("/v1/models", json=fit).json()
        deadline = time.monotonic() + 20
        while any(
            client.get(f"/v1/datasets/{d['id']}").status_code != 404 for d in (doomed, uploaded)
        ):
            assert time.monotonic() < deadline, "the expired datasets were never deleted"
            time.sleep(0.05)
        assert client.get(f"/v1/datasets/{kept['id']}").status_code == 200
        predicted = client.post(f"/v1/models/{model['id']}/predict", json={"points": points})
        assert predicted.status_code == 200
        assert (
            client.get(f"/v1/models/{model['id']}/plot", params={"format": "svg"}).status_code
            == 200
        )


def test_a_dataset_a_fit_stored_from_its_points_goes_with_its_last_model(
    client: TestClient,
) -> None:
    """Every fit stores its points as a dataset (the model's ``dataset_id``); when they
    came in the body, nobody uploaded them, and they go once nothing refers to them,
    unless someone uploads the same array meanwhile."""
    points = [[float(i % 4), float(i % 7)] for i in range(30)]
    fit = {"algorithm": "kmeans", "params": {"n_clusters": 2, "n_init": 1}, "include": []}
    first = client.post("/v1/models", json={**fit, "data": {"points": points}}).json()
    queued = client.post("/v1/models", json={**fit, "data": {"points": points}, "wait": False})
    assert queued.status_code == 202, queued.text
    job = queued.json()
    for _ in range(400):
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", job
    dataset_id = first["dataset_id"]
    assert client.get(f"/v1/models/{job['model_id']}").json()["dataset_id"] == dataset_id
    assert client.get(f"/v1/datasets/{dataset_id}").status_code == 200
    assert client.delete(f"/v1/models/{first['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{dataset_id}").status_code == 200  # the second refers
    assert client.delete(f"/v1/models/{job['model_id']}").status_code == 204
    assert client.get(f"/v1/datasets/{dataset_id}").status_code == 404
    # The same points uploaded are the uploader's: they stay after the model goes.
    again = client.post("/v1/models", json={**fit, "data": {"points": points}}).json()
    uploaded = client.post("/v1/datasets", json={"points": points})
    assert uploaded.json()["id"] == again["dataset_id"] == dataset_id
    assert client.delete(f"/v1/models/{again['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{dataset_id}").status_code == 200
