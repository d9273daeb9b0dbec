"""Triton's own client, ``tritonclient.http``, against a real ``python -m service``.

The point of the Open Inference Protocol is that clients written for other servers
work unchanged, so this uses tritonclient with its defaults (binary tensors both
ways) and checks the numbers against scikit-learn fitted in-process on the same data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from tests.conftest import SEED_BLOBS, SEED_FIT, require
from tests.helpers_server import ServerProcess, running_server

httpclient = require("tritonclient.http")
triton_utils = require("tritonclient.utils")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cwd = tmp_path_factory.mktemp("tritonclient")
    env = {"GMM_STORE_DIR": str(cwd / "store"), "GMM_SECRET_KEY": "triton-secret"}
    with running_server(env, cwd=cwd) as srv:
        yield srv


@pytest.fixture(scope="module")
def seed_X() -> np.ndarray:
    X, _ = make_blobs(**{k: v for k, v in SEED_BLOBS.items() if k != "kind"})
    return X


@pytest.fixture(scope="module")
def mixture(server: ServerProcess) -> str:
    response = server.client.post("/v1/models", json={**SEED_FIT, "name": "seed", "include": []})
    assert response.status_code == 201, response.text
    model_id: str = response.json()["id"]
    return model_id


@pytest.fixture
def triton(server: ServerProcess) -> Iterator[Any]:
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield client
    client.close()


def _points(n: int = 40) -> np.ndarray:
    return np.random.default_rng(3).normal(0.0, 8.0, size=(n, 2))


def test_server_and_model_health(triton: Any, mixture: str) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready(mixture)
    assert triton.is_model_ready("seed")
    assert triton.is_model_ready("seed", model_version="1")
    assert not triton.is_model_ready("no-such-model")
    assert triton.get_server_metadata()["extensions"] == ["binary_tensor_data"]


def test_model_metadata(triton: Any, mixture: str) -> None:
    meta = triton.get_model_metadata("seed")
    assert meta["versions"] == [mixture]
    assert meta["inputs"] == [{"name": "points", "datatype": "FP64", "shape": [-1, 2]}]
    assert [o["name"] for o in meta["outputs"]] == ["labels", "probabilities"]
    assert triton.get_model_metadata(mixture, model_version=mixture)["name"] == mixture


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", ["id", "name"])
def test_infer_equals_sklearn(
    triton: Any, mixture: str, seed_X: np.ndarray, binary: bool, model: str
) -> None:
    gm = GaussianMixture(**SEED_FIT["params"]).fit(seed_X)  # type: ignore[arg-type]
    X = _points()
    points = httpclient.InferInput("points", X.shape, "FP64")
    points.set_data_from_numpy(X, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("labels", binary_data=binary),
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    name = mixture if model == "id" else "seed"
    result = triton.infer(name, [points], outputs=outputs, request_id="r1")
    np.testing.assert_array_equal(result.as_numpy("labels"), gm.predict(X))
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), gm.predict_proba(X), rtol=1e-12, atol=1e-300
    )
    response = result.get_response()
    assert response["model_version"] == mixture
    assert response["id"] == "r1"


def test_infer_with_tritonclient_defaults(triton: Any, mixture: str, seed_X: np.ndarray) -> None:
    """No outputs named: tritonclient asks for every output as binary data."""
    gm = GaussianMixture(**SEED_FIT["params"]).fit(seed_X)  # type: ignore[arg-type]
    X = _points(5)
    points = httpclient.InferInput("points", X.shape, "FP64")
    points.set_data_from_numpy(X)
    result = triton.infer(mixture, [points], model_version="1")
    np.testing.assert_array_equal(result.as_numpy("labels"), gm.predict(X))
    np.testing.assert_allclose(result.as_numpy("probabilities"), gm.predict_proba(X), rtol=1e-12)


def test_kmeans_distances_as_fp32(triton: Any, server: ServerProcess, seed_X: np.ndarray) -> None:
    params = {"n_clusters": 4, "n_init": 2, "random_state": 0}
    body = {"algorithm": "kmeans", "params": params, "data": {"generator": SEED_BLOBS}}
    response = server.client.post("/v1/models", json={**body, "include": []})
    assert response.status_code == 201, response.text
    km = KMeans(**params).fit(seed_X)
    X = _points(8).astype(np.float32)
    points = httpclient.InferInput("points", X.shape, "FP32")
    points.set_data_from_numpy(X)
    result = triton.infer(response.json()["id"], [points])
    X64 = X.astype(np.float64)
    np.testing.assert_array_equal(result.as_numpy("labels"), km.predict(X64))
    np.testing.assert_allclose(result.as_numpy("distances"), km.transform(X64), rtol=1e-12)


def test_errors_reach_the_client_as_their_message(triton: Any, mixture: str) -> None:
    X = _points(3)
    points = httpclient.InferInput("points", X.shape, "FP64")
    points.set_data_from_numpy(X)
    with pytest.raises(triton_utils.InferenceServerException) as unknown:
        triton.infer("no-such-model", [points])
    assert "No model with id or name 'no-such-model'" in unknown.value.message()
    assert unknown.value.status() == "404"
    with pytest.raises(triton_utils.InferenceServerException) as missing:
        triton.get_model_metadata("no-such-model")
    assert "no-such-model" in missing.value.message()
    wide = np.zeros((2, 3))
    points = httpclient.InferInput("points", wide.shape, "FP64")
    points.set_data_from_numpy(wide)
    with pytest.raises(triton_utils.InferenceServerException) as bad:
        triton.infer(mixture, [points])
    assert "inputs[0].shape [2, 3]: the model takes 2 features" in bad.value.message()
    assert bad.value.status() == "400"
