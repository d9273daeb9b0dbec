"""Property: a fit over HTTP equals the same fit in-process, for data nobody hand-picked.

Hypothesis draws small datasets (make_blobs specs, or raw points sent as JSON) and
estimator settings; each example is fitted by the service and by sklearn here, and
every fitted number must agree to rtol 1e-10, labels exactly, warnings by message.
Few examples per test keep this quick; the parametrised axes (covariance type, KMeans
algorithm) make sure every variant is hit each run.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from service.config import Settings
from service.main import create_app

EXAMPLES = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the module: hypothesis examples must not pay for a new app each."""
    store = tmp_path_factory.mktemp("exactness") / "store"
    with TestClient(create_app(Settings(store_dir=store, secret_key="exactness"))) as c:
        yield c


@st.composite
def datasets(draw: st.DrawFn) -> tuple[dict[str, Any], np.ndarray]:
    """A request's ``data`` and the array it stands for."""
    seed = draw(st.integers(0, 2**16))
    n_samples = draw(st.integers(20, 80))
    n_features = draw(st.integers(1, 3))
    if draw(st.booleans()):
        spec = {
            "kind": "blobs",
            "n_samples": n_samples,
            "n_features": n_features,
            "centers": draw(st.integers(1, 4)),
            "cluster_std": draw(st.floats(0.3, 3.0)),
            "random_state": seed,
        }
        X, _ = make_blobs(**{k: v for k, v in spec.items() if k != "kind"})
        return {"generator": spec}, X
    # Raw points: JSON carries float64 exactly (shortest round-trip repr both ways).
    scale = draw(st.floats(1e-3, 1e3))
    X = np.random.RandomState(seed).standard_normal((n_samples, n_features)) * scale
    return {"points": X.tolist()}, X


def assert_close(actual: Any, expected: Any) -> None:
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), rtol=1e-10
    )


def reference_fit(estimator: Any, X: np.ndarray) -> tuple[Any, list[dict[str, str]]]:
    """Fit in-process, recording warnings the way the service reports them.

    When sklearn refuses, the ``ValueError`` takes the estimator's place.
    """
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        try:
            estimator.fit(X)
        except ValueError as exc:
            return exc, []
    seen: list[dict[str, str]] = []
    for w in record:
        item = {"category": w.category.__name__, "message": str(w.message)}
        if item not in seen:
            seen.append(item)
    return estimator, seen


def post_fit(api: TestClient, algorithm: str, params: dict[str, Any], data: dict[str, Any]) -> Any:
    return api.post("/v1/models", json={"algorithm": algorithm, "params": params, "data": data})


def refused_alike(r: Any, fitted: Any) -> bool:
    """When sklearn refuses the fit, the service must refuse it with sklearn's words."""
    if isinstance(fitted, ValueError):
        assert r.status_code == 422, r.text
        assert str(fitted) in r.json()["detail"]
        return True
    return False


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@EXAMPLES
@given(
    data=datasets(),
    n_components=st.integers(1, 4),
    init_params=st.sampled_from(["kmeans", "k-means++", "random", "random_from_data"]),
    n_init=st.integers(1, 2),
    seed=st.integers(0, 2**32 - 1),
)
def test_gaussian_mixture_equals_sklearn(
    api: TestClient,
    covariance_type: str,
    data: tuple[dict[str, Any], np.ndarray],
    n_components: int,
    init_params: str,
    n_init: int,
    seed: int,
) -> None:
    body, X = data
    params = {
        "n_components": n_components,
        "covariance_type": covariance_type,
        "init_params": init_params,
        "n_init": n_init,
        "random_state": seed,
    }
    r = post_fit(api, "gaussian_mixture", params, body)
    gm, caught = reference_fit(GaussianMixture(**params), X)
    if refused_alike(r, gm):
        return
    assert r.status_code == 201, r.text
    model = r.json()

    assert_close(model["means"], gm.means_)
    assert_close(model["weights"], gm.weights_)
    assert_close(model["covariances"], gm.covariances_)
    assert_close(model["precisions"], gm.precisions_)
    assert model["converged"] is bool(gm.converged_)
    assert model["n_iter"] == gm.n_iter_
    assert_close(model["lower_bound"], gm.lower_bound_)
    assert_close(model["bic"], gm.bic(X))
    assert_close(model["aic"], gm.aic(X))
    assert model["labels"] == gm.predict(X).tolist()
    assert_close(model["probabilities"], gm.predict_proba(X))
    assert model["warnings"] == caught

    # A stored model predicts as the in-process one does.
    new = X[::3] + 0.25
    p = api.post(f"/v1/models/{model['id']}/predict", json={"points": new.tolist()})
    assert p.status_code == 200, p.text
    assert p.json()["labels"] == gm.predict(new).tolist()
    assert_close(p.json()["probabilities"], gm.predict_proba(new))
    assert api.delete(f"/v1/models/{model['id']}").status_code == 204


@pytest.mark.parametrize("algorithm", ["lloyd", "elkan"])
@EXAMPLES
@given(
    data=datasets(),
    n_clusters=st.integers(1, 5),
    init=st.sampled_from(["k-means++", "random"]),
    n_init=st.sampled_from(["auto", 1, 3]),
    tol=st.sampled_from([0.0, 1e-4, 1e-2]),
    seed=st.integers(0, 2**32 - 1),
)
def test_kmeans_equals_sklearn(
    api: TestClient,
    algorithm: str,
    data: tuple[dict[str, Any], np.ndarray],
    n_clusters: int,
    init: str,
    n_init: str | int,
    tol: float,
    seed: int,
) -> None:
    body, X = data
    params = {
        "n_clusters": n_clusters,
        "init": init,
        "n_init": n_init,
        "tol": tol,
        "algorithm": algorithm,
        "random_state": seed,
    }
    r = post_fit(api, "kmeans", params, body)
    km, caught = reference_fit(KMeans(**params), X)
    if refused_alike(r, km):
        return
    assert r.status_code == 201, r.text
    model = r.json()

    assert_close(model["means"], km.cluster_centers_)
    assert_close(model["inertia"], km.inertia_)
    assert model["n_iter"] == km.n_iter_
    assert model["labels"] == km.labels_.tolist()
    assert model["warnings"] == caught

    new = X[::3] - 0.5
    p = api.post(f"/v1/models/{model['id']}/predict", json={"points": new.tolist()})
    assert p.status_code == 200, p.text
    assert p.json()["labels"] == km.predict(new).tolist()
    assert_close(p.json()["distances"], km.transform(new))
    assert api.delete(f"/v1/models/{model['id']}").status_code == 204


@pytest.mark.parametrize("algorithm", ["gaussian_mixture", "bayesian_gaussian_mixture"])
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_fit_keeps_its_final_e_step_bit_for_bit(algorithm: str, covariance_type: str) -> None:
    """The training points' weighted log-probabilities kept from the fit's last E-step
    are exactly what computing them again gives, and the estimator is left plain."""
    import pickle

    from service.domain.training import estimators

    X, _ = make_blobs(n_samples=500, n_features=3, centers=3, random_state=1)
    params = {"n_components": 3, "covariance_type": covariance_type, "random_state": 0}
    fitted = estimators.fit(algorithm, params, X)
    est = fitted.estimator
    assert "_estimate_weighted_log_prob" not in vars(est)
    pickle.dumps(est)
    assert fitted.training_wlp is not None
    np.testing.assert_array_equal(fitted.training_wlp, est._estimate_weighted_log_prob(X))
    # sklearn converts integers to a float64 copy: nothing is kept, it is recomputed.
    integers = np.rint(X * 10).astype(np.int64)
    assert estimators.fit(algorithm, params, integers).training_wlp is None
