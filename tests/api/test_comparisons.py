"""``POST /v1/comparisons``: labels and every metric equal sklearn's, run here."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn import metrics
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from service.schemas.params import (
    BayesianGaussianMixtureParams,
    GaussianMixtureParams,
    KMeansParams,
    MiniBatchKMeansParams,
)
from tests.conftest import SEED_BLOBS

SUPERVISED = (
    "adjusted_rand_score",
    "adjusted_mutual_info_score",
    "normalized_mutual_info_score",
    "homogeneity_score",
    "completeness_score",
    "v_measure_score",
)
ESTIMATORS = {
    "gaussian_mixture": (GaussianMixture, GaussianMixtureParams),
    "bayesian_gaussian_mixture": (BayesianGaussianMixture, BayesianGaussianMixtureParams),
    "kmeans": (KMeans, KMeansParams),
    "minibatch_kmeans": (MiniBatchKMeans, MiniBatchKMeansParams),
}

#: The notebook's two elongated, overlapping Gaussians (smaller, for speed).
ELLIPSES = {
    "kind": "gaussian_mixture",
    "random_state": 0,
    "components": [
        {"mean": [0, 1], "cov": [[1, 0.9], [0.9, 2]], "n_samples": 300},
        {"mean": [1, -2], "cov": [[2, -1], [-1, 1]], "n_samples": 300},
    ],
}


def ellipses_data() -> tuple[np.ndarray, np.ndarray]:
    """What numpy draws for ``ELLIPSES``: components in order from one RandomState."""
    rs = np.random.RandomState(ELLIPSES["random_state"])
    parts, labels = [], []
    for i, comp in enumerate(ELLIPSES["components"]):
        parts.append(rs.multivariate_normal(comp["mean"], comp["cov"], comp["n_samples"]))
        labels.append(np.full(comp["n_samples"], i))
    return np.concatenate(parts), np.concatenate(labels)


def seed_blobs() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(**{k: v for k, v in SEED_BLOBS.items() if k != "kind"})
    return X, y


def sklearn_labels(algorithm: str, params: dict[str, Any], X: np.ndarray) -> np.ndarray:
    """Training labels as sklearn gives them: ``labels_`` for k-means, ``predict`` for
    mixtures (which ``fit_predict`` agrees with)."""
    cls, schema = ESTIMATORS[algorithm]
    full = schema(**params).model_dump()
    kwargs = {k: np.asarray(v) if isinstance(v, list) else v for k, v in full.items()}
    est = cls(**kwargs).fit(X)
    if algorithm in ("kmeans", "minibatch_kmeans"):
        return np.asarray(est.labels_)
    return np.asarray(est.predict(X))


def assert_result_equals(
    result: dict[str, Any],
    algorithm: str,
    params: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray | None,
    silhouette: dict[str, Any] | None = None,
) -> None:
    schema = ESTIMATORS[algorithm][1]
    labels = sklearn_labels(algorithm, params, X)
    assert result["algorithm"] == algorithm
    assert result["params"] == schema(**params).model_dump()
    assert result["labels"] == labels.tolist()
    assert result["n_clusters"] == len(np.unique(labels))
    assert result["fit_seconds"] > 0
    expected = metrics.silhouette_score(X, labels, **(silhouette or {}))
    np.testing.assert_allclose(result["silhouette_score"], expected, rtol=1e-10)
    for name in SUPERVISED:
        if y is None:
            assert name not in result
        else:
            expected = getattr(metrics, name)(y, labels)
            np.testing.assert_allclose(result[name], expected, rtol=1e-10, err_msg=name)


def assert_problem(response: Any, status: int, loc: list[str | int]) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["errors"][0]["loc"] == loc, problem
    return problem


def test_the_notebook_scene_kmeans_against_a_mixture(client: TestClient) -> None:
    X, y = ellipses_data()
    items = [
        (
            "kmeans",
            {"n_clusters": 2, "init": "random", "n_init": 10, "random_state": 0},
        ),
        ("gaussian_mixture", {"n_components": 2, "random_state": 0}),
    ]
    response = client.post(
        "/v1/comparisons",
        json={
            "data": {"generator": ELLIPSES},
            "algorithms": [{"algorithm": a, "params": p} for a, p in items],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["results"]) == 2
    for result, (algorithm, params) in zip(body["results"], items, strict=True):
        assert_result_equals(result, algorithm, params, X, y)
        assert result["warnings"] == []
    assert body["silhouette"] == {"sample_size": None, "random_state": None}
    # The notebook's point: on elongated clusters the mixture recovers the truth better.
    kmeans, mixture = body["results"]
    assert mixture["adjusted_rand_score"] > kmeans["adjusted_rand_score"]


def test_all_four_algorithms_on_points_have_no_supervised_metrics(client: TestClient) -> None:
    X, _ = seed_blobs()
    items = [
        ("gaussian_mixture", {"n_components": 4, "covariance_type": "diag", "random_state": 1}),
        ("bayesian_gaussian_mixture", {"n_components": 6, "random_state": 0, "max_iter": 300}),
        ("kmeans", {"n_clusters": 4, "random_state": 0}),
        ("minibatch_kmeans", {"n_clusters": 4, "random_state": 0, "batch_size": 64}),
    ]
    response = client.post(
        "/v1/comparisons",
        json={
            "data": {"points": X.tolist()},
            "algorithms": [{"algorithm": a, "params": p} for a, p in items],
        },
    )
    assert response.status_code == 200, response.text
    for result, (algorithm, params) in zip(response.json()["results"], items, strict=True):
        assert_result_equals(result, algorithm, params, X, None)


def test_default_params_are_resolved(client: TestClient) -> None:
    X, y = seed_blobs()
    response = client.post(
        "/v1/comparisons",
        json={
            "data": {"generator": SEED_BLOBS},
            "algorithms": [
                {"algorithm": "kmeans", "params": {"random_state": 0}},
                {"algorithm": "gaussian_mixture"},
            ],
        },
    )
    assert response.status_code == 200, response.text
    kmeans, mixture = response.json()["results"]
    assert kmeans["params"] == KMeansParams(random_state=0).model_dump()
    assert kmeans["params"]["n_clusters"] == 8
    assert_result_equals(kmeans, "kmeans", {"random_state": 0}, X, y)
    # sklearn's default: one component, so one cluster and no silhouette.
    assert mixture["params"] == GaussianMixtureParams().model_dump()
    assert mixture["n_clusters"] == 1
    assert mixture["silhouette_score"] is None


def test_true_labels_give_the_supervised_metrics(client: TestClient) -> None:
    X, y = seed_blobs()
    params = {"n_components": 3, "random_state": 0}
    response = client.post(
        "/v1/comparisons",
        json={
            "data": {"points": X.tolist()},
            "algorithms": [{"algorithm": "gaussian_mixture", "params": params}],
            "true_labels": y.tolist(),
        },
    )
    assert response.status_code == 200, response.text
    assert_result_equals(response.json()["results"][0], "gaussian_mixture", params, X, y)


def test_true_labels_win_over_the_generators(client: TestClient) -> None:
    X, y = seed_blobs()
    merged = np.where(y == 3, 0, y)  # a coarser truth than the generator's
    params = {"n_clusters": 3, "random_state": 0, "n_init": 3}
    response = client.post(
        "/v1/comparisons",
        json={
            "data": {"generator": SEED_BLOBS},
            "algorithms": [{"algorithm": "kmeans", "params": params}],
            "true_labels": merged.tolist(),
        },
    )
    assert response.status_code == 200, response.text
    assert_result_equals(response.json()["results"][0], "kmeans", params, X, merged)


def test_silhouette_sample_options_are_sklearns(client: TestClient) -> None:
    X, y = seed_blobs()
    params = {"n_clusters": 4, "random_state": 0}
    response = client.post(
        "/v1/comparisons",
        json={
            "data": {"generator": SEED_BLOBS},
            "algorithms": [{"algorithm": "kmeans", "params": params}],
            "silhouette": {"sample_size": 60, "random_state": 5},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["silhouette"] == {"sample_size": 60, "random_state": 5}
    sample = {"sample_size": 60, "random_state": 5}
    assert_result_equals(body["results"][0], "kmeans", params, X, y, sample)


def test_a_sample_without_a_seed_uses_seed_zero(client: TestClient) -> None:
    X, y = seed_blobs()
    params = {"n_clusters": 4, "random_state": 0}
    body = client.post(
        "/v1/comparisons",
        json={
            "data": {"generator": SEED_BLOBS},
            "algorithms": [{"algorithm": "kmeans", "params": params}],
            "silhouette": {"sample_size": 80},
        },
    ).json()
    assert body["silhouette"] == {"sample_size": 80, "random_state": 0}
    sample = {"sample_size": 80, "random_state": 0}
    assert_result_equals(body["results"][0], "kmeans", params, X, y, sample)


@pytest.mark.slow
def test_large_data_samples_10000_points_with_seed_zero(client: TestClient) -> None:
    spec = {"kind": "blobs", "n_samples": 10_050, "n_features": 2, "centers": 3, "random_state": 2}
    X, y = make_blobs(n_samples=10_050, n_features=2, centers=3, random_state=2)
    params = {"n_clusters": 3, "random_state": 0}
    response = client.post(
        "/v1/comparisons",
        json={
            "data": {"generator": spec},
            "algorithms": [{"algorithm": "kmeans", "params": params}],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["silhouette"] == {"sample_size": 10_000, "random_state": 0}
    sample = {"sample_size": 10_000, "random_state": 0}
    assert_result_equals(body["results"][0], "kmeans", params, X, y, sample)


def test_one_cluster_has_no_silhouette_and_says_why(client: TestClient) -> None:
    X, y = seed_blobs()
    with pytest.raises(ValueError, match="Number of labels is 1"):
        metrics.silhouette_score(X, np.zeros(len(X), dtype=int))
    response = client.post(
        "/v1/comparisons",
        json={
            "data": {"generator": SEED_BLOBS},
            "algorithms": [{"algorithm": "kmeans", "params": {"n_clusters": 1}}],
        },
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["n_clusters"] == 1
    assert result["silhouette_score"] is None
    assert [w["category"] for w in result["warnings"]] == ["UndefinedMetricWarning"]
    assert "silhouette_score" in result["warnings"][0]["message"]
    labels = np.zeros(len(X), dtype=int)
    assert result["labels"] == labels.tolist()
    np.testing.assert_allclose(
        result["adjusted_rand_score"], metrics.adjusted_rand_score(y, labels), rtol=1e-10
    )


def test_a_refused_fit_names_its_item(client: TestClient) -> None:
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]] * 10)
    params = {"n_components": 3, "reg_covar": 0.0, "random_state": 0}
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        GaussianMixture(**params).fit(X)
    response = client.post(
        "/v1/comparisons",
        json={
            "data": {"points": X.tolist()},
            "algorithms": [
                {"algorithm": "kmeans", "params": {"n_clusters": 3, "random_state": 0}},
                {"algorithm": "gaussian_mixture", "params": params},
            ],
        },
    )
    problem = assert_problem(response, 422, ["body", "algorithms", 1])
    assert "ill-defined empirical covariance" in problem["detail"]


KM = {"algorithm": "kmeans", "params": {"n_clusters": 2}}


@pytest.mark.parametrize(
    ("body", "status", "loc"),
    [
        ({"algorithms": []}, 422, ["body", "algorithms"]),
        ({"algorithms": [KM] * 11}, 422, ["body", "algorithms"]),
        ({}, 422, ["body", "algorithms"]),
        (
            {"algorithms": [KM, {"algorithm": "dbscan"}]},
            422,
            ["body", "algorithms", 1, "algorithm"],
        ),
        ({"algorithms": [KM, {"params": {}}]}, 422, ["body", "algorithms", 1, "algorithm"]),
        (
            {"algorithms": [KM, {"algorithm": "kmeans", "params": {"foo": 1}}]},
            422,
            ["body", "algorithms", 1, "params", "foo"],
        ),
        (
            {"algorithms": [{"algorithm": "gaussian_mixture", "params": {"n_clusters": 2}}]},
            422,
            ["body", "algorithms", 0, "params", "n_clusters"],
        ),
        (
            {"algorithms": [{"algorithm": "kmeans", "params": {"n_clusters": 2.5}}]},
            422,
            ["body", "algorithms", 0, "params", "n_clusters"],
        ),
        (
            {"algorithms": [KM, {"algorithm": "minibatch_kmeans", "params": {"n_clusters": 201}}]},
            422,
            ["body", "algorithms", 1, "params", "n_clusters"],
        ),
        (
            {"algorithms": [KM, {"algorithm": "kmeans", "params": {"n_clusters": 100_000}}]},
            422,
            ["body", "algorithms", 1, "params", "n_clusters"],
        ),
        (
            {
                "algorithms": [
                    KM,
                    KM,
                    {
                        "algorithm": "gaussian_mixture",
                        "params": {"n_components": 2, "max_iter": 10**9},
                    },
                ]
            },
            422,
            ["body", "algorithms", 2, "params", "max_iter"],
        ),
        (
            {
                "algorithms": [
                    {"algorithm": "kmeans", "params": {"n_clusters": 2, "init": [[0, 0]]}}
                ]
            },
            422,
            ["body", "algorithms", 0, "params", "init"],
        ),
        ({"algorithms": [KM], "true_labels": [0, 1]}, 422, ["body", "true_labels"]),
        ({"algorithms": [KM], "true_labels": [0.5] * 200}, 422, ["body", "true_labels", 0]),
        ({"algorithms": [KM], "true_labels": []}, 422, ["body", "true_labels"]),
        (
            {"algorithms": [KM], "silhouette": {"sample_size": 1}},
            422,
            ["body", "silhouette", "sample_size"],
        ),
        (
            {"algorithms": [KM], "silhouette": {"sample_size": 10**7}},
            422,
            ["body", "silhouette", "sample_size"],
        ),
        (
            {"algorithms": [KM], "silhouette": {"random_state": -1}},
            422,
            ["body", "silhouette", "random_state"],
        ),
        (
            {"algorithms": [KM], "silhouette": {"metric": "cosine"}},
            422,
            ["body", "silhouette", "metric"],
        ),
    ],
)
def test_bad_requests_name_the_field(
    client: TestClient, body: dict[str, Any], status: int, loc: list[str | int]
) -> None:
    response = client.post("/v1/comparisons", json={"data": {"generator": SEED_BLOBS}, **body})
    assert_problem(response, status, loc)


def test_bad_data_is_named(client: TestClient) -> None:
    response = client.post(
        "/v1/comparisons", json={"data": {"points": [[0, 1], [2]]}, "algorithms": [KM]}
    )
    assert_problem(response, 422, ["body", "data", "points", 1])


def test_an_unknown_param_named_like_a_union_tag_is_named(client: TestClient) -> None:
    """Union tags ("blobs", "kmeans") are dropped from pydantic's locs, but not a
    client's own key that happens to share the name."""
    response = client.post(
        "/v1/comparisons",
        json={
            "data": {"generator": SEED_BLOBS},
            "algorithms": [{"algorithm": "kmeans", "params": {"blobs": 1}}],
        },
    )
    assert_problem(response, 422, ["body", "algorithms", 0, "params", "blobs"])
