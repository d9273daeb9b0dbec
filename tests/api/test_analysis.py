"""Score, sample, Bayesian mixtures, MiniBatchKMeans, recovery and align_to over HTTP,
each compared with scikit-learn run here on the same data."""

from __future__ import annotations

from itertools import permutations as _perms
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from sklearn.cluster import MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from tests.conftest import SEED_BLOBS

RTOL = 1e-10
SCENE = {
    "kind": "gaussian_mixture",
    "random_state": 0,
    "components": [
        {"mean": [0.0, 1.0], "cov": [[1.0, 0.9], [0.9, 2.0]], "n_samples": 300},
        {"mean": [4.0, -2.0], "cov": [[2.0, -1.0], [-1.0, 1.0]], "n_samples": 300},
    ],
}


def seed_points() -> np.ndarray:
    X, _ = make_blobs(n_samples=200, n_features=2, centers=4, cluster_std=1.6, random_state=10)
    return X


def scene_points() -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.RandomState(SCENE["random_state"])
    parts, labels = [], []
    for i, c in enumerate(SCENE["components"]):
        parts.append(rs.multivariate_normal(c["mean"], c["cov"], c["n_samples"]))
        labels.append(np.full(c["n_samples"], i))
    return np.concatenate(parts), np.concatenate(labels)


def permutations(n: int) -> list[tuple[int, ...]]:
    return list(_perms(range(n)))


def fit(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/models", json=body)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def gmm(client: TestClient) -> dict[str, Any]:
    return fit(
        client,
        {
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 4, "random_state": 0},
            "data": {"generator": SEED_BLOBS},
        },
    )


def test_score_equals_score_samples_and_percentiles_rank_training_points(
    client: TestClient, gmm: dict[str, Any]
) -> None:
    X = seed_points()
    ref = GaussianMixture(n_components=4, random_state=0).fit(X)
    probe = np.vstack([X[:5], [[40.0, 40.0]]])
    r = client.post(f"/v1/models/{gmm['id']}/score", json={"points": probe.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    np.testing.assert_allclose(body["log_likelihood"], ref.score_samples(probe), rtol=RTOL)
    assert body["score"] == pytest.approx(ref.score(probe), rel=RTOL)
    train = np.sort(ref.score_samples(X))
    expected = 100 * np.searchsorted(train, ref.score_samples(probe), side="right") / len(X)
    np.testing.assert_allclose(body["percentile"], expected)
    assert body["percentile"][-1] == 0.0  # the far point is below every training point


def test_score_answers_bic_and_aic_of_the_given_points(
    client: TestClient, gmm: dict[str, Any]
) -> None:
    """sklearn's ``bic(X)``/``aic(X)`` of any points, not only the training data's:
    what a remote estimator's ``bic(X)`` needs."""
    X = seed_points()
    ref = GaussianMixture(n_components=4, random_state=0).fit(X)
    probe = np.vstack([X[::3], [[5.0, -3.0]]])
    body = client.post(f"/v1/models/{gmm['id']}/score", json={"points": probe.tolist()}).json()
    assert body["bic"] == ref.bic(probe)
    assert body["aic"] == ref.aic(probe)
    train = client.post(f"/v1/models/{gmm['id']}/score", json={"points": X.tolist()}).json()
    assert (train["bic"], train["aic"]) == (gmm["bic"], gmm["aic"])


def test_sample_equals_sklearn_sample_with_seed(client: TestClient, gmm: dict[str, Any]) -> None:
    ref = GaussianMixture(n_components=4, random_state=0).fit(seed_points())
    ref.set_params(random_state=7)
    X, y = ref.sample(25)
    r = client.post(f"/v1/models/{gmm['id']}/sample", json={"n_samples": 25, "random_state": 7})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["points"], X, rtol=RTOL)
    assert r.json()["labels"] == y.tolist()


def test_sample_and_score_refused_for_kmeans_and_sample_limit(
    client: TestClient, gmm: dict[str, Any]
) -> None:
    km = fit(
        client,
        {"algorithm": "kmeans", "params": {"n_clusters": 2}, "data": {"generator": SEED_BLOBS}},
    )
    for path, body in (("sample", {"n_samples": 3}), ("score", {"points": [[0.0, 0.0]]})):
        r = client.post(f"/v1/models/{km['id']}/{path}", json=body)
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
        assert "mixture" in r.json()["detail"]
    r = client.post(f"/v1/models/{gmm['id']}/sample", json={"n_samples": 10**9})
    assert r.status_code == 422 and r.json()["type"].endswith("limit-exceeded")
    assert "limit" in r.json()["detail"]
    r = client.post(f"/v1/models/{gmm['id']}/sample", json={"n_samples": 0})
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "n_samples"]


@pytest.mark.parametrize("prior_type", ["dirichlet_process", "dirichlet_distribution"])
def test_bayesian_mixture_equals_sklearn(client: TestClient, prior_type: str) -> None:
    params = {
        "n_components": 6,
        "random_state": 0,
        "max_iter": 300,
        "weight_concentration_prior_type": prior_type,
    }
    body = fit(
        client,
        {
            "algorithm": "bayesian_gaussian_mixture",
            "params": params,
            "data": {"generator": SEED_BLOBS},
            "effective_weight_threshold": 0.05,
        },
    )
    X = seed_points()
    ref = BayesianGaussianMixture(**params).fit(X)
    np.testing.assert_allclose(body["weights"], ref.weights_, rtol=RTOL)
    np.testing.assert_allclose(body["means"], ref.means_, rtol=RTOL)
    np.testing.assert_allclose(body["covariances"], ref.covariances_, rtol=RTOL)
    np.testing.assert_allclose(body["mean_precision"], ref.mean_precision_, rtol=RTOL)
    np.testing.assert_allclose(body["degrees_of_freedom"], ref.degrees_of_freedom_, rtol=RTOL)
    wc = ref.weight_concentration_
    np.testing.assert_allclose(
        body["weight_concentration"], np.vstack(wc) if isinstance(wc, tuple) else wc, rtol=RTOL
    )
    assert body["effective_n_components"] == int(np.sum(ref.weights_ > 0.05))
    assert body["labels"] == ref.predict(X).tolist()
    np.testing.assert_allclose(body["probabilities"], ref.predict_proba(X), rtol=RTOL, atol=1e-300)
    assert body["params"]["weight_concentration_prior_type"] == prior_type
    assert "bic" not in body


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_bayesian_mixture_answers_its_priors_as_sklearn_resolved_them(
    client: TestClient, covariance_type: str
) -> None:
    """The defaults are computed from the data (its mean and covariance): a client with
    only the resource (curl) sees them, in the listing too, to the last bit."""
    params = {"n_components": 3, "covariance_type": covariance_type, "random_state": 0}
    body = fit(
        client,
        {
            "algorithm": "bayesian_gaussian_mixture",
            "params": params,
            "data": {"generator": SEED_BLOBS},
            "include": [],
        },
    )
    ref = BayesianGaussianMixture(**params).fit(seed_points())
    listed = client.get("/v1/models", params={"limit": 1}).json()["items"][0]
    for resource in (body, client.get(f"/v1/models/{body['id']}").json(), listed):
        for name in (
            "weight_concentration_prior",
            "mean_precision_prior",
            "mean_prior",
            "degrees_of_freedom_prior",
            "covariance_prior",
        ):
            np.testing.assert_array_equal(resource[name], getattr(ref, f"{name}_"), err_msg=name)


def test_bayesian_prior_shapes_are_checked(client: TestClient) -> None:
    r = client.post(
        "/v1/models",
        json={
            "algorithm": "bayesian_gaussian_mixture",
            "params": {"n_components": 2, "mean_prior": [0.0, 0.0, 0.0]},
            "data": {"generator": SEED_BLOBS},
        },
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "params", "mean_prior"]
    r = client.post(
        "/v1/models",
        json={
            "algorithm": "bayesian_gaussian_mixture",
            "params": {"n_components": 2, "degrees_of_freedom_prior": 0.5},
            "data": {"generator": SEED_BLOBS},
        },
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "params", "degrees_of_freedom_prior"]


def test_minibatch_kmeans_equals_sklearn(client: TestClient) -> None:
    params = {"n_clusters": 4, "random_state": 0, "batch_size": 64, "n_init": 3}
    body = fit(
        client,
        {
            "algorithm": "minibatch_kmeans",
            "params": params,
            "data": {"generator": SEED_BLOBS},
            "include": ["labels", "distances"],
        },
    )
    X = seed_points()
    ref = MiniBatchKMeans(**params).fit(X)
    np.testing.assert_allclose(body["means"], ref.cluster_centers_, rtol=RTOL)
    assert body["inertia"] == pytest.approx(ref.inertia_, rel=RTOL)
    assert body["n_iter"] == ref.n_iter_
    assert body["n_steps"] == ref.n_steps_
    assert body["labels"] == ref.labels_.tolist()
    np.testing.assert_allclose(body["distances"], ref.transform(X), rtol=RTOL)
    r = client.post(f"/v1/models/{body['id']}/predict", json={"points": X[:7].tolist()})
    assert r.json()["labels"] == ref.predict(X[:7]).tolist()


def test_recovery_report_matches_true_components(client: TestClient) -> None:
    body = fit(
        client,
        {
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 2, "random_state": 0},
            "data": {"generator": SCENE},
            "include": ["labels"],
        },
    )
    X, y = scene_points()
    ref = GaussianMixture(n_components=2, random_state=0).fit(X)
    true_means = np.array([c["mean"] for c in SCENE["components"]])
    true_covs = np.array([c["cov"] for c in SCENE["components"]])
    rows, cols = linear_sum_assignment(cdist(true_means, ref.means_))
    rec = body["recovery"]
    assert rec["adjusted_rand_score"] == pytest.approx(
        adjusted_rand_score(y, ref.predict(X)), rel=RTOL
    )
    for item, t, c in zip(rec["matching"], rows, cols, strict=True):
        assert (item["true_component"], item["component"]) == (t, c)
        assert item["mean_error"] == pytest.approx(
            np.linalg.norm(ref.means_[c] - true_means[t]), rel=RTOL
        )
        assert item["covariance_error"] == pytest.approx(
            np.linalg.norm(ref.covariances_[c] - true_covs[t]), rel=RTOL
        )
    km = fit(
        client,
        {"algorithm": "kmeans", "params": {"n_clusters": 2}, "data": {"generator": SCENE}},
    )
    assert all(m["covariance_error"] is None for m in km["recovery"]["matching"])
    plain = fit(
        client,
        {"algorithm": "kmeans", "params": {"n_clusters": 2}, "data": {"points": X.tolist()}},
    )
    assert plain.get("recovery") is None


def test_align_to_permutes_components_to_the_reference(client: TestClient) -> None:
    base = {"algorithm": "gaussian_mixture", "data": {"generator": SEED_BLOBS}}
    ref = fit(client, {**base, "params": {"n_components": 4, "random_state": 0}})
    for seed in range(1, 6):
        params = {"n_components": 4, "random_state": seed, "init_params": "random"}
        new = fit(client, {**base, "params": params, "align_to": ref["id"]})
        perm = new["alignment"]["permutation"]
        X = seed_points()
        raw = GaussianMixture(**params).fit(X)
        np.testing.assert_allclose(new["means"], raw.means_[perm], rtol=RTOL)
        np.testing.assert_allclose(new["weights"], raw.weights_[perm], rtol=RTOL)
        # no other order puts the means closer, in total, to the reference's
        cost = cdist(np.array(ref["means"]), raw.means_)
        chosen = cost[np.arange(4), perm].sum()
        assert all(chosen <= cost[np.arange(4), list(p)].sum() + 1e-12 for p in permutations(4))
        inverse = np.argsort(perm)
        assert new["labels"] == inverse[raw.predict(X)].tolist()
        r = client.post(f"/v1/models/{new['id']}/predict", json={"points": X[:20].tolist()})
        np.testing.assert_allclose(
            r.json()["probabilities"], raw.predict_proba(X[:20])[:, perm], rtol=RTOL, atol=1e-300
        )


def test_align_to_refuses_other_shapes(client: TestClient, gmm: dict[str, Any]) -> None:
    r = client.post(
        "/v1/models",
        json={
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 3},
            "data": {"generator": SEED_BLOBS},
            "align_to": gmm["id"],
        },
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "align_to"]
    r = client.post(
        "/v1/models",
        json={
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 4},
            "data": {"generator": SEED_BLOBS},
            "align_to": "0" * 28,
        },
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "align_to"]
