"""Bad input over HTTP: always a 4xx problem+json that names the place, never a 5xx,
and never a change to the store.

Each case is one request a careless or hostile client could send. The checks are the
contract's: ``type``/``title``/``status``/``detail``, and for validation failures an
``errors`` item whose ``loc`` is the JSON path of the offending value.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from service.config import Settings
from service.main import create_app

Loc = list[str | int]

BLOBS: dict[str, Any] = {
    "kind": "blobs",
    "n_samples": 60,
    "n_features": 2,
    "centers": 3,
    "random_state": 0,
}
JSON = {"content-type": "application/json"}


def assert_problem(r: Any, status: int, loc: Loc | None = None) -> dict[str, Any]:
    """The common shape of every error answer; ``loc`` must be among ``errors``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert {"type", "title", "status", "detail"} <= set(problem)
    assert problem["status"] == status
    assert isinstance(problem["type"], str) and problem["type"]
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["detail"], str) and problem["detail"]
    for item in problem.get("errors") or []:
        assert set(item) == {"loc", "msg", "type"}
        assert item["msg"]
    if loc is not None:
        assert loc in [e["loc"] for e in problem.get("errors") or []], problem
    return problem


def model_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "algorithm": "kmeans",
        "params": {"n_clusters": 2, "random_state": 0},
        "data": {"points": [[0.0, 0.0], [0.0, 1.0], [5.0, 5.0], [5.0, 6.0]]},
    }
    body.update(overrides)
    return body


def gm_body(params: dict[str, Any], points: list[list[float]] | None = None) -> dict[str, Any]:
    data = {"generator": BLOBS} if points is None else {"points": points}
    return {"algorithm": "gaussian_mixture", "params": params, "data": data}


def km_params(**params: Any) -> dict[str, Any]:
    return model_body(params={"n_clusters": 2, **params})


# (method, path, request kwargs, status, loc); "{id}" stands for a stored model's id.
CASES: dict[str, Any] = {
    "invalid-json": (
        "POST",
        "/v1/models",
        {"content": b'{"algorithm": ', "headers": JSON},
        400,
        None,
    ),
    "json-not-an-object": ("POST", "/v1/models", {"json": [1, 2]}, 422, ["body"]),
    "nan-literal": (
        "POST",
        "/v1/models",
        {
            "content": b'{"algorithm":"kmeans","data":{"points":[[NaN, 1]]}}',
            "headers": JSON,
        },
        422,
        ["body", "data", "points", 0, 0],
    ),
    "infinity-literal": (
        "POST",
        "/v1/models",
        {
            "content": b'{"algorithm":"kmeans","data":{"points":[[0, 1], [1, Infinity]]}}',
            "headers": JSON,
        },
        422,
        ["body", "data", "points", 1, 1],
    ),
    "minus-infinity-literal": (
        "POST",
        "/v1/models",
        {
            "content": b'{"algorithm":"kmeans","data":{"points":[[-Infinity, 1]]}}',
            "headers": JSON,
        },
        422,
        ["body", "data", "points", 0, 0],
    ),
    "string-in-points": (
        "POST",
        "/v1/models",
        {"json": model_body(data={"points": [[0, 1], [1, "two"]]})},
        422,
        ["body", "data", "points", 1, 1],
    ),
    "null-in-points": (
        "POST",
        "/v1/models",
        {"json": model_body(data={"points": [[0, None]]})},
        422,
        ["body", "data", "points", 0, 1],
    ),
    "ragged-rows": (
        "POST",
        "/v1/models",
        {"json": model_body(data={"points": [[0, 1], [1, 2], [3]]})},
        422,
        ["body", "data", "points", 2],
    ),
    "empty-points": (
        "POST",
        "/v1/models",
        {"json": model_body(data={"points": []})},
        422,
        ["body", "data", "points"],
    ),
    "rows-of-width-0": (
        "POST",
        "/v1/models",
        {"json": model_body(data={"points": [[], []]})},
        422,
        ["body", "data", "points", 0],
    ),
    "points-and-generator": (
        "POST",
        "/v1/models",
        {"json": model_body(data={"points": [[0, 1]], "generator": BLOBS})},
        422,
        ["body", "data"],
    ),
    "neither-points-nor-generator": (
        "POST",
        "/v1/models",
        {"json": model_body(data={})},
        422,
        ["body", "data"],
    ),
    "no-data": (
        "POST",
        "/v1/models",
        {"json": {"algorithm": "kmeans", "params": {"n_clusters": 2}}},
        422,
        ["body", "data"],
    ),
    "unknown-data-field": (
        "POST",
        "/v1/models",
        {"json": model_body(data={"points": [[0, 1]], "dataset": "x"})},
        422,
        ["body", "data", "dataset"],
    ),
    "unknown-generator-kind": (
        "POST",
        "/v1/models",
        {"json": model_body(data={"generator": {"kind": "spirals"}})},
        422,
        ["body", "data", "generator", "kind"],
    ),
    "unknown-algorithm": (
        "POST",
        "/v1/models",
        {"json": model_body(algorithm="dbscan")},
        422,
        ["body", "algorithm"],
    ),
    "missing-algorithm": (
        "POST",
        "/v1/models",
        {"json": {"data": {"points": [[0, 1]]}}},
        422,
        ["body", "algorithm"],
    ),
    "unknown-top-level-field": (
        "POST",
        "/v1/models",
        {"json": model_body(n_clusters=2)},
        422,
        ["body", "n_clusters"],
    ),
    "unknown-param": (
        "POST",
        "/v1/models",
        {"json": km_params(n_component=2)},
        422,
        ["body", "params", "n_component"],
    ),
    "sklearn-param-not-offered": (
        "POST",
        "/v1/models",
        {"json": gm_body({"warm_start": True})},
        422,
        ["body", "params", "warm_start"],
    ),
    "other-algorithms-param": (
        "POST",
        "/v1/models",
        {"json": gm_body({"n_clusters": 2})},
        422,
        ["body", "params", "n_clusters"],
    ),
    "n_components-0": (
        "POST",
        "/v1/models",
        {"json": gm_body({"n_components": 0})},
        422,
        ["body", "params", "n_components"],
    ),
    "n_components-true": (
        "POST",
        "/v1/models",
        {"json": gm_body({"n_components": True})},
        422,
        ["body", "params", "n_components"],
    ),
    "n_components-string": (
        "POST",
        "/v1/models",
        {"json": gm_body({"n_components": "2"})},
        422,
        ["body", "params", "n_components"],
    ),
    "n_components-2.5": (
        "POST",
        "/v1/models",
        {"json": gm_body({"n_components": 2.5})},
        422,
        ["body", "params", "n_components"],
    ),
    "tol-negative": (
        "POST",
        "/v1/models",
        {"json": gm_body({"tol": -1})},
        422,
        ["body", "params", "tol"],
    ),
    "reg_covar-nan": (
        "POST",
        "/v1/models",
        {
            "content": b'{"algorithm":"gaussian_mixture","params":{"reg_covar":NaN},'
            b'"data":{"points":[[0],[1]]}}',
            "headers": JSON,
        },
        422,
        ["body", "params", "reg_covar"],
    ),
    "covariance_type-bogus": (
        "POST",
        "/v1/models",
        {"json": gm_body({"covariance_type": "bogus"})},
        422,
        ["body", "params", "covariance_type"],
    ),
    "init_params-bogus": (
        "POST",
        "/v1/models",
        {"json": gm_body({"init_params": "bogus"})},
        422,
        ["body", "params", "init_params"],
    ),
    "gm-n_init-2.5": (
        "POST",
        "/v1/models",
        {"json": gm_body({"n_init": 2.5})},
        422,
        ["body", "params", "n_init"],
    ),
    "gm-max_iter-negative": (
        "POST",
        "/v1/models",
        {"json": gm_body({"max_iter": -1})},
        422,
        ["body", "params", "max_iter"],
    ),
    "random_state-negative": (
        "POST",
        "/v1/models",
        {"json": gm_body({"random_state": -1})},
        422,
        ["body", "params", "random_state"],
    ),
    "random_state-too-large": (
        "POST",
        "/v1/models",
        {"json": gm_body({"random_state": 2**32})},
        422,
        ["body", "params", "random_state"],
    ),
    "km-n_clusters-0": (
        "POST",
        "/v1/models",
        {"json": km_params(n_clusters=0)},
        422,
        ["body", "params", "n_clusters"],
    ),
    "km-max_iter-0": (
        "POST",
        "/v1/models",
        {"json": km_params(max_iter=0)},
        422,
        ["body", "params", "max_iter"],
    ),
    "km-algorithm-auto": (
        "POST",
        "/v1/models",
        {"json": km_params(algorithm="auto")},
        422,
        ["body", "params", "algorithm"],
    ),
    "km-n_init-2.5": pytest.param(
        "POST",
        "/v1/models",
        {"json": km_params(n_init=2.5)},
        422,
        ["body", "params", "n_init"],
    ),
    "km-init-bogus": pytest.param(
        "POST",
        "/v1/models",
        {"json": km_params(init="bogus")},
        422,
        ["body", "params", "init"],
    ),
    "fewer-samples-than-components": (
        "POST",
        "/v1/models",
        {"json": gm_body({"n_components": 4}, points=[[0.0], [1.0], [2.0]])},
        422,
        ["body", "params", "n_components"],
    ),
    "fewer-samples-than-clusters": (
        "POST",
        "/v1/models",
        {"json": km_params(n_clusters=5)},
        422,
        ["body", "params", "n_clusters"],
    ),
    "mixture-with-one-sample": (
        "POST",
        "/v1/models",
        {"json": gm_body({"n_components": 1}, points=[[0.0, 1.0]])},
        422,
        ["body", "params", "n_components"],
    ),
    "include-unknown": (
        "POST",
        "/v1/models",
        {"json": model_body(include=["centers"])},
        422,
        ["body", "include", 0],
    ),
    "name-not-a-string": (
        "POST",
        "/v1/models",
        {"json": model_body(name=["a"])},
        422,
        ["body", "name"],
    ),
    "predict-nan": (
        "POST",
        "/v1/models/{id}/predict",
        {"content": b'{"points": [[0, NaN]]}', "headers": JSON},
        422,
        ["body", "points", 0, 1],
    ),
    "predict-empty": (
        "POST",
        "/v1/models/{id}/predict",
        {"json": {"points": []}},
        422,
        ["body", "points"],
    ),
    "predict-ragged": (
        "POST",
        "/v1/models/{id}/predict",
        {"json": {"points": [[0, 0], [1]]}},
        422,
        ["body", "points", 1],
    ),
    "predict-unknown-field": (
        "POST",
        "/v1/models/{id}/predict",
        {"json": {"points": [[0, 0]], "include": ["labels"]}},
        422,
        ["body", "include"],
    ),
    "predict-invalid-json": (
        "POST",
        "/v1/models/{id}/predict",
        {"content": b"[[0, 0]", "headers": JSON},
        400,
        None,
    ),
    "get-unknown-id": ("GET", "/v1/models/" + "0" * 28, {}, 404, None),
    "delete-unknown-id": ("DELETE", "/v1/models/" + "0" * 28, {}, 404, None),
    "predict-unknown-id": (
        "POST",
        "/v1/models/" + "0" * 28 + "/predict",
        {"json": {"points": [[0, 0]]}},
        404,
        None,
    ),
    "get-id-abc": ("GET", "/v1/models/abc", {}, 404, None),
    "get-id-too-long": ("GET", "/v1/models/" + "0" * 29, {}, 404, None),
    "get-id-upper-case": ("GET", "/v1/models/" + "A" * 28, {}, 404, None),
    "get-id-dots": ("GET", "/v1/models/%2E%2E", {}, 404, None),
    "get-id-backslash-traversal": (
        "GET",
        "/v1/models/..%5C..%5Cetc%5Cpasswd",
        {},
        404,
        None,
    ),
    "get-id-nul": ("GET", "/v1/models/" + "0" * 27 + "%00", {}, 404, None),
    # %2F decodes to "/" before routing: the path has more segments than any route.
    "get-id-encoded-traversal": ("GET", "/v1/models/..%2F..%2Fetc%2Fpasswd", {}, 404, None),
    "delete-id-abc": ("DELETE", "/v1/models/abc", {}, 404, None),
    "predict-id-abc": (
        "POST",
        "/v1/models/abc/predict",
        {"json": {"points": [[0, 0]]}},
        404,
        None,
    ),
    "list-bad-cursor": ("GET", "/v1/models?cursor=../x", {}, 422, ["query", "cursor"]),
    "list-limit-not-int": ("GET", "/v1/models?limit=ten", {}, 422, ["query", "limit"]),
    "unknown-route": ("GET", "/v1/nothing-here", {}, 404, None),
    "unknown-subresource": ("GET", "/v1/models/{id}/nothing", {}, 404, None),
    "wrong-method-collection": ("PUT", "/v1/models", {}, 405, None),
    "wrong-method-item": ("POST", "/v1/models/{id}", {"json": {}}, 405, None),
    "wrong-method-predict": ("GET", "/v1/models/{id}/predict", {}, 405, None),
}


@pytest.fixture
def stored(client: TestClient) -> str:
    r = client.post("/v1/models", json=model_body())
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def listing(client: TestClient) -> dict[str, Any]:
    r = client.get("/v1/models")
    assert r.status_code == 200
    return dict(r.json())


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "loc"), CASES.values(), ids=CASES)
def test_bad_request_is_a_problem_and_changes_nothing(
    client: TestClient,
    stored: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    loc: Loc | None,
) -> None:
    before = listing(client)
    r = client.request(method, path.replace("{id}", stored), **kwargs)
    problem = assert_problem(r, status, loc)
    if status == 422 and loc is not None:
        assert problem["errors"], problem
    if status == 405:
        assert r.headers["allow"]
    assert listing(client) == before
    assert client.get(f"/v1/models/{stored}").status_code == 200


def test_invalid_json_is_400_with_a_json_invalid_item(client: TestClient) -> None:
    r = client.post("/v1/models", content=b'{"algorithm": "kmeans",,}', headers=JSON)
    problem = assert_problem(r, 400)
    assert [e["type"] for e in problem["errors"]] == ["json_invalid"]
    assert "JSON" in problem["detail"]


def test_error_detail_names_the_first_place(client: TestClient) -> None:
    """``detail`` alone must let a person find the problem (logs often keep only it)."""
    r = client.post("/v1/models", json=model_body(data={"points": [[0, 1], [1, "x"]]}))
    problem = assert_problem(r, 422, ["body", "data", "points", 1, 1])
    assert "points.1.1" in problem["detail"]


def test_not_found_detail_names_the_id(client: TestClient) -> None:
    missing = "f" * 28
    problem = assert_problem(client.get(f"/v1/models/{missing}"), 404)
    assert missing in problem["detail"]


# -- fits sklearn refuses ---------------------------------------------------------------


def _sklearn_refusal(params: dict[str, Any]) -> str:
    X, _ = make_blobs(**{k: v for k, v in BLOBS.items() if k != "kind"})
    kwargs = {k: np.asarray(v) if isinstance(v, list) else v for k, v in params.items()}
    with pytest.raises(ValueError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GaussianMixture(**kwargs).fit(X)
    return str(info.value)


@pytest.mark.parametrize(
    "params",
    [
        {"n_components": 2, "weights_init": [0.3, 0.3]},
        {"n_components": 2, "weights_init": [1.5, -0.5]},
        {
            "n_components": 2,
            "precisions_init": [[[1.0, 2.0], [2.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]],
        },
        {"n_components": 2, "covariance_type": "diag", "precisions_init": [[1.0, -1.0]] * 2},
        {"n_components": 2, "covariance_type": "spherical", "precisions_init": [1.0, 0.0]},
    ],
    ids=["weights-not-normalized", "weights-negative", "full-not-pd", "diag-neg", "sph-zero"],
)
def test_fit_refused_by_sklearn_is_422_with_sklearns_message(
    client: TestClient, params: dict[str, Any]
) -> None:
    message = _sklearn_refusal(params)
    before = listing(client)
    problem = assert_problem(client.post("/v1/models", json=gm_body(params)), 422)
    assert message in problem["detail"]
    assert listing(client) == before


# -- limits -----------------------------------------------------------------------------

LIMITS = {
    "max_points": 100,
    "max_features": 10,
    "max_values": 150,
    "max_components": 5,
    "max_iter": 50,
    "max_n_init": 5,
    "max_body_bytes": 2000,
}


@pytest.fixture
def small(tmp_path: Path) -> Iterator[TestClient]:
    """An app with tiny limits, so each can be crossed with a small request."""
    settings = Settings(store_dir=tmp_path / "small-store", secret_key="k", **LIMITS)
    with TestClient(create_app(settings)) as c:
        yield c


def small_fit(**overrides: Any) -> dict[str, Any]:
    return model_body(params={"n_clusters": 2, "max_iter": 50, "random_state": 0}, **overrides)


def test_small_app_accepts_requests_within_its_limits(small: TestClient) -> None:
    r = small.post("/v1/models", json=small_fit())
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("body", "loc", "knob"),
    [
        (small_fit(data={"points": [[float(i)] for i in range(101)]}), None, "GMM_MAX_POINTS"),
        (
            small_fit(data={"points": [[float(i), 1.0] for i in range(80)]}),
            None,
            "GMM_MAX_VALUES",
        ),
        (small_fit(data={"points": [[0.0] * 11] * 3}), None, "GMM_MAX_FEATURES"),
        (
            small_fit(data={"generator": {**BLOBS, "n_samples": 10**12}}),
            ["body", "data", "generator"],
            "GMM_MAX_POINTS",
        ),
        (
            small_fit(data={"generator": {**BLOBS, "n_samples": [10**11] * 10}}),
            ["body", "data", "generator"],
            "GMM_MAX_POINTS",
        ),
        (
            small_fit(data={"generator": {**BLOBS, "n_samples": 50, "n_features": 10**9}}),
            ["body", "data", "generator"],
            "GMM_MAX_FEATURES",
        ),
        (
            small_fit(
                data={
                    "generator": {
                        "kind": "gaussian_mixture",
                        "components": [{"mean": [0], "cov": [[1]], "n_samples": 10**12}],
                    }
                }
            ),
            ["body", "data", "generator"],
            "GMM_MAX_POINTS",
        ),
        (
            small_fit(data={"generator": {"kind": "moons", "n_samples": 10**12}}),
            ["body", "data", "generator"],
            "GMM_MAX_POINTS",
        ),
        (
            small_fit(data={"generator": {"kind": "circles", "n_samples": 10**12}}),
            ["body", "data", "generator"],
            "GMM_MAX_POINTS",
        ),
        (
            model_body(params={"n_clusters": 6, "max_iter": 50}),
            ["body", "params", "n_clusters"],
            "GMM_MAX_COMPONENTS",
        ),
        (
            gm_body({"n_components": 6, "max_iter": 50}, points=[[0.0]] * 10),
            ["body", "params", "n_components"],
            "GMM_MAX_COMPONENTS",
        ),
        (
            model_body(params={"n_clusters": 2, "max_iter": 51}),
            ["body", "params", "max_iter"],
            "GMM_MAX_ITER",
        ),
        (
            # sklearn's own default max_iter (100) is above this app's limit.
            gm_body({"n_components": 1}, points=[[0.0]] * 10),
            ["body", "params", "max_iter"],
            "GMM_MAX_ITER",
        ),
        (
            model_body(params={"n_clusters": 2, "max_iter": 50, "n_init": 6}),
            ["body", "params", "n_init"],
            "GMM_MAX_N_INIT",
        ),
    ],
    ids=[
        "points",
        "values",
        "features",
        "blobs-n_samples",
        "blobs-n_samples-list",
        "blobs-n_features",
        "gaussian_mixture-n_samples",
        "moons",
        "circles",
        "n_clusters",
        "n_components",
        "max_iter",
        "default-max_iter",
        "n_init",
    ],
)
def test_limits_answer_413_or_422_naming_the_limit(
    small: TestClient, body: dict[str, Any], loc: Loc | None, knob: str
) -> None:
    """Data past its size limits is a 413; a parameter asking for more work than a
    setting allows (a tiny body) a 422 ``limit-exceeded``. Generators are refused from
    their spec: 10**12 samples would never fit in memory, so an answer at all proves
    nothing was generated."""
    before = listing(small)
    work = knob in ("GMM_MAX_COMPONENTS", "GMM_MAX_ITER", "GMM_MAX_N_INIT")
    problem = assert_problem(small.post("/v1/models", json=body), 422 if work else 413, loc)
    assert problem["type"].endswith("limit-exceeded") == work
    assert knob in problem["detail"]
    assert listing(small) == before


def test_generate_endpoint_refuses_before_generating(small: TestClient) -> None:
    r = small.post("/v1/datasets/generate", json={**BLOBS, "n_samples": 10**12})
    problem = assert_problem(r, 413)
    assert "GMM_MAX_POINTS" in problem["detail"]


def test_predict_over_the_limit_is_413(small: TestClient) -> None:
    model = small.post("/v1/models", json=small_fit()).json()
    r = small.post(f"/v1/models/{model['id']}/predict", json={"points": [[0.0, 0.0]] * 101})
    problem = assert_problem(r, 413)
    assert "GMM_MAX_POINTS" in problem["detail"]


def test_body_over_the_limit_is_413(small: TestClient) -> None:
    body = b'{"algorithm": "kmeans", "name": "' + b"x" * 3000 + b'"}'
    r = small.post("/v1/models", content=body, headers=JSON)
    assert r.request.headers["content-length"] == str(len(body))
    problem = assert_problem(r, 413)
    assert "2000" in problem["detail"]
    assert "GMM_MAX_BODY_BYTES" in problem["detail"]
    assert listing(small)["total"] == 0


def test_chunked_body_over_the_limit_is_413(small: TestClient) -> None:
    """Without Content-Length the limit holds on the stream itself."""

    def chunks() -> Iterator[bytes]:
        yield b'{"algorithm": "kmeans", "data": {"points": ['
        for _ in range(200):
            yield b"[0.0, 1.0],"
        yield b"[0.0, 1.0]]}}"

    r = small.post("/v1/models", content=chunks(), headers=JSON)
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    problem = assert_problem(r, 413)
    assert "GMM_MAX_BODY_BYTES" in problem["detail"]
    assert listing(small)["total"] == 0


def test_chunked_body_within_the_limit_is_fitted(small: TestClient) -> None:
    import json

    payload = json.dumps(small_fit()).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(payload), 16):
            yield payload[i : i + 16]

    r = small.post("/v1/models", content=chunks(), headers=JSON)
    assert "content-length" not in r.request.headers
    assert r.status_code == 201, r.text


def test_initial_values_sklearn_refuses_are_named(client: TestClient) -> None:
    """sklearn's own weights/precisions checks run before the fit, naming the field."""
    base = {"algorithm": "gaussian_mixture", "data": {"generator": BLOBS}}
    cases = {
        "weights_init": {"n_components": 2, "weights_init": [0.2, 0.2]},
        "precisions_init": {
            "n_components": 2,
            "covariance_type": "diag",
            "precisions_init": [[1.0, -1.0], [1.0, 1.0]],
        },
    }
    for field, params in cases.items():
        r = client.post("/v1/models", json={**base, "params": params})
        problem = assert_problem(r, 422, ["body", "params", field])
        assert field in problem["detail"]


# -- an unexpected exception ----------------------------------------------------------


def test_an_unexpected_error_is_a_500_problem_with_every_header(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug answers like every other error: problem+json with the request's id and
    the security headers, and an id to quote that the log line carries (issue 16)."""
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        catalogue = app.state.services.catalogue

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("injected by the test")

        monkeypatch.setattr(catalogue, "list", fail)
        r = c.get("/v1/models", headers={"X-Request-ID": "trace-500"})
        problem = assert_problem(r, 500)
        assert problem["type"] == "urn:gmm-service:problem:internal-error"
        assert problem["instance"].startswith("urn:gmm-service:error:")
        assert "RuntimeError" not in r.text  # the cause is in the log, not the answer
        assert r.headers["x-request-id"] == "trace-500"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert "default-src 'none'" in r.headers["content-security-policy"]
        # The metrics count it under its route, as any answer.
        text = c.get("/metrics").text
        assert 'route="/v1/models",status="500"} 1.0' in text


@pytest.mark.parametrize(
    ("path", "body", "loc", "says"),
    [
        ("/v1/models", {"params": {}, "data": {"points": [[0.0]]}}, ["body", "algorithm"],
         "'algorithm' is required: one of 'gaussian_mixture', 'bayesian_gaussian_mixture', "
         "'kmeans', 'minibatch_kmeans'."),
        ("/v1/models", {"algorithm": "gmm", "params": {}, "data": {"points": [[0.0]]}},
         ["body", "algorithm"], "algorithm 'gmm' is not known: use one of 'gaussian_mixture'"),
        ("/v1/comparisons", {"algorithms": [{"params": {}}], "data": {"points": [[0.0]]}},
         ["body", "algorithms", 0, "algorithm"], "'algorithm' is required: one of"),
        ("/v1/datasets/generate", {"n_samples": 10}, ["body", "kind"],
         "'kind' is required: one of 'blobs', 'gaussian_mixture', 'moons', 'circles'."),
    ],
    ids=["no-algorithm", "unknown-algorithm", "comparison-item", "no-kind"],
)  # fmt: skip
def test_a_missing_or_unknown_discriminator_names_its_values(
    client: TestClient, path: str, body: dict[str, Any], loc: Loc, says: str
) -> None:
    """pydantic says "Unable to extract tag using discriminator 'algorithm'"; a user needs
    to hear that the field is required, and which values it takes."""
    problem = assert_problem(client.post(path, json=body), 422, loc)
    assert says in problem["detail"], problem
