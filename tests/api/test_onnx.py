"""ONNX export over HTTP: onnxruntime runs the exported model on points the model never
saw and answers what scikit-learn, fitted in-process on the same data, answers.

For every algorithm and covariance type: labels equal, and probabilities, distances and
log-likelihoods within 1e-9. The graph computes in float64 (skl2onnx converts all four
algorithms in double), so no float32 bound applies anywhere. Then the graph's signature
and metadata, k-means at its own centers (where skl2onnx's graph alone answers NaN),
imported models, and the errors: 404, 422, 501 without the extra, and read-only keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from service.config import Settings
from service.main import create_app
from tests.api.test_portable import ROUND_TRIP_CASES, SKLEARN, sklearn_fit, training_points
from tests.conftest import SEED_BLOBS, require

ROOT = Path(__file__).resolve().parents[2]
#: What the docs promise between onnxruntime's numbers and sklearn's (both float64).
ATOL = 1e-9
UNKNOWN_ID = "0" * 28
MIXTURES = frozenset({"gaussian_mixture", "bayesian_gaussian_mixture"})


@pytest.fixture(scope="module")
def ort() -> ModuleType:
    """onnxruntime, with the converter the server needs: skips without the extra on a
    developer's machine, fails under CI (which installs it with ``.[dev]``)."""
    hint = "pip install -e '.[dev]', which has the onnx extra"
    require("skl2onnx", hint)
    require("onnx", hint)
    return require("onnxruntime", hint)


def _new_points() -> np.ndarray:
    """Points the model never saw, with two far outliers (probabilities of 0 and 1, very
    low log-likelihoods)."""
    X, _ = make_blobs(n_samples=60, centers=4, cluster_std=2.5, random_state=7)
    return np.vstack([X, [[40.0, -40.0], [-300.0, 250.0]]])


def _fit(client: TestClient, algorithm: str, params: dict[str, Any], data: Any = None) -> str:
    r = client.post(
        "/v1/models",
        json={
            "algorithm": algorithm,
            "params": params,
            "data": data or {"generator": SEED_BLOBS},
            "include": [],
            "name": f"{algorithm}-onnx",
        },
    )
    assert r.status_code == 201, r.text
    model_id: str = r.json()["id"]
    return model_id


def _export(client: TestClient, model_id: str, **headers: str) -> bytes:
    r = client.get(f"/v1/models/{model_id}/export", params={"format": "onnx"}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/onnx"
    assert r.headers["content-disposition"] == f'attachment; filename="{model_id}.onnx"'
    return r.content


def _run(ort: ModuleType, model: bytes, X: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {"points": X}), strict=True))


def _check_against_sklearn(out: dict[str, np.ndarray], est: Any, X: np.ndarray) -> None:
    n = len(X)
    assert out["labels"].dtype == np.int64 and out["labels"].shape == (n,)
    assert_array_equal(out["labels"], est.predict(X))
    if isinstance(est, GaussianMixture | BayesianGaussianMixture):
        assert list(out) == ["labels", "probabilities", "log_likelihood"]
        assert out["log_likelihood"].shape == (n,)
        assert_allclose(out["probabilities"], est.predict_proba(X), rtol=0, atol=ATOL)
        assert_allclose(out["log_likelihood"], est.score_samples(X), rtol=0, atol=ATOL)
    else:
        assert list(out) == ["labels", "distances"]
        assert_allclose(out["distances"], est.transform(X), rtol=0, atol=ATOL)
    for name, values in out.items():
        if name != "labels":
            assert values.dtype == np.float64, name


# -- onnxruntime gives sklearn's numbers ---------------------------------------------------
@pytest.mark.parametrize(("algorithm", "params"), ROUND_TRIP_CASES)
def test_onnxruntime_answers_what_sklearn_answers(
    client: TestClient, ort: ModuleType, algorithm: str, params: dict[str, Any]
) -> None:
    model_id = _fit(client, algorithm, params)
    X = _new_points()
    out = _run(ort, _export(client, model_id), X)
    _check_against_sklearn(out, sklearn_fit(algorithm, params, training_points()), X)


@pytest.mark.parametrize("algorithm", sorted(SKLEARN))
def test_one_feature_and_one_component(client: TestClient, ort: ModuleType, algorithm: str) -> None:
    """The smallest shapes: ``[N, 1]`` points, one component (and its ``[N, 1]``
    probabilities or distances) next to three."""
    X = np.random.RandomState(0).normal(size=(50, 1)) * 3
    k_param = "n_components" if algorithm in MIXTURES else "n_clusters"
    new = np.linspace(-12, 12, 25).reshape(-1, 1)
    for k in (1, 3):
        params = {k_param: k, "random_state": 0}
        model_id = _fit(client, algorithm, params, {"points": X.tolist()})
        out = _run(ort, _export(client, model_id), new)
        _check_against_sklearn(out, sklearn_fit(algorithm, params, X), new)


@pytest.mark.parametrize("algorithm", ["kmeans", "minibatch_kmeans"])
def test_kmeans_at_its_own_centers_is_about_zero_not_nan(
    client: TestClient, ort: ModuleType, algorithm: str
) -> None:
    """At a center, ``|x|^2 - 2 x.c + |c|^2`` rounds to a tiny number of either sign:
    skl2onnx's graph takes its square root as it is (NaN), sklearn clips it at 0 first,
    and so does the exported graph. The data is sklearn's own ``test_transform`` data,
    where that sum is off by 8e-8 (tests/api/test_kmeans_distances.py)."""
    centers = np.array(
        [[0.0, 5.0, 0.0, 0.0, 0.0], [1.0, 1.0, 4.0, 0.0, 0.0], [1.0, 0.0, 0.0, 5.0, 1.0]]
    )
    X, _ = make_blobs(n_samples=100, centers=centers, cluster_std=1.0, random_state=42)
    for seed in (0, 1, 2):
        params = {"n_clusters": 3, "random_state": seed}
        est = SKLEARN[algorithm](**params).fit(X)
        model_id = _fit(client, algorithm, params, {"points": X.tolist()})
        at_centers = est.cluster_centers_.copy()  # a new array, as points arriving are
        out = _run(ort, _export(client, model_id), at_centers)
        assert np.isfinite(out["distances"]).all(), out["distances"]
        assert_array_equal(out["labels"], np.arange(3))
        # sklearn's transform of a new array equal to the centers has the same rounding.
        assert_allclose(out["distances"], est.transform(at_centers), rtol=0, atol=1e-6)
        assert np.diag(out["distances"]).max() < 1e-6


@pytest.mark.parametrize(
    ("algorithm", "params"),
    [
        ("bayesian_gaussian_mixture", {"n_components": 4, "covariance_type": "diag"}),
        ("minibatch_kmeans", {"n_clusters": 4, "n_init": 3, "batch_size": 64}),
    ],
)
def test_an_imported_model_exports_to_onnx(
    client: TestClient, ort: ModuleType, algorithm: str, params: dict[str, Any]
) -> None:
    """A model built from a portable JSON document (no pickle, no training data)
    converts as the model it was exported from does."""
    params = {**params, "random_state": 0}
    original = _fit(client, algorithm, params)
    document = client.get(f"/v1/models/{original}/export").json()
    imported = client.post("/v1/models/import", json=document)
    assert imported.status_code == 201, imported.text
    X = _new_points()
    out = _run(ort, _export(client, imported.json()["id"]), X)
    _check_against_sklearn(out, sklearn_fit(algorithm, params, training_points()), X)


# -- what the model says about itself ------------------------------------------------------
@pytest.mark.parametrize(
    ("algorithm", "params", "second"),
    [
        ("gaussian_mixture", {"n_components": 3, "covariance_type": "tied"}, "probabilities"),
        ("kmeans", {"n_clusters": 4}, "distances"),
    ],
)
def test_signature_and_metadata_describe_the_graph(
    client: TestClient, ort: ModuleType, algorithm: str, params: dict[str, Any], second: str
) -> None:
    import onnx

    model_id = _fit(client, algorithm, params)
    content = _export(client, model_id)
    session = ort.InferenceSession(content, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    k = params.get("n_components", params.get("n_clusters"))
    mixture = algorithm in MIXTURES

    inputs = [{"name": i.name, "type": i.type, "shape": i.shape} for i in session.get_inputs()]
    assert inputs == [{"name": "points", "type": "tensor(double)", "shape": ["N", 2]}]
    outputs = [{"name": o.name, "type": o.type, "shape": o.shape} for o in session.get_outputs()]
    expected = [
        {"name": "labels", "type": "tensor(int64)", "shape": ["N"]},
        {"name": second, "type": "tensor(double)", "shape": ["N", k]},
    ]
    if mixture:
        expected.append({"name": "log_likelihood", "type": "tensor(double)", "shape": ["N"]})
    assert outputs == expected
    # The metadata says the same, in numpy's dtype names and -1 for N.
    dtypes = {"tensor(double)": "float64", "tensor(int64)": "int64"}
    as_metadata = [
        {"name": t["name"], "dtype": dtypes[t["type"]], "shape": [-1, *t["shape"][1:]]}
        for t in expected
    ]
    assert json.loads(meta["gmm_service.inputs"]) == [
        {"name": "points", "dtype": "float64", "shape": [-1, 2]}
    ]
    assert json.loads(meta["gmm_service.outputs"]) == as_metadata
    resource = client.get(f"/v1/models/{model_id}").json()
    assert meta["gmm_service.model_id"] == model_id
    assert meta["gmm_service.algorithm"] == algorithm
    assert meta["gmm_service.name"] == resource["name"]
    assert meta["gmm_service.created_at"] == resource["created_at"]
    assert meta["gmm_service.n_features"] == "2"
    assert meta["gmm_service.n_components"] == str(k)
    assert meta.get("gmm_service.covariance_type") == (
        params["covariance_type"] if mixture else None
    )
    assert model_id in session.get_modelmeta().description

    model = onnx.load_model_from_string(content)
    onnx.checker.check_model(model, full_check=True)
    # Opset 17 at most: onnxruntime 1.13 and newer run it (the README says so).
    assert all(o.version <= 17 for o in model.opset_import if o.domain in ("", "ai.onnx"))


def test_the_default_export_is_still_the_json_document(client: TestClient) -> None:
    model_id = _fit(client, "kmeans", {"n_clusters": 3, "random_state": 0})
    default = client.get(f"/v1/models/{model_id}/export")
    as_json = client.get(f"/v1/models/{model_id}/export", params={"format": "json"})
    assert default.status_code == as_json.status_code == 200
    assert default.headers["content-type"].startswith("application/json")
    assert default.json() == as_json.json()
    assert default.json()["format"] == "gmm-service.model"


def test_openapi_documents_both_formats_and_the_501() -> None:
    spec = json.loads((ROOT / "openapi" / "openapi.json").read_text(encoding="utf-8"))
    operation = spec["paths"]["/v1/models/{model_id}/export"]["get"]
    assert set(operation["responses"]["200"]["content"]) == {
        "application/json",
        "application/onnx",
    }
    (fmt,) = [p for p in operation["parameters"] if p["name"] == "format"]
    assert fmt["in"] == "query" and fmt["schema"]["enum"] == ["json", "onnx"]
    assert fmt["schema"]["default"] == "json"
    problem = operation["responses"]["501"]["content"]["application/problem+json"]
    (example,) = problem["examples"].values()
    assert "gmm-service[onnx]" in example["value"]["detail"]
    for words in ("labels", "probabilities", "distances", "log_likelihood", "metadata_props"):
        assert words in operation["description"], words


# -- errors --------------------------------------------------------------------------------
def test_unknown_model_is_404(client: TestClient) -> None:
    r = client.get(f"/v1/models/{UNKNOWN_ID}/export", params={"format": "onnx"})
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == "application/problem+json"


def test_unknown_format_is_422_naming_the_choices(client: TestClient) -> None:
    model_id = _fit(client, "kmeans", {"n_clusters": 3, "random_state": 0})
    r = client.get(f"/v1/models/{model_id}/export", params={"format": "pickle"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    (error,) = r.json()["errors"]
    assert error["loc"] == ["query", "format"]
    assert "'json' or 'onnx'" in error["msg"]


@pytest.mark.parametrize("absent", ["skl2onnx", "onnx"])
def test_without_the_extra_onnx_is_501_naming_it_and_json_still_works(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, absent: str
) -> None:
    """A ``None`` in ``sys.modules`` is how Python sees a package that is not installed:
    ``import`` raises ImportError. No code of ours is replaced."""
    model_id = _fit(client, "gaussian_mixture", {"n_components": 2, "random_state": 0})
    monkeypatch.setitem(sys.modules, absent, None)
    r = client.get(f"/v1/models/{model_id}/export", params={"format": "onnx"})
    assert r.status_code == 501, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == "urn:gmm-service:problem:extra-not-installed"
    assert problem["status"] == 501
    assert "pip install 'gmm-service[onnx]'" in problem["detail"]
    assert absent in problem["detail"]
    # Without the extra nothing is read: an unknown model is the same 501.
    r = client.get(f"/v1/models/{UNKNOWN_ID}/export", params={"format": "onnx"})
    assert r.status_code == 501, r.text
    assert client.get(f"/v1/models/{model_id}/export").status_code == 200


def test_the_service_never_loads_the_extra_and_runs_without_it(tmp_path: Path) -> None:
    """In a fresh interpreter: starting, fitting, predicting and exporting JSON import
    none of skl2onnx, onnx and onnxruntime; then, with them made unimportable (as after
    ``pip install gmm-service`` without the extra), an ONNX export is the 501."""
    script = textwrap.dedent(
        """
        import json, sys
        from fastapi.testclient import TestClient
        from service.config import Settings
        from service.main import create_app

        EXTRA = ("skl2onnx", "onnx", "onnxruntime")
        settings = Settings(store_dir=sys.argv[1], secret_key="k")
        with TestClient(create_app(settings)) as c:
            fit = {"algorithm": "kmeans", "params": {"n_clusters": 2, "random_state": 0},
                   "data": {"points": [[0, 0], [0, 1], [5, 5], [5, 6]]}}
            model = c.post("/v1/models", json=fit).json()["id"]
            c.post(f"/v1/models/{model}/predict", json={"points": [[0, 0]]})
            as_json = c.get(f"/v1/models/{model}/export")
            loaded = [m for m in EXTRA if m in sys.modules]
            for name in EXTRA:
                sys.modules[name] = None  # what Python sees when it is not installed
            as_onnx = c.get(f"/v1/models/{model}/export", params={"format": "onnx"})
        print(json.dumps({"json": as_json.status_code, "loaded": loaded,
                          "onnx": [as_onnx.status_code, as_onnx.json()["detail"]]}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GMM_")}
    env["GMM_LOG_LEVEL"] = "warning"
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "store")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["json"] == 200, result
    assert result["loaded"] == [], result
    status, detail = result["onnx"]
    assert status == 501 and "pip install 'gmm-service[onnx]'" in detail, result


def test_a_read_only_key_may_export(tmp_path: Path, ort: ModuleType) -> None:
    settings = Settings(store_dir=tmp_path / "store", api_keys="admin-key,reader-key:read")
    with TestClient(create_app(settings)) as c:
        fit = {
            "algorithm": "kmeans",
            "params": {"n_clusters": 4, "random_state": 0},
            "data": {"generator": SEED_BLOBS},
        }
        created = c.post("/v1/models", json=fit, headers={"X-API-Key": "admin-key"})
        assert created.status_code == 201, created.text
        model_id = created.json()["id"]
        path = f"/v1/models/{model_id}/export"
        assert c.get(path, params={"format": "onnx"}).status_code == 401
        content = _export(c, model_id, Authorization="Bearer reader-key")
        X = _new_points()
        est = KMeans(n_clusters=4, random_state=0).fit(training_points())
        _check_against_sklearn(_run(ort, content, X), est, X)
        assert c.get(path, headers={"X-API-Key": "reader-key"}).status_code == 200
