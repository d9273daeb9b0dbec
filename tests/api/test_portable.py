"""Portable models over HTTP: export -> import round trips and every bad document.

The promise under test: an imported model answers ``predict``, ``score`` and
``sample`` exactly (bit for bit) as the exported one, and as scikit-learn fitted
in-process on the same data; a document is only ever JSON, checked field by field.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from service.config import Settings
from service.main import create_app
from service.schemas.models import ModelResource
from service.schemas.portable import ModelDocument
from tests.conftest import SEED_BLOBS

RTOL = 1e-10
DOCUMENT = TypeAdapter(ModelDocument)
RESOURCE = TypeAdapter(ModelResource)
SKLEARN = {
    "gaussian_mixture": GaussianMixture,
    "bayesian_gaussian_mixture": BayesianGaussianMixture,
    "kmeans": KMeans,
    "minibatch_kmeans": MiniBatchKMeans,
}
COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def _mixture_cases() -> list[Any]:
    cases = []
    for ct in COVARIANCE_TYPES:
        cases.append(
            pytest.param(
                "gaussian_mixture",
                {"n_components": 3, "covariance_type": ct, "random_state": 0},
                id=f"gaussian_mixture-{ct}",
            )
        )
    for ct in COVARIANCE_TYPES:
        cases.append(
            pytest.param(
                "bayesian_gaussian_mixture",
                {"n_components": 4, "covariance_type": ct, "random_state": 0, "max_iter": 500},
                id=f"bayesian_gaussian_mixture-{ct}",
            )
        )
    cases.append(
        pytest.param(
            "bayesian_gaussian_mixture",
            {
                "n_components": 4,
                "covariance_type": "full",
                "weight_concentration_prior_type": "dirichlet_distribution",
                "random_state": 0,
                "max_iter": 500,
            },
            id="bayesian_gaussian_mixture-dirichlet_distribution",
        )
    )
    return cases


ROUND_TRIP_CASES = [
    *_mixture_cases(),
    pytest.param(
        "kmeans", {"n_clusters": 4, "init": "random", "n_init": 10, "random_state": 0}, id="kmeans"
    ),
    pytest.param(
        "minibatch_kmeans",
        {"n_clusters": 4, "n_init": 3, "batch_size": 64, "random_state": 0},
        id="minibatch_kmeans",
    ),
]


def training_points() -> np.ndarray:
    X, _ = make_blobs(
        n_samples=SEED_BLOBS["n_samples"],
        n_features=SEED_BLOBS["n_features"],
        centers=SEED_BLOBS["centers"],
        cluster_std=SEED_BLOBS["cluster_std"],
        random_state=SEED_BLOBS["random_state"],
    )
    return X


def _new_points() -> np.ndarray:
    """Points the model never saw, including one far outlier."""
    X, _ = make_blobs(n_samples=40, centers=4, cluster_std=2.5, random_state=7)
    return np.vstack([X, [[40.0, -40.0]]])


def sklearn_fit(algorithm: str, params: dict[str, Any], X: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return SKLEARN[algorithm](**params).fit(X)


def _fit(client: TestClient, algorithm: str, params: dict[str, Any]) -> str:
    r = client.post(
        "/v1/models",
        json={
            "algorithm": algorithm,
            "params": params,
            "data": {"generator": SEED_BLOBS},
            "include": [],
            "name": f"{algorithm}-original",
        },
    )
    assert r.status_code == 201, r.text
    model_id: str = r.json()["id"]
    return model_id


def _export(client: TestClient, model_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/models/{model_id}/export")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    doc: dict[str, Any] = r.json()
    return doc


def _import(client: TestClient, doc: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/models/import", json=doc)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    assert r.headers["location"] == f"/v1/models/{body['id']}"
    return body


def _close(got: Any, want: Any) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(want), rtol=RTOL, atol=0)


def _check_document_against_sklearn(doc: dict[str, Any], est: Any, algorithm: str) -> None:
    if algorithm in ("kmeans", "minibatch_kmeans"):
        _close(doc["cluster_centers"], est.cluster_centers_)
        _close(doc["inertia"], est.inertia_)
        assert doc["n_iter"] == est.n_iter_
        return
    _close(doc["weights"], est.weights_)
    _close(doc["means"], est.means_)
    _close(doc["covariances"], est.covariances_)
    _close(doc["precisions_cholesky"], est.precisions_cholesky_)
    assert doc["converged"] == est.converged_
    assert doc["n_iter"] == est.n_iter_
    if algorithm == "bayesian_gaussian_mixture":
        wc = est.weight_concentration_
        _close(doc["weight_concentration"], np.vstack(wc) if isinstance(wc, tuple) else wc)
        _close(doc["mean_precision"], est.mean_precision_)
        _close(doc["degrees_of_freedom"], est.degrees_of_freedom_)


def _check_predictions(
    client: TestClient, original: str, imported: str, est: Any, algorithm: str
) -> None:
    """The imported model answers exactly what the original does, and what sklearn does."""
    X = _new_points()
    points = {"points": X.tolist()}
    a = client.post(f"/v1/models/{original}/predict", json=points)
    b = client.post(f"/v1/models/{imported}/predict", json=points)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json() == b.json()  # bit-for-bit: every float equal
    pred = b.json()
    assert pred["labels"] == est.predict(X).tolist()
    mixture = algorithm.endswith("gaussian_mixture")
    if mixture:
        _close(pred["probabilities"], est.predict_proba(X))
    else:
        _close(pred["distances"], est.transform(X))

    a = client.post(f"/v1/models/{original}/score", json=points)
    b = client.post(f"/v1/models/{imported}/score", json=points)
    sample_req = {"n_samples": 60, "random_state": 3}
    sa = client.post(f"/v1/models/{original}/sample", json=sample_req)
    sb = client.post(f"/v1/models/{imported}/sample", json=sample_req)
    if not mixture:
        for r in (a, b, sa, sb):
            assert r.status_code == 422, r.text
        return
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json()["log_likelihood"] == b.json()["log_likelihood"]
    assert a.json()["score"] == b.json()["score"]
    assert a.json()["percentile"] is not None
    assert b.json()["percentile"] is None  # no training data came with the document
    _close(b.json()["log_likelihood"], est.score_samples(X))
    _close(b.json()["score"], est.score(X))

    assert sa.status_code == sb.status_code == 200, (sa.text, sb.text)
    assert sa.json() == sb.json()
    est.set_params(random_state=3)
    X_s, y_s = est.sample(60)
    _close(sb.json()["points"], X_s)
    assert sb.json()["labels"] == y_s.tolist()


# -- round trips ---------------------------------------------------------------------
@pytest.mark.parametrize(("algorithm", "params"), ROUND_TRIP_CASES)
def test_export_import_round_trip(
    client: TestClient, algorithm: str, params: dict[str, Any]
) -> None:
    original = _fit(client, algorithm, params)
    doc = _export(client, original)
    DOCUMENT.validate_python(doc)  # the schema OpenAPI declares for the export
    assert doc["format"] == "gmm-service.model"
    assert doc["format_version"] == 1
    assert doc["algorithm"] == algorithm
    assert doc["source"]["model_id"] == original
    assert doc["source"]["n_samples"] == SEED_BLOBS["n_samples"]
    assert doc["source"]["versions"]["sklearn"]
    est = sklearn_fit(algorithm, params, training_points())
    _check_document_against_sklearn(doc, est, algorithm)

    resource = _import(client, doc)
    assert resource["imported"] is True
    assert resource["algorithm"] == algorithm
    assert resource["n_samples"] == SEED_BLOBS["n_samples"]
    assert resource["name"] == f"{algorithm}-original"
    assert client.get(f"/v1/models/{resource['id']}").json() == resource
    original_resource = client.get(f"/v1/models/{original}").json()
    assert resource["params"] == original_resource["params"]
    assert resource["means"] == original_resource["means"]
    _check_predictions(client, original, resource["id"], est, algorithm)

    # Exporting the import gives the same document back (all but where it came from).
    again = _export(client, resource["id"])
    assert again["source"]["model_id"] == resource["id"]
    assert {k: v for k, v in again.items() if k != "source"} == {
        k: v for k, v in doc.items() if k != "source"
    }


def _document_from_sklearn(est: Any, algorithm: str, params: dict[str, Any]) -> dict[str, Any]:
    """What another tool holding an in-process sklearn estimator would write."""
    k, d = est.means_.shape
    wc = est.weight_concentration_ if algorithm == "bayesian_gaussian_mixture" else None
    doc: dict[str, Any] = {
        "format": "gmm-service.model",
        "format_version": 1,
        "algorithm": algorithm,
        "params": params,
        "n_features": d,
        "n_components": k,
        "covariance_type": est.covariance_type,
        "weights": est.weights_.tolist(),
        "means": est.means_.tolist(),
        "covariances": est.covariances_.tolist(),
        "precisions_cholesky": est.precisions_cholesky_.tolist(),
        "converged": bool(est.converged_),
        "n_iter": int(est.n_iter_),
        "lower_bound": float(np.asarray(est.lower_bound_).reshape(-1)[0]),
    }
    if wc is not None:
        dof = est.degrees_of_freedom_
        doc["weight_concentration"] = (np.vstack(wc) if isinstance(wc, tuple) else wc).tolist()
        doc["mean_precision"] = est.mean_precision_.tolist()
        doc["degrees_of_freedom"] = float(dof) if np.ndim(dof) == 0 else dof.tolist()
    return doc


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("prior", ["dirichlet_process", "dirichlet_distribution"])
def test_import_of_a_bayesian_mixture_written_elsewhere(
    client: TestClient, covariance_type: str, prior: str
) -> None:
    """A document written from an in-process fit (no `source`) predicts, scores and
    samples exactly like that estimator; covers 'tied', which the service cannot fit yet."""
    params = {
        "n_components": 4,
        "covariance_type": covariance_type,
        "weight_concentration_prior_type": prior,
        "random_state": 0,
        "max_iter": 500,
    }
    est = sklearn_fit("bayesian_gaussian_mixture", params, training_points())
    resource = _import(client, _document_from_sklearn(est, "bayesian_gaussian_mixture", params))
    assert resource["imported"] is True
    assert resource["n_samples"] is None  # the document did not say
    assert resource["effective_n_components"] == int(np.sum(est.weights_ > 0.01))
    X = _new_points()
    mid = resource["id"]
    pred = client.post(f"/v1/models/{mid}/predict", json={"points": X.tolist()}).json()
    assert pred["labels"] == est.predict(X).tolist()
    _close(pred["probabilities"], est.predict_proba(X))
    score = client.post(f"/v1/models/{mid}/score", json={"points": X.tolist()}).json()
    assert score["log_likelihood"] == est.score_samples(X).tolist()
    sample = client.post(f"/v1/models/{mid}/sample", json={"n_samples": 25, "random_state": 5})
    est.set_params(random_state=5)
    X_s, y_s = est.sample(25)
    assert sample.json()["points"] == X_s.tolist()
    assert sample.json()["labels"] == y_s.tolist()


@pytest.mark.parametrize(
    "covariance_type",
    ["full", "tied", "diag", "spherical"],
)
def test_imported_resource_matches_the_declared_schema(
    client: TestClient, covariance_type: str
) -> None:
    params = {"n_components": 3, "covariance_type": covariance_type, "random_state": 0}
    for algorithm in ("gaussian_mixture", "bayesian_gaussian_mixture"):
        est = sklearn_fit(algorithm, params, training_points())
        resource = _import(client, _document_from_sklearn(est, algorithm, params))
        RESOURCE.validate_python(resource)


def test_aligned_model_round_trips(client: TestClient) -> None:
    """A model whose components `align_to` permuted exports in its permuted order."""
    params = {"n_components": 4, "covariance_type": "diag", "random_state": 0}
    reference = _fit(client, "gaussian_mixture", params)
    r = client.post(
        "/v1/models",
        json={
            "algorithm": "gaussian_mixture",
            "params": {**params, "random_state": 3, "init_params": "random"},
            "data": {"generator": SEED_BLOBS},
            "align_to": reference,
            "include": [],
        },
    )
    assert r.status_code == 201, r.text
    aligned = r.json()
    assert aligned["alignment"]["model_id"] == reference
    doc = _export(client, aligned["id"])
    assert doc["means"] == aligned["means"]
    imported = _import(client, doc)
    points = {"points": _new_points().tolist()}
    a = client.post(f"/v1/models/{aligned['id']}/predict", json=points).json()
    b = client.post(f"/v1/models/{imported['id']}/predict", json=points).json()
    assert a == b


def test_imported_model_is_listed_and_deletable(client: TestClient) -> None:
    original = _fit(client, "kmeans", {"n_clusters": 3, "n_init": 2, "random_state": 0})
    imported = _import(client, _export(client, original))["id"]
    ids = [m["id"] for m in client.get("/v1/models").json()["items"]]
    assert ids[0] == imported  # newest first
    assert client.delete(f"/v1/models/{imported}").status_code == 204
    assert client.get(f"/v1/models/{imported}/export").status_code == 404


def test_export_of_unknown_model_is_404(client: TestClient) -> None:
    r = client.get("/v1/models/0123456789abcdef0123456789ab/export")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


def test_import_route_is_not_shadowed_by_model_routes(client: TestClient) -> None:
    """`import` is not a model id: GET on it is a clean 4xx, POST reaches the import."""
    r = client.get("/v1/models/import")
    assert 400 <= r.status_code < 500
    r = client.post("/v1/models/import", json={})
    assert r.status_code == 422
    assert ["body", "algorithm"] in [e["loc"] for e in r.json()["errors"]]


def test_openapi_declares_the_document_and_its_examples_import(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    export = spec["paths"]["/v1/models/{model_id}/export"]["get"]
    assert export["operationId"] == "export_model"
    assert "200" in export["responses"]
    post = spec["paths"]["/v1/models/import"]["post"]
    assert post["operationId"] == "import_model"
    examples = post["requestBody"]["content"]["application/json"]["examples"]
    assert examples
    for example in examples.values():
        resource = _import(client, example["value"])
        assert resource["imported"] is True


def test_hand_written_diagonal_example_predicts_like_sklearn(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    doc = spec["paths"]["/v1/models/import"]["post"]["requestBody"]["content"]["application/json"][
        "examples"
    ]["diag-mixture"]["value"]
    mid = _import(client, doc)["id"]
    est = GaussianMixture(n_components=2, covariance_type="diag", random_state=0)
    est.weights_ = np.array(doc["weights"])
    est.means_ = np.array(doc["means"])
    est.covariances_ = np.array(doc["covariances"])
    est.precisions_cholesky_ = np.array(doc["precisions_cholesky"])
    est.precisions_ = est.precisions_cholesky_**2
    est.n_features_in_ = 2
    X = _new_points()
    score = client.post(f"/v1/models/{mid}/score", json={"points": X.tolist()}).json()
    _close(score["log_likelihood"], est.score_samples(X))


# -- bad documents -------------------------------------------------------------------
BASES: dict[str, tuple[str, dict[str, Any]]] = {
    "full": ("gaussian_mixture", {"n_components": 2, "random_state": 0}),
    "tied": ("gaussian_mixture", {"n_components": 2, "covariance_type": "tied"}),
    "diag": ("gaussian_mixture", {"n_components": 2, "covariance_type": "diag"}),
    "spherical": ("gaussian_mixture", {"n_components": 2, "covariance_type": "spherical"}),
    "bayes": ("bayesian_gaussian_mixture", {"n_components": 3, "random_state": 0}),
    "kmeans": ("kmeans", {"n_clusters": 2, "n_init": 2, "random_state": 0}),
    "minibatch": ("minibatch_kmeans", {"n_clusters": 2, "random_state": 0}),
}

Doc = dict[str, Any]


def _set(key: str, value: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        doc[key] = value

    return mutate


def _drop(key: str) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        del doc[key]

    return mutate


def _both_k(k: int) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        doc["n_components"] = k
        doc["params"]["n_components" if "n_components" in doc["params"] else "n_clusters"] = k

    return mutate


def _asymmetric(doc: Doc) -> None:
    doc["covariances"][0][0][1] += 0.5


def _not_pd(doc: Doc) -> None:
    doc["covariances"][1] = [[1.0, 2.0], [2.0, 1.0]]


def _tied_not_pd(doc: Doc) -> None:
    doc["covariances"] = [[1.0, 2.0], [2.0, 1.0]]


def _scale_pc(doc: Doc) -> None:
    doc["precisions_cholesky"][0] = (2 * np.asarray(doc["precisions_cholesky"][0])).tolist()


def _swap_pc(doc: Doc) -> None:
    pc = doc["precisions_cholesky"]
    pc[0], pc[1] = pc[1], pc[0]


def _lower_pc(doc: Doc) -> None:
    """The lower factor is the usual Cholesky convention, but not sklearn's."""
    doc["precisions_cholesky"][0] = np.asarray(doc["precisions_cholesky"][0]).T.tolist()


def _negative_variance(doc: Doc) -> None:
    doc["covariances"][1][0] = -1.0


def _zero_variance(doc: Doc) -> None:
    doc["covariances"][0] = 0.0


def _spherical_pc(doc: Doc) -> None:
    doc["precisions_cholesky"][1] *= 1.01


def _nan_mean(doc: Doc) -> None:
    doc["means"][0][0] = math.nan


def _inf_cov(doc: Doc) -> None:
    doc["covariances"][0][1][1] = math.inf


def _params_field(key: str, value: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        doc["params"][key] = value

    return mutate


def _source_field(key: str, value: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        doc["source"][key] = value

    return mutate


def _overflowing_cov(doc: Doc) -> None:
    doc["covariances"][0] = [[1e308, -1e308], [-1e308, 1e308]]


def _huge_integer_cov(doc: Doc) -> None:
    doc["covariances"][0][0][0] = 10**400  # json.dumps writes every digit


def _huge_integer_weight(doc: Doc) -> None:
    doc["weights"][0] = 10**400


def _bayes_huge_concentration(doc: Doc) -> None:
    doc["weight_concentration"][0][0] = 1e308
    doc["weight_concentration"][1][0] = 1e308


def _weights_off(doc: Doc) -> None:
    doc["weights"] = [0.5, 0.4]


def _weights_negative(doc: Doc) -> None:
    doc["weights"] = [1.5, -0.5]


def _bayes_weights(doc: Doc) -> None:
    w = doc["weights"]
    doc["weights"] = [w[1], w[0], *w[2:]]


def _bayes_dof(doc: Doc) -> None:
    doc["degrees_of_freedom"][2] = 0.5  # n_features - 1 = 1


def _bayes_wc_shape(doc: Doc) -> None:
    doc["weight_concentration"] = doc["weight_concentration"][0]


def _bayes_mean_precision(doc: Doc) -> None:
    doc["mean_precision"][0] = 0.0


BAD_DOCUMENTS = [
    # (base, mutation, status, loc prefix)
    pytest.param("full", _set("format", "sklearn-pickle"), 422, ["body", "format"], id="format"),
    pytest.param("full", _set("format_version", 2), 422, ["body", "format_version"], id="version"),
    pytest.param("full", _set("algorithm", "spectral"), 422, ["body", "algorithm"], id="algo"),
    pytest.param("full", _set("estimator", "gASVAA=="), 422, ["body", "estimator"], id="extra"),
    pytest.param(
        "full", _params_field("n_jobs", 2), 422, ["body", "params", "n_jobs"], id="params-extra"
    ),
    pytest.param(
        "full", _source_field("pickle", "x"), 422, ["body", "source", "pickle"], id="source-extra"
    ),
    pytest.param("full", _drop("precisions_cholesky"), 422, ["body", "precisions_cholesky"]),
    pytest.param("full", _set("covariance_type", "banana"), 422, ["body", "covariance_type"]),
    pytest.param(
        "full", _set("covariances", [[1.0, 1.0], [1.0, 1.0]]), 422, ["body", "covariances"]
    ),
    pytest.param(
        "full",
        _set("precisions_cholesky", [[[1.0, 0.0], [0.0, 1.0]]]),
        422,
        ["body", "precisions_cholesky"],
        id="pc-shape",
    ),
    pytest.param("full", _set("means", [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), 422, ["body", "means"]),
    pytest.param("full", _set("means", [[0.0, 0.0], [1.0]]), 422, ["body", "means"], id="ragged"),
    pytest.param("full", _set("weights", [1.0]), 422, ["body", "weights"], id="weights-length"),
    pytest.param("full", _weights_off, 422, ["body", "weights"]),
    pytest.param("full", _weights_negative, 422, ["body", "weights", 1]),
    pytest.param("full", _asymmetric, 422, ["body", "covariances", 0]),
    pytest.param("full", _not_pd, 422, ["body", "covariances", 1]),
    pytest.param("full", _scale_pc, 422, ["body", "precisions_cholesky", 0]),
    pytest.param("full", _swap_pc, 422, ["body", "precisions_cholesky", 0]),
    pytest.param("full", _lower_pc, 422, ["body", "precisions_cholesky", 0]),
    pytest.param("full", _nan_mean, 422, ["body", "means"]),
    pytest.param("full", _inf_cov, 422, ["body", "covariances"]),
    pytest.param("full", _set("lower_bound", math.inf), 422, ["body", "lower_bound"]),
    pytest.param("full", _overflowing_cov, 422, ["body", "covariances", 0]),
    pytest.param("full", _huge_integer_cov, 422, ["body", "covariances"]),
    pytest.param("full", _huge_integer_weight, 422, ["body", "weights", 0]),
    pytest.param("full", _set("n_iter", 2**60), 422, ["body", "n_iter"], id="n-iter-huge"),
    pytest.param("full", _both_k(257), 413, ["body", "n_components"], id="k-over-limit"),
    pytest.param("full", _set("n_features", 1001), 413, ["body", "n_features"], id="d-over-limit"),
    pytest.param("full", _set("n_components", 3), 422, ["body", "params", "n_components"]),
    pytest.param(
        "full", _params_field("covariance_type", "diag"), 422, ["body", "params", "covariance_type"]
    ),
    pytest.param(
        "full", _params_field("max_iter", 10**6), 422, ["body", "params", "max_iter"], id="max-iter"
    ),
    pytest.param(
        "full",
        _params_field("means_init", [[0.0, 0.0]]),
        422,
        ["body", "params", "means_init"],
        id="means-init-shape",
    ),
    pytest.param("tied", _tied_not_pd, 422, ["body", "covariances"]),
    pytest.param("diag", _negative_variance, 422, ["body", "covariances", 1, 0]),
    pytest.param("spherical", _zero_variance, 422, ["body", "covariances", 0]),
    pytest.param("spherical", _spherical_pc, 422, ["body", "precisions_cholesky", 1]),
    pytest.param("bayes", _bayes_weights, 422, ["body", "weights"]),
    pytest.param("bayes", _bayes_huge_concentration, 422, ["body", "weights"]),
    pytest.param("bayes", _bayes_dof, 422, ["body", "degrees_of_freedom", 2]),
    pytest.param("bayes", _bayes_wc_shape, 422, ["body", "weight_concentration"]),
    pytest.param("bayes", _bayes_mean_precision, 422, ["body", "mean_precision", 0]),
    pytest.param("kmeans", _set("cluster_centers", [[0.0, 0.0]]), 422, ["body", "cluster_centers"]),
    pytest.param("kmeans", _set("inertia", -1.0), 422, ["body", "inertia"]),
    pytest.param("kmeans", _set("covariances", [1.0]), 422, ["body", "covariances"], id="k-extra"),
    pytest.param("minibatch", _drop("n_steps"), 422, ["body", "n_steps"]),
]


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the many bad-document cases: each is rejected, so none leaves a trace."""
    store = tmp_path_factory.mktemp("portable") / "store"
    with TestClient(create_app(Settings(store_dir=store, secret_key="test-secret-key"))) as c:
        yield c


@pytest.fixture(scope="module")
def base_documents(shared_client: TestClient) -> dict[str, Doc]:
    return {
        key: _export(shared_client, _fit(shared_client, algorithm, params))
        for key, (algorithm, params) in BASES.items()
    }


@pytest.mark.parametrize(("base", "mutate", "status", "loc"), BAD_DOCUMENTS)
def test_bad_document_is_a_problem_naming_the_field(
    shared_client: TestClient,
    base_documents: dict[str, Doc],
    base: str,
    mutate: Callable[[Doc], None],
    status: int,
    loc: list[str | int],
) -> None:
    client = shared_client
    stored = client.get("/v1/models").json()["total"]
    doc = copy.deepcopy(base_documents[base])
    r = client.post("/v1/models/import", json=doc)
    assert r.status_code == 201, r.text  # the base document itself is fine
    assert client.delete(r.headers["location"]).status_code == 204
    mutate(doc)
    # json.dumps writes NaN/Infinity literals, as a careless client would.
    r = client.post(
        "/v1/models/import",
        content=json.dumps(doc),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    locs = [e["loc"] for e in problem["errors"]]
    assert any(got[: len(loc)] == loc for got in locs), locs
    assert all(e["msg"] for e in problem["errors"])
    # Nothing was stored.
    assert client.get("/v1/models").json()["total"] == stored


class _Tripwire:
    """Unpickling this object touches a file: proof that nothing unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("content_type", ["application/json", "application/octet-stream"])
def test_import_never_unpickles(client: TestClient, tmp_path: Path, content_type: str) -> None:
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_Tripwire(marker))
    r = client.post("/v1/models/import", content=payload, headers={"Content-Type": content_type})
    assert 400 <= r.status_code < 500, r.text
    r = client.post(
        "/v1/models/import",
        json={
            **_export(client, _fit(client, "kmeans", {"n_clusters": 2, "n_init": 1})),
            "estimator": payload.hex(),
        },
    )
    assert r.status_code == 422
    assert ["body", "estimator"] in [e["loc"] for e in r.json()["errors"]]
    assert not marker.exists()


def test_component_limit_follows_settings(tmp_path: Path) -> None:
    settings = Settings(store_dir=tmp_path / "s", secret_key="k", max_components=2)
    with TestClient(create_app(settings)) as client:
        doc = _export(client, _fit(client, "gaussian_mixture", {"n_components": 2}))
        doc["n_components"] = doc["params"]["n_components"] = 3
        r = client.post("/v1/models/import", json=doc)
        assert r.status_code == 413
        assert r.json()["errors"][0]["loc"] == ["body", "n_components"]
