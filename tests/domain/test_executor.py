"""Killable fit workers: a fit past the time limit is stopped and nothing is stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.mixture import GaussianMixture

from service.config import Settings
from service.domain.runtime.executor import ProcessFitRunner
from service.errors import FitFailed, FitTimeout
from service.main import create_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runner() -> ProcessFitRunner:
    # No test here waits for this limit to pass (those that do make their own runner).
    r = ProcessFitRunner(size=1, timeout=15.0)
    yield r  # type: ignore[misc]
    r.close()


def test_worker_fit_equals_inline_fit(runner: ProcessFitRunner) -> None:
    X = np.random.RandomState(0).normal(size=(300, 3))
    params = GaussianMixture(n_components=3, random_state=0).get_params()
    for key in ("verbose", "verbose_interval", "warm_start"):
        params.pop(key)
    fitted = runner("gaussian_mixture", params, X)
    ref = GaussianMixture(**params).fit(X)
    np.testing.assert_array_equal(fitted.estimator.means_, ref.means_)


def test_errors_cross_the_process_boundary(runner: ProcessFitRunner) -> None:
    X = np.zeros((10, 2))
    params = {"n_components": 2, "weights_init": np.array([0.2, 0.2])}
    with pytest.raises(FitFailed, match="normalized"):
        runner("gaussian_mixture", params, X)


#: The limit of the tests that wait for it to pass. It starts once the worker has
#: imported sklearn (``_Worker.wait_ready``), so it only has to hold a tiny fit.
SHORT_LIMIT = 5.0


def test_overrunning_fit_is_killed_and_worker_replaced() -> None:
    runner = ProcessFitRunner(size=1, timeout=SHORT_LIMIT)
    try:
        X = np.random.RandomState(0).normal(size=(60_000, 10))
        params = {"n_components": 30, "n_init": 20, "max_iter": 1000, "tol": 0.0}
        with pytest.raises(FitTimeout, match="GMM_FIT_TIMEOUT_SECONDS"):
            runner("gaussian_mixture", {**params, "random_state": 0}, X)
        # the next fit gets a fresh worker and works
        fitted = runner("kmeans", {"n_clusters": 2, "random_state": 0, "n_init": 1}, X[:100])
        assert fitted.estimator.cluster_centers_.shape == (2, 10)
    finally:
        runner.close()


def test_timeout_over_http_stores_nothing(tmp_path: Path) -> None:
    settings = Settings(store_dir=tmp_path / "s", fit_timeout_seconds=SHORT_LIMIT, log_json=False)
    with TestClient(create_app(settings)) as c:
        small = {
            "algorithm": "kmeans",
            "params": {"n_clusters": 2, "random_state": 0},
            "data": {"points": [[0.0, 0.0], [1.0, 1.0], [9.0, 9.0]]},
        }
        assert c.post("/v1/models", json=small).status_code == 201  # warms the worker
        r = c.post(
            "/v1/models",
            json={
                "algorithm": "gaussian_mixture",
                "params": {"n_components": 30, "n_init": 20, "max_iter": 1000, "tol": 0.0},
                "data": {
                    "generator": {
                        "kind": "blobs",
                        "n_samples": 60000,
                        "n_features": 10,
                        "random_state": 0,
                    }
                },
                "include": [],
                "wait": True,  # estimated long: it would otherwise run as a job
            },
        )
        assert r.status_code == 422
        assert r.json()["type"].endswith("fit-timeout")
        assert c.get("/v1/models").json()["total"] == 1
