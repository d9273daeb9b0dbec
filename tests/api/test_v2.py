"""``/v2``: the Open Inference Protocol over TestClient, with plain JSON bodies.

Every number is compared with the same estimator fitted in-process on the same data:
labels with ``predict`` exactly, probabilities with ``predict_proba`` and distances
with ``transform`` to 1e-12. Errors are the protocol's ``{"error": ...}``, 400 for
anything wrong with the request, never a 500.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from service.api.v2 import routes as v2
from service.config import Settings
from service.main import create_app

BLOBS: dict[str, Any] = {
    "kind": "blobs",
    "n_samples": 120,
    "n_features": 3,
    "centers": 3,
    "cluster_std": 1.5,
    "random_state": 7,
}
COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
HEADER = "Inference-Header-Content-Length"


def blobs_X() -> np.ndarray:
    X, _ = make_blobs(**{k: v for k, v in BLOBS.items() if k != "kind"})
    return X


def new_points(n: int = 25, seed: int = 1) -> np.ndarray:
    """Points the models were not fitted on, spread beyond the training data."""
    return np.random.default_rng(seed).normal(0.0, 6.0, size=(n, BLOBS["n_features"]))


def fit(client: TestClient, algorithm: str, params: dict[str, Any], name: str | None = None) -> str:
    body = {"algorithm": algorithm, "params": params, "data": {"generator": BLOBS}, "include": []}
    if name is not None:
        body["name"] = name
    response = client.post("/v1/models", json=body)
    assert response.status_code == 201, response.text
    model_id: str = response.json()["id"]
    return model_id


def infer_body(X: np.ndarray, datatype: str = "FP64", **extra: Any) -> dict[str, Any]:
    tensor = {"name": "points", "shape": list(X.shape), "datatype": datatype}
    return {"inputs": [{**tensor, "data": X.reshape(-1).tolist()}], **extra}


def outputs_of(response: Any) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert HEADER.lower() not in response.headers
    found = {}
    for output in response.json()["outputs"]:
        dtype = np.int64 if output["datatype"] == "INT64" else np.float64
        found[output["name"]] = np.asarray(output["data"], dtype=dtype).reshape(output["shape"])
    return found


def assert_error(response: Any, status: int, *words: str) -> str:
    """The protocol's error form: JSON ``{"error": message}``, the message naming ``words``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"], body
    for word in words:
        assert word in body["error"], body
    message: str = body["error"]
    return message


@pytest.fixture
def mixture(client: TestClient) -> str:
    return fit(client, "gaussian_mixture", {"n_components": 3, "random_state": 0}, "blobs")


# -- server ---------------------------------------------------------------------------
def test_health_and_server_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "gmm-service"
    assert meta["extensions"] == ["binary_tensor_data"]
    assert meta["version"] == client.get("/openapi.json").json()["info"]["version"]


def test_health_and_metadata_are_open_but_models_need_the_key(tmp_path: Any) -> None:
    settings = Settings(store_dir=tmp_path / "store", secret_key="k", api_keys="sekrit")
    with TestClient(create_app(settings)) as client:
        for path in ("/v2/health/live", "/v2/health/ready", "/v2"):
            assert client.get(path).status_code == 200, path
        assert_error(client.get("/v2/models/anything"), 401, "API key")
        assert_error(client.post("/v2/models/anything/infer", json={}), 401)
        keyed = client.get("/v2/models/anything", headers={"X-API-Key": "sekrit"})
        assert_error(keyed, 404, "anything")


# -- model metadata and readiness -------------------------------------------------------
def test_model_metadata_of_a_mixture_and_of_kmeans(client: TestClient, mixture: str) -> None:
    meta = client.get(f"/v2/models/{mixture}").json()
    assert meta == {
        "name": mixture,
        "versions": [mixture],
        "platform": "sklearn",
        "inputs": [{"name": "points", "datatype": "FP64", "shape": [-1, 3]}],
        "outputs": [
            {"name": "labels", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
        ],
    }
    km = fit(client, "kmeans", {"n_clusters": 4, "n_init": 2, "random_state": 0})
    outputs = client.get(f"/v2/models/{km}").json()["outputs"]
    assert outputs[1] == {"name": "distances", "datatype": "FP64", "shape": [-1, 4]}


def test_model_ready_and_versions(client: TestClient, mixture: str) -> None:
    assert client.get(f"/v2/models/{mixture}/ready").json() == {"name": mixture, "ready": True}
    assert client.get("/v2/models/blobs/ready").json() == {"name": "blobs", "ready": True}
    for version in ("1", mixture):
        assert client.get(f"/v2/models/blobs/versions/{version}/ready").status_code == 200
        assert client.get(f"/v2/models/blobs/versions/{version}").json()["versions"] == [mixture]
    assert_error(client.get("/v2/models/blobs/versions/2"), 404, "version '2'")
    assert_error(client.get("/v2/models/blobs/versions/2/ready"), 404)
    assert_error(client.get("/v2/models/nothing/ready"), 404, "'nothing'")


def test_unknown_model_is_404_everywhere(client: TestClient) -> None:
    unknown = "0" * 28
    assert_error(client.get(f"/v2/models/{unknown}"), 404, unknown)
    assert_error(client.post(f"/v2/models/{unknown}/infer", json=infer_body(new_points())), 404)
    assert_error(client.post("/v2/models/no-such-name/infer", json={}), 404, "no-such-name")
    assert_error(client.get("/v2/no/such/route"), 404)


def test_deleted_model_is_404(client: TestClient, mixture: str) -> None:
    body = infer_body(new_points())
    assert client.post(f"/v2/models/{mixture}/infer", json=body).status_code == 200
    assert client.delete(f"/v1/models/{mixture}").status_code == 204
    assert_error(client.post(f"/v2/models/{mixture}/infer", json=body), 404)
    assert_error(client.get("/v2/models/blobs"), 404, "blobs")


# -- infer equals sklearn ---------------------------------------------------------------
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_gaussian_mixture_infer_equals_sklearn(client: TestClient, covariance_type: str) -> None:
    params = {"n_components": 3, "covariance_type": covariance_type, "random_state": 0}
    model_id = fit(client, "gaussian_mixture", params)
    gm = GaussianMixture(**params).fit(blobs_X())
    X = new_points()
    out = outputs_of(client.post(f"/v2/models/{model_id}/infer", json=infer_body(X)))
    assert set(out) == {"labels", "probabilities"}
    np.testing.assert_array_equal(out["labels"], gm.predict(X))
    np.testing.assert_allclose(out["probabilities"], gm.predict_proba(X), rtol=1e-12, atol=1e-300)


def test_bayesian_gaussian_mixture_infer_equals_sklearn(client: TestClient) -> None:
    params = {"n_components": 4, "random_state": 0}
    model_id = fit(client, "bayesian_gaussian_mixture", params)
    bgm = BayesianGaussianMixture(**params).fit(blobs_X())
    X = new_points()
    out = outputs_of(client.post(f"/v2/models/{model_id}/infer", json=infer_body(X)))
    np.testing.assert_array_equal(out["labels"], bgm.predict(X))
    np.testing.assert_allclose(out["probabilities"], bgm.predict_proba(X), rtol=1e-12, atol=1e-300)


def test_kmeans_infer_equals_sklearn(client: TestClient) -> None:
    params = {"n_clusters": 3, "n_init": 2, "random_state": 0}
    model_id = fit(client, "kmeans", params)
    km = KMeans(**params).fit(blobs_X())
    X = new_points()
    out = outputs_of(client.post(f"/v2/models/{model_id}/infer", json=infer_body(X)))
    assert set(out) == {"labels", "distances"}
    np.testing.assert_array_equal(out["labels"], km.predict(X))
    np.testing.assert_allclose(out["distances"], km.transform(X), rtol=1e-12)


def test_infer_equals_v1_predict(client: TestClient, mixture: str) -> None:
    X = new_points()
    v1 = client.post(f"/v1/models/{mixture}/predict", json={"points": X.tolist()}).json()
    out = outputs_of(client.post(f"/v2/models/{mixture}/infer", json=infer_body(X)))
    assert out["labels"].tolist() == v1["labels"]
    assert out["probabilities"].tolist() == v1["probabilities"]


def test_by_name_the_newest_model_answers(client: TestClient) -> None:
    older = fit(client, "gaussian_mixture", {"n_components": 2, "random_state": 0}, "shared")
    fit(client, "kmeans", {"n_clusters": 2, "n_init": 1, "random_state": 0}, "other")
    newer = fit(client, "gaussian_mixture", {"n_components": 3, "random_state": 0}, "shared")
    X = new_points()
    response = client.post("/v2/models/shared/infer", json=infer_body(X))
    out = outputs_of(response)
    assert response.json()["model_name"] == "shared"
    assert response.json()["model_version"] == newer
    gm = GaussianMixture(n_components=3, random_state=0).fit(blobs_X())
    np.testing.assert_array_equal(out["labels"], gm.predict(X))
    assert client.get("/v2/models/shared").json()["versions"] == [newer]
    # The older one stays reachable by id; and once the newer is gone, by name too.
    assert client.post(f"/v2/models/{older}/infer", json=infer_body(X)).status_code == 200
    assert client.delete(f"/v1/models/{newer}").status_code == 204
    again = client.post("/v2/models/shared/infer", json=infer_body(X))
    assert again.json()["model_version"] == older


def test_versions_path_infers_too(client: TestClient, mixture: str) -> None:
    X = new_points(4)
    expected = outputs_of(client.post(f"/v2/models/{mixture}/infer", json=infer_body(X)))
    for version in ("1", mixture):
        url = f"/v2/models/blobs/versions/{version}/infer"
        out = outputs_of(client.post(url, json=infer_body(X)))
        assert out["labels"].tolist() == expected["labels"].tolist()
    assert_error(client.post("/v2/models/blobs/versions/7/infer", json=infer_body(X)), 404)


def test_each_versioned_path_is_served_by_its_unversioned_endpoint() -> None:
    """``/{model}/versions/{version}/...`` is ``/{model}/...`` with a version to check:
    one function serves both, so the two cannot drift apart."""
    served = {
        (route.path, method): route.endpoint
        for route in v2.router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    versioned = [key for key in served if "/versions/{version}" in key[0]]
    assert len(versioned) == 3, sorted(served)  # metadata, ready, infer
    for path, method in versioned:
        plain = path.replace("/versions/{version}", "")
        assert served[(path, method)] is served[(plain, method)], (method, path)


def test_nested_data_and_request_id(client: TestClient, mixture: str) -> None:
    X = new_points(5)
    body = {
        "id": "req-42",
        "inputs": [{"name": "points", "shape": [5, 3], "datatype": "FP64", "data": X.tolist()}],
    }
    response = client.post(f"/v2/models/{mixture}/infer", json=body)
    flat = outputs_of(client.post(f"/v2/models/{mixture}/infer", json=infer_body(X)))
    assert response.json()["id"] == "req-42"
    assert response.json()["model_name"] == mixture
    out = outputs_of(response)
    assert out["probabilities"].tolist() == flat["probabilities"].tolist()
    assert "id" not in client.post(f"/v2/models/{mixture}/infer", json=infer_body(X)).json()


def test_fp32_and_integer_inputs_are_read_as_their_datatype(
    client: TestClient, mixture: str
) -> None:
    gm = GaussianMixture(n_components=3, random_state=0).fit(blobs_X())
    X = new_points(10)
    out = outputs_of(client.post(f"/v2/models/{mixture}/infer", json=infer_body(X, "FP32")))
    X32 = X.astype(np.float32).astype(np.float64)  # what an FP32 tensor holds
    np.testing.assert_array_equal(out["labels"], gm.predict(X32))
    np.testing.assert_allclose(out["probabilities"], gm.predict_proba(X32), rtol=1e-12)
    Xi = np.round(X).astype(np.int64)
    for datatype in ("INT64", "INT32", "INT16", "INT8"):
        out = outputs_of(client.post(f"/v2/models/{mixture}/infer", json=infer_body(Xi, datatype)))
        np.testing.assert_array_equal(out["labels"], gm.predict(Xi.astype(np.float64)))


def test_outputs_as_asked_in_order(client: TestClient, mixture: str) -> None:
    X = new_points(3)
    body = infer_body(X, outputs=[{"name": "probabilities"}])
    response = client.post(f"/v2/models/{mixture}/infer", json=body)
    assert [o["name"] for o in response.json()["outputs"]] == ["probabilities"]
    body = infer_body(X, outputs=[{"name": "probabilities"}, {"name": "labels"}])
    response = client.post(f"/v2/models/{mixture}/infer", json=body)
    assert [o["name"] for o in response.json()["outputs"]] == ["probabilities", "labels"]
    assert response.json()["outputs"][0]["shape"] == [3, 3]
    assert response.json()["outputs"][1]["shape"] == [3]


def test_binary_outputs_with_a_json_request(client: TestClient, mixture: str) -> None:
    """``binary_data: true`` on one output, or ``binary_data_output`` for all."""
    gm = GaussianMixture(n_components=3, random_state=0).fit(blobs_X())
    X = new_points(6)
    body = infer_body(
        X,
        outputs=[
            {"name": "labels"},
            {"name": "probabilities", "parameters": {"binary_data": True}},
        ],
    )
    response = client.post(f"/v2/models/{mixture}/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    size = int(response.headers[HEADER])
    header = json.loads(response.content[:size])
    labels, probabilities = header["outputs"]
    assert labels["data"] == gm.predict(X).tolist()
    assert probabilities["parameters"] == {"binary_data_size": 6 * 3 * 8}
    assert "data" not in probabilities
    raw = np.frombuffer(response.content[size:], dtype="<f8").reshape(6, 3)
    np.testing.assert_allclose(raw, gm.predict_proba(X), rtol=1e-12, atol=1e-300)

    body = infer_body(X, parameters={"binary_data_output": True})
    response = client.post(f"/v2/models/{mixture}/infer", json=body)
    size = int(response.headers[HEADER])
    header = json.loads(response.content[:size])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [6 * 8, 6 * 3 * 8]
    labels_raw = np.frombuffer(response.content[size : size + 48], dtype="<i8")
    assert labels_raw.tolist() == gm.predict(X).tolist()


def test_binary_inputs_are_read_after_the_json_header(client: TestClient, mixture: str) -> None:
    gm = GaussianMixture(n_components=3, random_state=0).fit(blobs_X())
    X = new_points(7)
    for datatype, dtype in (("FP64", "<f8"), ("FP32", "<f4")):
        raw = X.astype(dtype).tobytes()
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "points",
                        "shape": [7, 3],
                        "datatype": datatype,
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ]
            }
        ).encode()
        response = client.post(
            f"/v2/models/{mixture}/infer",
            content=header + raw,
            headers={"Content-Type": "application/octet-stream", HEADER: str(len(header))},
        )
        out = outputs_of(response)
        Xd = X.astype(dtype).astype(np.float64)
        np.testing.assert_array_equal(out["labels"], gm.predict(Xd))
        np.testing.assert_allclose(out["probabilities"], gm.predict_proba(Xd), rtol=1e-12)


def test_no_content_type_is_json(client: TestClient, mixture: str) -> None:
    """tritonclient sends no Content-Type at all."""
    body = json.dumps(infer_body(new_points(2))).encode()
    response = client.post(f"/v2/models/{mixture}/infer", content=body)
    assert response.status_code == 200, response.text


# -- errors -------------------------------------------------------------------------------
def _bad(client: TestClient, model: str, body: Any, **headers: str) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(
        f"/v2/models/{model}/infer",
        content=content,
        headers={"Content-Type": "application/json", **headers},
    )


def _points(**tensor: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "points", "shape": [1, 3], "datatype": "FP64", **tensor}]}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{", ["not valid JSON"]),
        (b"", ["empty"]),
        (b"[1, 2]", ["JSON object"]),
        ({}, ["inputs"]),
        ({"inputs": []}, ["inputs", "points"]),
        ({"inputs": "points"}, ["inputs"]),
        ({"inputs": [1]}, ["inputs[0]"]),
        (
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
            ["inputs[0].name", "'x'"],
        ),
        (
            {"inputs": [{"shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
            ["inputs[0].name"],
        ),
        (
            _points(data=[1, 2, 3]) | {"inputs": _points(data=[1, 2, 3])["inputs"] * 2},
            ["inputs[1]", "twice"],
        ),
        (_points(datatype="BYTES", data=[1, 2, 3]), ["inputs[0].datatype", "BYTES"]),
        (_points(datatype="BOOL", data=[1, 2, 3]), ["inputs[0].datatype", "BOOL"]),
        (_points(datatype=None, data=[1, 2, 3]), ["inputs[0].datatype"]),
        (_points(datatype={}, data=[1, 2, 3]), ["inputs[0].datatype"]),  # unhashable: no 500
        (_points(datatype=["FP64"], data=[1, 2, 3]), ["inputs[0].datatype"]),
        ({"outputs": [{"name": {}}], **_points(data=[1, 2, 3])}, ["outputs[0].name"]),
        ({"inputs": [{"name": {}, "shape": [1, 3]}]}, ["inputs[0].name"]),
        (_points(shape=[3], data=[1, 2, 3]), ["inputs[0].shape", "[n_points, n_features]"]),
        (_points(shape=[1, 2], data=[1, 2]), ["inputs[0].shape", "3 features"]),
        (_points(shape=[0, 3], data=[]), ["inputs[0].shape", "at least 1"]),
        (_points(shape=[1, "3"], data=[1, 2, 3]), ["inputs[0].shape", "integers"]),
        (_points(shape=[1, 3.0], data=[1, 2, 3]), ["inputs[0].shape", "integers"]),
        (_points(shape=[2, 3], data=[1, 2, 3]), ["inputs[0].data", "3 values", "needs 6"]),
        (_points(data=[1, 2, 3, 4]), ["inputs[0].data", "4 values"]),
        (_points(data=[[1, 2], [3]]), ["inputs[0].data", "ragged"]),
        (_points(data=[[1], [2], [3]]), ["inputs[0].data", "nested as [3, 1]"]),
        (_points(data=[1, "2", 3]), ["inputs[0].data", "numbers only"]),
        (_points(data=[1, None, 3]), ["inputs[0].data", "numbers only"]),
        (_points(data=[1, True, 3]), ["inputs[0].data", "numbers only"]),
        (_points(data=[True, False, True]), ["inputs[0].data", "numbers only"]),
        (_points(data={"a": 1}), ["inputs[0].data", "array"]),
        (_points(), ["inputs[0]", "no data"]),
        (_points(datatype="INT32", data=[1, 2.5, 3]), ["inputs[0].data", "integers", "INT32"]),
        (_points(datatype="UINT8", data=[1, -2, 3]), ["inputs[0].data", "range of UINT8"]),
        (_points(datatype="INT8", data=[1, 128, 3]), ["inputs[0].data", "range of INT8"]),
        (_points(datatype="FP32", data=[1, 1e39, 3]), ["inputs[0].data", "not a finite"]),
        (_points(parameters=[1], data=[1, 2, 3]), ["inputs[0].parameters", "object"]),
        ({"id": 5, **_points(data=[1, 2, 3])}, ["id", "string"]),
        ({"parameters": 1, **_points(data=[1, 2, 3])}, ["parameters", "object"]),
        (
            {"parameters": {"binary_data_output": "yes"}, **_points(data=[1, 2, 3])},
            ["parameters.binary_data_output", "true or false"],
        ),
        ({"outputs": {"name": "labels"}, **_points(data=[1, 2, 3])}, ["outputs", "array"]),
        ({"outputs": ["labels"], **_points(data=[1, 2, 3])}, ["outputs[0]", "object"]),
        (
            {"outputs": [{"name": "distances"}], **_points(data=[1, 2, 3])},
            ["outputs[0].name", "'distances'", "probabilities"],
        ),
        (
            {"outputs": [{"name": "labels"}, {"name": "labels"}], **_points(data=[1, 2, 3])},
            ["outputs[1].name", "twice"],
        ),
        (
            {
                "outputs": [{"name": "labels", "parameters": {"binary_data": 1}}],
                **_points(data=[1, 2, 3]),
            },
            ["outputs[0].parameters.binary_data", "true or false"],
        ),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    client: TestClient, mixture: str, body: Any, words: list[str]
) -> None:
    assert_error(_bad(client, mixture, body), 400, *words)


@pytest.mark.parametrize(
    "literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"], ids=lambda b: b.decode()
)
def test_non_finite_values_are_400(client: TestClient, mixture: str, literal: bytes) -> None:
    body = (
        b'{"inputs": [{"name": "points", "shape": [2, 3], "datatype": "FP64", '
        b'"data": [1, 2, 3, 4, ' + literal + b", 6]}]}"
    )
    assert_error(_bad(client, mixture, body), 400, "inputs[0].data", "point 1", "not a finite")


def test_a_point_that_overflows_is_400_naming_it(client: TestClient, mixture: str) -> None:
    X = np.array([[0.0, 0.0, 0.0], [1e300, 0.0, 0.0]])
    message = assert_error(_bad(client, mixture, infer_body(X)), 400, "inputs[0].data[1]")
    assert "overflowed" in message


def _binary(
    X: np.ndarray, *, size: int | None = None, header_length: int | None = None, extra: bytes = b""
) -> tuple[bytes, dict[str, str]]:
    raw = X.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "points",
                    "shape": list(X.shape),
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": len(raw) if size is None else size},
                }
            ]
        }
    ).encode()
    length = len(header) if header_length is None else header_length
    return header + raw + extra, {
        HEADER: str(length),
        "Content-Type": "application/octet-stream",
    }


def test_binary_sizes_that_do_not_add_up_are_400(client: TestClient, mixture: str) -> None:
    X = new_points(2)
    url = f"/v2/models/{mixture}/infer"
    cases = [
        (_binary(X, size=40), ["binary_data_size is 40", "takes 48"]),
        (_binary(X, extra=b"\0" * 8), ["56 bytes of binary data", "add up to 48"]),
        (_binary(X[:, :2].copy()), ["shape [2, 2]", "3 features"]),
    ]
    for (content, headers), words in cases:
        assert_error(client.post(url, content=content, headers=headers), 400, *words)
    content, headers = _binary(X)
    short = content[:-8]
    assert_error(
        client.post(url, content=short, headers=headers), 400, "only 40 bytes of binary data"
    )
    # Without the header the whole body must be JSON.
    del headers[HEADER]
    assert_error(client.post(url, content=content, headers=headers), 400, "not valid JSON")
    header_only = content[: -len(X.tobytes())]
    assert_error(
        client.post(url, content=header_only, headers=headers),
        400,
        "no Inference-Header-Content-Length header",
    )
    for value in ("abc", "-3", "1.5", str(len(content) + 1)):
        message = assert_error(
            client.post(url, content=content, headers={HEADER: value}), 400, HEADER
        )
        assert value in message or str(len(content)) in message
    both = json.loads(header_only)
    both["inputs"][0]["data"] = X.reshape(-1).tolist()
    body = json.dumps(both).encode()
    assert_error(
        client.post(url, content=body, headers={HEADER: str(len(body))}), 400, "send one of them"
    )


def test_binary_non_finite_values_are_400(client: TestClient, mixture: str) -> None:
    X = new_points(2)
    X[1, 2] = np.nan
    content, headers = _binary(X)
    response = client.post(f"/v2/models/{mixture}/infer", content=content, headers=headers)
    assert_error(response, 400, "inputs[0].data", "value 2 of point 1")


def test_other_media_types_and_encodings_are_415(client: TestClient, mixture: str) -> None:
    body = json.dumps(infer_body(new_points(2))).encode()
    url = f"/v2/models/{mixture}/infer"
    form = client.post(url, content=body, headers={"Content-Type": "text/plain"})
    assert_error(form, 415, "text/plain")
    gzip = client.post(
        url, content=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert_error(gzip, 415, "gzip")


def test_method_not_allowed_is_protocol_error(client: TestClient, mixture: str) -> None:
    response = client.get(f"/v2/models/{mixture}/infer")
    assert_error(response, 405)
    assert response.headers["allow"] == "POST"


def test_body_limit_applies_and_answers_the_protocol_error(tmp_path: Any) -> None:
    settings = Settings(store_dir=tmp_path / "store", secret_key="k", max_body_bytes=2000)
    with TestClient(create_app(settings)) as client:
        model_id = fit(client, "gaussian_mixture", {"n_components": 2, "random_state": 0})
        body = json.dumps(infer_body(new_points(200))).encode()
        url = f"/v2/models/{model_id}/infer"
        declared = client.post(url, content=body, headers={"Content-Type": "application/json"})
        assert_error(declared, 413, "GMM_MAX_BODY_BYTES")

        def chunks() -> Any:  # no Content-Length: counted as it streams in
            yield body[:1000]
            yield body[1000:]

        streamed = client.post(url, content=chunks(), headers={"Content-Type": "application/json"})
        assert_error(streamed, 413, "GMM_MAX_BODY_BYTES")


def test_point_limits_are_413(tmp_path: Any) -> None:
    settings = Settings(store_dir=tmp_path / "store", secret_key="k", max_points=10)
    with TestClient(create_app(settings)) as client:
        body = {
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 2, "random_state": 0},
            "data": {"points": new_points(10).tolist()},
        }
        model_id = client.post("/v1/models", json=body).json()["id"]
        response = client.post(f"/v2/models/{model_id}/infer", json=infer_body(new_points(11)))
        assert_error(response, 413, "inputs[0].data")


def test_read_only_key_may_infer(tmp_path: Any) -> None:
    settings = Settings(store_dir=tmp_path / "store", secret_key="k", api_keys="admin,reader:read")
    with TestClient(create_app(settings)) as client:
        admin, reader = {"X-API-Key": "admin"}, {"X-API-Key": "reader"}
        body = {
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 2, "random_state": 0},
            "data": {"generator": BLOBS},
            "include": [],
        }
        model_id = client.post("/v1/models", json=body, headers=admin).json()["id"]
        for url in (f"/v2/models/{model_id}/infer", f"/v2/models/{model_id}/versions/1/infer"):
            response = client.post(url, json=infer_body(new_points(2)), headers=reader)
            assert response.status_code == 200, (url, response.text)


def test_cors_lets_browsers_use_binary_framing(tmp_path: Any) -> None:
    settings = Settings(store_dir=tmp_path / "store", secret_key="k", cors_origins="http://ui")
    with TestClient(create_app(settings)) as client:
        preflight = client.options(
            "/v2/models/m/infer",
            headers={
                "Origin": "http://ui",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "inference-header-content-length",
            },
        )
        assert preflight.status_code == 200, preflight.text
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "inference-header-content-length" in allowed
        answer = client.get("/v2/health/live", headers={"Origin": "http://ui"})
        assert HEADER.lower() in answer.headers["access-control-expose-headers"].lower()
