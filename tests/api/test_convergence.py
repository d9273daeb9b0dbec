"""The convergence trace: ``lower_bounds`` equal to sklearn's, exported, and plotted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import make_blobs
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from tests.conftest import SEED_BLOBS

X, _ = make_blobs(n_samples=200, n_features=2, centers=4, cluster_std=1.6, random_state=10)

CASES = [
    ("gaussian_mixture", {"n_components": 4, "random_state": 0}, GaussianMixture),
    (
        "gaussian_mixture",
        {"n_components": 3, "covariance_type": "diag", "n_init": 3, "tol": 1e-6, "random_state": 1},
        GaussianMixture,
    ),
    (
        "bayesian_gaussian_mixture",
        {"n_components": 5, "max_iter": 300, "random_state": 0},
        BayesianGaussianMixture,
    ),
]


def _fit(client: TestClient, algorithm: str, params: dict[str, Any]) -> dict[str, Any]:
    r = client.post(
        "/v1/models",
        json={"algorithm": algorithm, "params": params, "data": {"generator": SEED_BLOBS}},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(("algorithm", "params", "cls"), CASES)
def test_lower_bounds_equal_sklearns(
    client: TestClient, algorithm: str, params: dict[str, Any], cls: type
) -> None:
    ref = cls(**params).fit(X)
    model = _fit(client, algorithm, params)
    expected = [float(v) for v in ref.lower_bounds_]
    assert model["lower_bounds"] == expected
    assert client.get(f"/v1/models/{model['id']}").json()["lower_bounds"] == expected
    assert model["lower_bounds"][-1] == model["lower_bound"]
    assert len(model["lower_bounds"]) == model["n_iter"]


def test_export_and_import_carry_the_trace(client: TestClient) -> None:
    model = _fit(client, "gaussian_mixture", {"n_components": 4, "random_state": 0})
    doc = client.get(f"/v1/models/{model['id']}/export").json()
    assert doc["lower_bounds"] == model["lower_bounds"]
    imported = client.post("/v1/models/import", json=doc).json()
    assert imported["lower_bounds"] == model["lower_bounds"]
    # Documents written before the trace was exported still import, with none.
    del doc["lower_bounds"]
    older = client.post("/v1/models/import", json=doc)
    assert older.status_code == 201, older.text
    assert older.json()["lower_bounds"] == []
    r = client.get(f"/v1/models/{older.json()['id']}/plot", params={"kind": "convergence"})
    assert r.status_code == 422
    assert "no convergence trace" in r.json()["detail"]


@pytest.mark.parametrize(("fmt", "media"), [("png", "image/png"), ("svg", "image/svg+xml")])
def test_convergence_plot(client: TestClient, fmt: str, media: str) -> None:
    model = _fit(client, "gaussian_mixture", {"n_components": 4, "random_state": 0})
    r = client.get(f"/v1/models/{model['id']}/plot", params={"kind": "convergence", "format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media
    assert f'filename="convergence-{model["id"]}.{fmt}"' in r.headers["content-disposition"]
    if fmt == "png":
        assert r.content.startswith(b"\x89PNG")
    else:
        assert b"EM iteration" in r.content
    # The default kind is still the model's picture, and differs.
    other = client.get(f"/v1/models/{model['id']}/plot", params={"format": fmt})
    assert other.status_code == 200 and other.content != r.content


def test_max_iter_zero_has_a_null_bound_and_no_trace(client: TestClient) -> None:
    r = client.post(
        "/v1/models",
        json={
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 2, "max_iter": 0, "random_state": 0},
            "data": {"generator": SEED_BLOBS},
        },
    )
    assert r.status_code == 201, r.text
    ref = GaussianMixture(2, max_iter=0, random_state=0).fit(X)
    assert r.json()["lower_bound"] is None
    assert r.json()["lower_bounds"] == [
        None if not np.isfinite(v) else float(v) for v in ref.lower_bounds_
    ]


def test_kmeans_has_no_trace_to_plot(client: TestClient) -> None:
    model = _fit(client, "kmeans", {"n_clusters": 4, "random_state": 0})
    assert "lower_bounds" not in model
    r = client.get(f"/v1/models/{model['id']}/plot", params={"kind": "convergence"})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert "no lower bound" in r.json()["detail"]
    bad = client.get(f"/v1/models/{model['id']}/plot", params={"kind": "bogus"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["loc"] == ["query", "kind"]
