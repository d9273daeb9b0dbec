"""The remote estimators against a real server, compared with scikit-learn in-process.

Fitted attributes must be the service's, which are sklearn's to the last bit; only
the compiled prediction path (probabilities) is allowed rounding, to 1e-12.
"""

from __future__ import annotations

import pickle
import re
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gmm_client import Client, InvalidInput, NotFound
from gmm_client.sklearn import (
    DEFAULT_TTL_SECONDS,
    RemoteBayesianGaussianMixture,
    RemoteGaussianMixture,
    RemoteKMeans,
    RemoteMiniBatchKMeans,
)
from sklearn.base import clone
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tests.client.jobs_202 import JobService, needs_sync_wait
from tests.helpers_server import ServerProcess, running_server

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(autouse=True)
def _service_url(live_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The estimators find the server as users' code would: ``$GMM_URL``."""
    monkeypatch.setenv("GMM_URL", live_server.base_url)
    yield


@pytest.fixture
def fit_url(fit_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    """``$GMM_URL`` of ``fit_server``: the default server (small fits answer 201) or one
    whose every fit answers 202; the estimators must not tell the difference."""
    monkeypatch.setenv("GMM_URL", fit_server.base_url)
    return fit_server.base_url


def blobs(n: int = 300, seed: int = 3) -> np.ndarray:
    X, _ = make_blobs(n_samples=n, n_features=3, centers=3, cluster_std=1.4, random_state=seed)
    return X


def _assert_mixture_equal(remote: Any, local: Any, X: np.ndarray) -> None:
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(remote, name), getattr(local, name), err_msg=name)
    assert remote.converged_ == local.converged_
    assert remote.n_iter_ == local.n_iter_
    assert remote.lower_bound_ == local.lower_bound_
    assert remote.lower_bounds_ == local.lower_bounds_
    assert remote.n_features_in_ == local.n_features_in_
    np.testing.assert_array_equal(remote.predict(X), local.predict(X))
    np.testing.assert_allclose(remote.predict_proba(X), local.predict_proba(X), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(remote.score_samples(X), local.score_samples(X))
    assert remote.score(X) == local.score(X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.usefixtures("fit_url")
def test_gaussian_mixture_equals_sklearn(covariance_type: str) -> None:
    X = blobs()
    params = {"n_components": 3, "covariance_type": covariance_type, "random_state": 0}
    remote = RemoteGaussianMixture(**params)
    labels = remote.fit_predict(X)
    local = GaussianMixture(**params)
    np.testing.assert_array_equal(labels, local.fit_predict(X))
    _assert_mixture_equal(remote, local, X)
    probe = X[::7] + 0.5
    assert remote.bic(probe) == local.bic(probe)
    assert remote.aic(probe) == local.aic(probe)
    assert isinstance(remote.model_id_, str)
    pts, comps = remote.sample(5)
    ref_pts, ref_comps = local.sample(5)
    np.testing.assert_allclose(pts, ref_pts, rtol=1e-12)
    np.testing.assert_array_equal(comps, ref_comps)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("prior_type", ["dirichlet_process", "dirichlet_distribution"])
@pytest.mark.usefixtures("fit_url")
def test_bayesian_gaussian_mixture_equals_sklearn(covariance_type: str, prior_type: str) -> None:
    X = blobs()
    params = {
        "n_components": 4,
        "covariance_type": covariance_type,
        "weight_concentration_prior_type": prior_type,
        "random_state": 1,
    }
    remote = RemoteBayesianGaussianMixture(**params).fit(X)
    local = BayesianGaussianMixture(**params).fit(X)
    _assert_mixture_equal(remote, local, X)
    for name in (
        "mean_precision_",
        "degrees_of_freedom_",
        "mean_prior_",
        "covariance_prior_",
        "weight_concentration_prior_",
        "mean_precision_prior_",
        "degrees_of_freedom_prior_",
    ):
        np.testing.assert_array_equal(getattr(remote, name), getattr(local, name), err_msg=name)
    if prior_type == "dirichlet_process":
        for r, lo in zip(remote.weight_concentration_, local.weight_concentration_, strict=True):
            np.testing.assert_array_equal(r, lo)
    else:
        np.testing.assert_array_equal(remote.weight_concentration_, local.weight_concentration_)


@pytest.mark.parametrize(
    ("remote_cls", "local_cls", "params"),
    [
        (RemoteKMeans, KMeans, {"n_clusters": 3, "random_state": 0}),
        (RemoteKMeans, KMeans, {"n_clusters": 3, "random_state": 0, "algorithm": "elkan"}),
        (RemoteMiniBatchKMeans, MiniBatchKMeans, {"n_clusters": 3, "random_state": 0}),
    ],
)
@pytest.mark.usefixtures("fit_url")
def test_kmeans_equals_sklearn(remote_cls: type, local_cls: type, params: dict[str, Any]) -> None:
    X = blobs()
    remote = remote_cls(**params).fit(X)
    local = local_cls(**params).fit(X)
    np.testing.assert_array_equal(remote.cluster_centers_, local.cluster_centers_)
    np.testing.assert_array_equal(remote.labels_, local.labels_)
    assert remote.inertia_ == local.inertia_
    assert remote.n_iter_ == local.n_iter_
    np.testing.assert_array_equal(remote.predict(X), local.predict(X))
    np.testing.assert_allclose(remote.transform(X), local.transform(X), rtol=1e-12)
    assert remote.score(X) == pytest.approx(local.score(X), rel=1e-12)
    # sklearn's convention: the class name, lowercased, then the cluster's index
    prefix = remote_cls.__name__.lower()
    assert list(remote.get_feature_names_out()) == [f"{prefix}{i}" for i in range(3)]


@needs_sync_wait
@pytest.mark.usefixtures("fit_url")
def test_a_fit_long_enough_to_be_a_job_has_its_labels() -> None:
    """20,000 x 4, 5 components: a fit the service may run as a job (202) with either
    setting; fit and fit_predict still have the training labels (it was KeyError)."""
    X, _ = make_blobs(n_samples=20_000, n_features=4, centers=5, random_state=0)
    remote = RemoteGaussianMixture(n_components=5, random_state=0)
    local = GaussianMixture(n_components=5, random_state=0)
    np.testing.assert_array_equal(remote.fit_predict(X), local.fit_predict(X))
    np.testing.assert_array_equal(remote.means_, local.means_)
    kmeans = RemoteKMeans(5, random_state=0, n_init=1).fit(X)
    np.testing.assert_array_equal(
        kmeans.labels_, KMeans(5, random_state=0, n_init=1).fit(X).labels_
    )


def test_estimators_read_a_202_fit_from_the_jobs_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a fake service whose fits all answer 202 (the real one is pending)."""
    import functools

    import gmm_client.sklearn
    import httpx
    from gmm_client import Client

    X = np.array([[0.0, 0.0], [0.0, 1.0], [9.0, 9.0], [9.0, 10.0]])
    result = {
        "id": "0123456789abcdef0123456789ab",
        "algorithm": "kmeans",
        "means": [[0.0, 0.5], [9.0, 9.5]],
        "labels": [0, 0, 1, 1],
        "inertia": 1.0,
        "n_iter": 2,
    }
    fake = JobService(result)
    transport = httpx.MockTransport(fake)
    monkeypatch.setattr(
        gmm_client.sklearn, "Client", functools.partial(Client, transport=transport)
    )
    labels = RemoteKMeans(2, random_state=0).fit_predict(X)
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])
    assert fake.calls[-1].endswith("/result") and fake.bodies[0]["include"] == ["labels"]


def test_get_params_are_sklearns_plus_the_connection() -> None:
    pairs = [
        (RemoteGaussianMixture, GaussianMixture),
        (RemoteBayesianGaussianMixture, BayesianGaussianMixture),
        (RemoteKMeans, KMeans),
        (RemoteMiniBatchKMeans, MiniBatchKMeans),
    ]
    for remote_cls, local_cls in pairs:
        remote = remote_cls().get_params()
        assert remote == {
            **local_cls().get_params(),
            "base_url": None,
            "api_key": None,
            "keep": False,
            "ttl_seconds": DEFAULT_TTL_SECONDS,
        }
        assert DEFAULT_TTL_SECONDS == 24 * 3600


def test_clone_and_set_params() -> None:
    gm = RemoteGaussianMixture(n_components=2, random_state=0, ttl_seconds=600).fit(blobs())
    copy = clone(gm)
    assert copy.get_params() == gm.get_params()
    assert copy.ttl_seconds == 600 and copy.keep is False
    kept = clone(RemoteKMeans(3, keep=True))
    assert kept.get_params()["keep"] is True
    assert not hasattr(copy, "means_")
    copy.set_params(n_components=3).fit(blobs())
    assert copy.means_.shape == (3, 3) and gm.means_.shape == (2, 3)


def test_pickle_round_trip_predicts_without_a_live_connection() -> None:
    X = blobs()
    gm = RemoteGaussianMixture(n_components=3, random_state=0).fit(X)
    state = gm.__getstate__()
    assert "_connection" in gm.__dict__ and "_connection" not in state
    again = pickle.loads(pickle.dumps(gm))
    np.testing.assert_array_equal(again.predict(X), gm.predict(X))
    np.testing.assert_array_equal(again.means_, gm.means_)


def test_not_fitted_is_local() -> None:
    for est in (RemoteGaussianMixture(), RemoteKMeans()):
        with pytest.raises(NotFittedError):
            est.predict(np.zeros((2, 2)))


def test_pipeline_with_scaler_equals_sklearn() -> None:
    X = blobs() * [1, 10, 100]
    remote = Pipeline(
        [("scale", StandardScaler()), ("gm", RemoteGaussianMixture(3, random_state=0))]
    )
    local = Pipeline([("scale", StandardScaler()), ("gm", GaussianMixture(3, random_state=0))])
    np.testing.assert_array_equal(remote.fit(X).predict(X), local.fit(X).predict(X))
    assert remote.score(X) == local.score(X)


def test_grid_search_picks_what_sklearn_picks() -> None:
    X = blobs(240)
    grid = {"n_components": [1, 2, 3, 4]}
    remote = GridSearchCV(RemoteGaussianMixture(random_state=0), grid, cv=3).fit(X)
    local = GridSearchCV(GaussianMixture(random_state=0), grid, cv=3).fit(X)
    assert remote.best_params_ == local.best_params_
    np.testing.assert_array_equal(
        remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )


def test_random_state_instance_draws_a_seed_and_advances() -> None:
    X = blobs()
    rs = np.random.RandomState(0)
    first = RemoteGaussianMixture(3, init_params="random", random_state=rs).fit(X)
    position = rs.get_state()[2]
    second = RemoteGaussianMixture(3, init_params="random", random_state=rs).fit(X)
    assert rs.get_state()[2] != position
    seed = np.random.RandomState(0).randint(np.iinfo(np.int32).max)
    same = GaussianMixture(3, init_params="random", random_state=seed).fit(X)
    np.testing.assert_array_equal(first.means_, same.means_)
    assert second.model_id_ != first.model_id_


def test_service_warnings_are_raised_again_locally() -> None:
    with pytest.warns(ConvergenceWarning):
        RemoteGaussianMixture(3, max_iter=1, random_state=0).fit(blobs())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RemoteGaussianMixture(3, random_state=0).fit(blobs())


def test_service_problems_become_value_error_with_the_problem_as_cause() -> None:
    with pytest.raises(ValueError, match="n_samples >= n_components") as info:
        RemoteGaussianMixture(5).fit(blobs()[:3])
    assert isinstance(info.value.__cause__, InvalidInput)
    with pytest.raises(ValueError, match="means_init"):
        RemoteGaussianMixture(2, means_init=np.zeros((3, 3))).fit(blobs())


def test_local_validation_speaks_sklearn() -> None:
    with pytest.raises(ValueError, match="covariance_type"):
        RemoteGaussianMixture(covariance_type="bad").fit(blobs())
    with pytest.raises(ValueError, match="NaN"):
        RemoteGaussianMixture().fit(np.full((4, 2), np.nan))
    gm = RemoteGaussianMixture(2, random_state=0).fit(blobs())
    with pytest.raises(ValueError, match="features"):
        gm.predict(np.zeros((2, 5)))


def test_sparse_input_is_densified() -> None:
    import scipy.sparse as sp

    X = blobs()
    remote = RemoteKMeans(3, random_state=0).fit(sp.csr_matrix(X))
    np.testing.assert_array_equal(
        remote.cluster_centers_, KMeans(3, random_state=0).fit(X).cluster_centers_
    )


# -- models a fit leaves on the service ---------------------------------------------------


def _expiry(resource: dict[str, Any]) -> datetime | None:
    value = resource.get("expires_at")
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_fits_expire_in_a_day_and_a_refit_deletes_the_model_it_replaces(
    gmm: Client,
) -> None:
    X = blobs()
    gm = RemoteGaussianMixture(2, random_state=0).fit(X)
    stored = gmm.get_model(gm.model_id_)
    expires = _expiry(stored)
    assert expires is not None and gm.model_expires_at_ == stored["expires_at"]
    in_a_day = datetime.now(UTC) + timedelta(seconds=DEFAULT_TTL_SECONDS)
    assert abs((expires - in_a_day).total_seconds()) < 300
    first = gm.model_id_
    gm.set_params(n_components=3).fit(X)
    assert gm.model_id_ != first
    with pytest.raises(NotFound):
        gmm.get_model(first)
    assert gmm.get_model(gm.model_id_)["n_components"] == 3
    # A fitted estimator asked after its model went says why.
    gmm.delete_model(gm.model_id_)
    with pytest.raises(NotFound, match="keep=True"):
        gm.predict(X)


def test_kept_models_have_no_expiry_and_are_left_by_a_refit(gmm: Client) -> None:
    X = blobs()
    km = RemoteKMeans(3, random_state=0, keep=True).fit(X)
    assert km.model_expires_at_ is None and _expiry(gmm.get_model(km.model_id_)) is None
    kept = km.model_id_
    km.fit(X)
    assert gmm.get_model(kept)["id"] == kept  # kept: not deleted by the refit
    # A refit without keep still leaves the model that was stored to stay.
    second = km.model_id_
    km.set_params(keep=False).fit(X)
    assert gmm.get_model(second)["id"] == second
    assert _expiry(gmm.get_model(km.model_id_)) is not None
    for model_id in (kept, second, km.model_id_):
        gmm.delete_model(model_id)


def test_ttl_seconds_is_checked_as_sklearn_checks_parameters() -> None:
    for bad in (0, -5, 1.5, "1"):
        with pytest.raises(ValueError, match="ttl_seconds"):
            RemoteGaussianMixture(ttl_seconds=bad).fit(blobs())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep"):
        RemoteKMeans(keep="yes").fit(blobs())  # type: ignore[arg-type]


#: Short enough to wait for, long enough that no fold's model expires between its fit
#: and its scoring (a fraction of a second each) on a loaded machine.
SEARCH_TTL_SECONDS = 5


@pytest.fixture(scope="module")
def sweeping_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own (nothing else stores models there) that deletes expired
    models every 0.2 s instead of every 30 s."""
    cwd = tmp_path_factory.mktemp("sweeping-server")
    env = {
        "GMM_STORE_DIR": str(cwd / "store"),
        "GMM_SECRET_KEY": "sweep-tests-key",
        "GMM_SWEEP_INTERVAL_SECONDS": "0.2",
        "GMM_LOG_LEVEL": "warning",
    }
    with running_server(env, cwd=cwd) as server:
        yield server


def _fits_stored(server: ServerProcess) -> float:
    """Fits the server stored, by its own count (``gmm_fits_total``)."""
    metrics = server.client.get("/metrics").text
    found = re.findall(r'^gmm_fits_total\{[^}]*outcome="stored"[^}]*\} (\S+)$', metrics, re.M)
    return sum(float(n) for n in found)


@pytest.mark.slow
def test_grid_search_leaves_nothing_behind_once_its_ttl_passes(
    sweeping_server: ServerProcess,
) -> None:
    """5 folds x 3 values, and the refit of the best: 16 models stored, each with an
    expiry, then none once it has passed: no model, no dataset, no folder."""
    X = blobs(240)
    grid = {"n_components": [1, 2, 3]}
    base = RemoteGaussianMixture(
        random_state=0, ttl_seconds=SEARCH_TTL_SECONDS, base_url=sweeping_server.base_url
    )
    before = _fits_stored(sweeping_server)
    remote = GridSearchCV(base, grid, cv=5).fit(X)
    local = GridSearchCV(GaussianMixture(random_state=0), grid, cv=5).fit(X)
    assert remote.best_params_ == local.best_params_
    assert _fits_stored(sweeping_server) - before == 5 * 3 + 1
    with Client(sweeping_server.base_url) as gmm:
        left = gmm.list_models(limit=100)["items"]
        assert remote.best_estimator_.model_id_ in {m["id"] for m in left}
        assert all(_expiry(m) is not None for m in left), left
        deadline = time.monotonic() + SEARCH_TTL_SECONDS + 60
        while gmm.list_models()["total"] or gmm.list_datasets()["total"]:
            assert time.monotonic() < deadline, gmm.list_models()
            time.sleep(0.2)
    store = Path(sweeping_server.log_path).parent / "store"
    for folder in ("models", "datasets"):
        assert not list((store / folder).iterdir()), folder
