"""``/v1/models``: the resource, its per-point arrays, listing, deletion and prediction.

Every number is compared with the same estimator fitted in-process on the same data;
the resource's ``params`` are compared with sklearn's own constructor defaults.
"""

from __future__ import annotations

import inspect
import time
import warnings
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from service.schemas.params import GaussianMixtureParams, KMeansParams

BLOBS: dict[str, Any] = {
    "kind": "blobs",
    "n_samples": 90,
    "n_features": 2,
    "centers": 3,
    "cluster_std": 1.2,
    "random_state": 4,
}
PER_POINT = {"labels", "probabilities", "distances"}
COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def blobs_X() -> np.ndarray:
    X, _ = make_blobs(**{k: v for k, v in BLOBS.items() if k != "kind"})
    return X


def assert_close(actual: Any, expected: Any) -> None:
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), rtol=1e-10
    )


def fit(client: TestClient, algorithm: str, params: dict[str, Any], **extra: Any) -> Any:
    body = {"algorithm": algorithm, "params": params, "data": {"generator": BLOBS}, **extra}
    return client.post("/v1/models", json=body)


def created(client: TestClient, algorithm: str, params: dict[str, Any], **extra: Any) -> Any:
    r = fit(client, algorithm, params, **extra)
    assert r.status_code == 201, r.text
    return r.json()


def sklearn_defaults(estimator: type, names: set[str]) -> dict[str, Any]:
    sig = inspect.signature(estimator)
    return {name: sig.parameters[name].default for name in names}


def assert_problem(r: Any, status: int, loc: list[str | int]) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == status
    assert loc in [e["loc"] for e in problem["errors"]], problem
    return problem


# -- covariances and params -----------------------------------------------------------


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_covariance_types_equal_sklearn(client: TestClient, covariance_type: str) -> None:
    params = {"n_components": 3, "covariance_type": covariance_type, "random_state": 0}
    model = created(client, "gaussian_mixture", params)
    X = blobs_X()
    gm = GaussianMixture(**params).fit(X)
    assert model["covariance_type"] == covariance_type
    assert np.shape(model["covariances"]) == gm.covariances_.shape
    assert np.shape(model["precisions"]) == gm.precisions_.shape
    assert_close(model["covariances"], gm.covariances_)
    assert_close(model["precisions"], gm.precisions_)
    assert_close(model["means"], gm.means_)
    assert_close(model["weights"], gm.weights_)
    assert_close(model["bic"], gm.bic(X))
    assert model["labels"] == gm.predict(X).tolist()


@pytest.mark.parametrize(
    ("algorithm", "schema", "estimator", "params"),
    [
        ("gaussian_mixture", GaussianMixtureParams, GaussianMixture, {}),
        (
            "gaussian_mixture",
            GaussianMixtureParams,
            GaussianMixture,
            {"n_components": 2, "covariance_type": "diag", "tol": 0.01, "random_state": 7},
        ),
        ("kmeans", KMeansParams, KMeans, {"n_clusters": 3}),
        (
            "kmeans",
            KMeansParams,
            KMeans,
            {"n_clusters": 2, "algorithm": "elkan", "n_init": 3, "random_state": 1},
        ),
    ],
)
def test_params_resolve_every_default(
    client: TestClient,
    algorithm: str,
    schema: type,
    estimator: type,
    params: dict[str, Any],
) -> None:
    """A stored model must say how it was fitted, including what the client left out."""
    model = created(client, algorithm, params, include=[])
    names = set(schema.model_fields)
    assert set(model["params"]) == names
    assert model["params"] == {**sklearn_defaults(estimator, names), **params}
    assert client.get(f"/v1/models/{model['id']}").json()["params"] == model["params"]


# -- include --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "params", "include", "expected"),
    [
        ("gaussian_mixture", {"n_components": 2}, None, {"labels", "probabilities"}),
        ("gaussian_mixture", {"n_components": 2}, [], set()),
        ("gaussian_mixture", {"n_components": 2}, ["labels"], {"labels"}),
        ("gaussian_mixture", {"n_components": 2}, ["probabilities"], {"probabilities"}),
        ("kmeans", {"n_clusters": 2}, None, {"labels"}),
        ("kmeans", {"n_clusters": 2}, [], set()),
        ("kmeans", {"n_clusters": 2}, ["distances"], {"distances"}),
        ("kmeans", {"n_clusters": 2}, ["labels", "distances"], {"labels", "distances"}),
    ],
)
def test_include_selects_per_point_arrays(
    client: TestClient,
    algorithm: str,
    params: dict[str, Any],
    include: list[str] | None,
    expected: set[str],
) -> None:
    params = {**params, "random_state": 0}
    extra = {} if include is None else {"include": include}
    model = created(client, algorithm, params, **extra)
    assert PER_POINT & set(model) == expected
    X = blobs_X()
    if algorithm == "kmeans":
        km = KMeans(**params).fit(X)
        if "labels" in expected:
            assert model["labels"] == km.labels_.tolist()
        if "distances" in expected:
            assert_close(model["distances"], km.transform(X))
    else:
        gm = GaussianMixture(**params).fit(X)
        if "labels" in expected:
            assert model["labels"] == gm.predict(X).tolist()
        if "probabilities" in expected:
            assert_close(model["probabilities"], gm.predict_proba(X))


def test_include_probabilities_for_kmeans_is_422(client: TestClient) -> None:
    r = fit(client, "kmeans", {"n_clusters": 2}, include=["labels", "probabilities"])
    assert_problem(r, 422, ["body", "include", 1])
    assert client.get("/v1/models").json()["total"] == 0


def test_include_distances_for_mixture_is_422(client: TestClient) -> None:
    r = fit(client, "gaussian_mixture", {"n_components": 2}, include=["distances"])
    assert_problem(r, 422, ["body", "include", 0])


# -- list, read, delete ---------------------------------------------------------------


def test_list_is_newest_first_paginated_and_without_per_point_arrays(client: TestClient) -> None:
    ids = []
    for k in (1, 2, 3):
        ids.append(created(client, "kmeans", {"n_clusters": k, "random_state": 0})["id"])
        time.sleep(0.002)  # ids order by creation time in milliseconds
    newest_first = ids[::-1]

    everything = client.get("/v1/models").json()
    assert everything["total"] == 3
    assert [m["id"] for m in everything["items"]] == newest_first
    assert everything["next_cursor"] is None
    for item in everything["items"]:
        assert PER_POINT.isdisjoint(item)
        assert item == client.get(f"/v1/models/{item['id']}").json()

    first = client.get("/v1/models", params={"limit": 2}).json()
    assert [m["id"] for m in first["items"]] == newest_first[:2]
    assert first["total"] == 3
    assert first["next_cursor"] is not None
    second = client.get("/v1/models", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [m["id"] for m in second["items"]] == newest_first[2:]
    assert second["next_cursor"] is None


@pytest.mark.parametrize("limit", [0, 1001, -1])
def test_list_limit_out_of_range_is_422(client: TestClient, limit: int) -> None:
    assert_problem(client.get("/v1/models", params={"limit": limit}), 422, ["query", "limit"])


def test_get_one_is_the_created_resource(client: TestClient) -> None:
    model = created(client, "gaussian_mixture", {"n_components": 2, "random_state": 0})
    r = client.get(f"/v1/models/{model['id']}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {k: v for k, v in model.items() if k not in PER_POINT}
    for key in ("id", "name", "algorithm", "params", "created_at", "n_samples", "n_features"):
        assert key in r.json()
    assert r.json()["created_at"].endswith("Z")
    assert r.json()["fit_seconds"] >= 0


def test_delete_then_gone(client: TestClient) -> None:
    model = created(client, "kmeans", {"n_clusters": 2, "random_state": 0})
    url = f"/v1/models/{model['id']}"
    r = client.delete(url)
    assert r.status_code == 204
    assert r.content == b""
    assert client.get(url).status_code == 404
    assert client.delete(url).status_code == 404
    assert client.post(f"{url}/predict", json={"points": [[0, 0]]}).status_code == 404
    assert client.get("/v1/models").json() == {"items": [], "next_cursor": None, "total": 0}


# -- predict ----------------------------------------------------------------------------


def test_predict_wrong_width_names_the_row(client: TestClient) -> None:
    model = created(client, "gaussian_mixture", {"n_components": 2, "random_state": 0})
    r = client.post(
        f"/v1/models/{model['id']}/predict", json={"points": [[0.0, 1.0], [1.0, 2.0, 3.0]]}
    )
    problem = assert_problem(r, 422, ["body", "points", 1])
    assert "2" in problem["detail"]  # the width the model expects
    r = client.post(f"/v1/models/{model['id']}/predict", json={"points": [[0.0]]})
    assert_problem(r, 422, ["body", "points", 0])


def test_kmeans_predict_gives_labels_and_distances(client: TestClient) -> None:
    params = {"n_clusters": 3, "random_state": 0}
    model = created(client, "kmeans", params)
    km = KMeans(**params).fit(blobs_X())
    new = np.random.RandomState(5).uniform(-12, 12, size=(20, 2))
    r = client.post(f"/v1/models/{model['id']}/predict", json={"points": new.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["labels"] == km.predict(new).tolist()
    assert_close(body["distances"], km.transform(new))
    assert body.get("probabilities") is None


# -- warnings and non-finite numbers --------------------------------------------------


def test_convergence_warning_is_reported(client: TestClient) -> None:
    params = {"n_components": 3, "max_iter": 1, "random_state": 0}
    X = blobs_X()
    with pytest.warns(ConvergenceWarning) as record:
        gm = GaussianMixture(**params).fit(X)
    model = created(client, "gaussian_mixture", params, include=[])
    expected = {"category": "ConvergenceWarning", "message": str(record[0].message)}
    assert model["warnings"] == [expected]
    assert model["converged"] is False
    assert model["n_iter"] == gm.n_iter_ == 1
    assert_close(model["means"], gm.means_)
    # The warning is part of the stored resource, not only of the 201.
    assert client.get(f"/v1/models/{model['id']}").json()["warnings"] == [expected]


def test_max_iter_zero_mirrors_sklearn(client: TestClient) -> None:
    """Whatever sklearn does with ``max_iter=0`` is what the service does: a fit with
    a ``-inf`` lower bound (then ``null`` in JSON), or a refusal with sklearn's words."""
    params = {"n_components": 3, "max_iter": 0, "random_state": 0}
    X = blobs_X()
    r = fit(client, "gaussian_mixture", params)
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            gm = GaussianMixture(**params).fit(X)
    except ValueError as exc:
        assert r.status_code == 422, r.text
        assert str(exc) in r.json()["detail"]
        return
    assert r.status_code == 201, r.text
    model = r.json()
    expected_lb = gm.lower_bound_ if np.isfinite(gm.lower_bound_) else None
    assert model["lower_bound"] == expected_lb
    assert model["converged"] is bool(gm.converged_)
    assert model["n_iter"] == gm.n_iter_
    assert_close(model["means"], gm.means_)
    assert_close(model["bic"], gm.bic(X))
    assert model["labels"] == gm.predict(X).tolist()
    assert [w["category"] for w in model["warnings"]] == [w.category.__name__ for w in record]


# -- array parameters ---------------------------------------------------------------------


def _precisions_init(covariance_type: str, k: int, d: int) -> np.ndarray:
    """Valid, distinct precisions of sklearn's shape for ``covariance_type``."""
    scales = np.linspace(0.5, 1.5, k)
    if covariance_type == "full":
        return np.stack([s * np.array([[1.0, 0.2], [0.2, 1.0]]) for s in scales])
    if covariance_type == "tied":
        return np.array([[1.0, 0.1], [0.1, 0.8]])
    if covariance_type == "diag":
        return np.stack([s * np.array([1.0, 0.7]) for s in scales])
    return scales


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_mixture_array_params_equal_sklearn(client: TestClient, covariance_type: str) -> None:
    means_init = np.array([[-5.0, 0.0], [0.0, 5.0], [5.0, -5.0]])
    weights_init = np.array([0.2, 0.3, 0.5])
    precisions_init = _precisions_init(covariance_type, 3, 2)
    params = {
        "n_components": 3,
        "covariance_type": covariance_type,
        "means_init": means_init.tolist(),
        "weights_init": weights_init.tolist(),
        "precisions_init": precisions_init.tolist(),
        "random_state": 0,
    }
    model = created(client, "gaussian_mixture", params)
    X = blobs_X()
    gm = GaussianMixture(
        n_components=3,
        covariance_type=covariance_type,
        means_init=means_init,
        weights_init=weights_init,
        precisions_init=precisions_init,
        random_state=0,
    ).fit(X)
    assert_close(model["means"], gm.means_)
    assert_close(model["weights"], gm.weights_)
    assert_close(model["covariances"], gm.covariances_)
    assert_close(model["precisions"], gm.precisions_)
    assert model["n_iter"] == gm.n_iter_
    assert model["labels"] == gm.predict(X).tolist()
    assert model["params"]["means_init"] == means_init.tolist()
    assert model["params"]["precisions_init"] == precisions_init.tolist()


def test_kmeans_array_init_equals_sklearn(client: TestClient) -> None:
    init = np.array([[-5.0, 0.0], [0.0, 5.0], [5.0, -5.0]])
    model = created(client, "kmeans", {"n_clusters": 3, "init": init.tolist()})
    km = KMeans(n_clusters=3, init=init).fit(blobs_X())
    assert_close(model["means"], km.cluster_centers_)
    assert_close(model["inertia"], km.inertia_)
    assert model["n_iter"] == km.n_iter_
    assert model["labels"] == km.labels_.tolist()
    assert model["params"]["init"] == init.tolist()


@pytest.mark.parametrize(
    ("algorithm", "params", "field"),
    [
        ("gaussian_mixture", {"n_components": 3, "means_init": [[0, 0], [1, 1]]}, "means_init"),
        (
            "gaussian_mixture",
            {"n_components": 2, "means_init": [[0, 0, 0], [1, 1, 1]]},
            "means_init",
        ),
        ("gaussian_mixture", {"n_components": 2, "means_init": [[0, 0], [1]]}, "means_init"),
        ("gaussian_mixture", {"n_components": 2, "weights_init": [0.2, 0.3, 0.5]}, "weights_init"),
        (
            "gaussian_mixture",
            {"n_components": 2, "precisions_init": [[1, 0], [0, 1]]},  # a tied shape
            "precisions_init",
        ),
        (
            "gaussian_mixture",
            {"n_components": 2, "covariance_type": "tied", "precisions_init": [1.0, 2.0]},
            "precisions_init",
        ),
        (
            "gaussian_mixture",
            {"n_components": 2, "covariance_type": "diag", "precisions_init": [[1, 1]]},
            "precisions_init",
        ),
        (
            "gaussian_mixture",
            {"n_components": 2, "covariance_type": "spherical", "precisions_init": [1.0]},
            "precisions_init",
        ),
        ("kmeans", {"n_clusters": 2, "init": [[0, 0], [1, 1], [2, 2]]}, "init"),
        ("kmeans", {"n_clusters": 2, "init": [[0], [1]]}, "init"),
    ],
)
def test_array_params_of_the_wrong_shape_are_422(
    client: TestClient, algorithm: str, params: dict[str, Any], field: str
) -> None:
    problem = assert_problem(fit(client, algorithm, params), 422, ["body", "params", field])
    assert field in problem["detail"]
    assert client.get("/v1/models").json()["total"] == 0


# -- name ---------------------------------------------------------------------------------


def test_name_round_trips(client: TestClient) -> None:
    name = "seed blobs — ü 🙂 / x"
    model = created(client, "kmeans", {"n_clusters": 2, "random_state": 0}, name=name)
    assert model["name"] == name
    assert client.get(f"/v1/models/{model['id']}").json()["name"] == name
    assert client.get("/v1/models").json()["items"][0]["name"] == name
    unnamed = created(client, "kmeans", {"n_clusters": 2, "random_state": 0})
    assert unnamed["name"] is None


@pytest.mark.parametrize("name", ["", "line\nbreak", "x" * 201, 5])
def test_bad_names_are_422(client: TestClient, name: Any) -> None:
    assert_problem(fit(client, "kmeans", {"n_clusters": 2}, name=name), 422, ["body", "name"])
