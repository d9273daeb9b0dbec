"""The service with ``GMM_DASK_SCHEDULER``: fits, sweeps and comparisons run on a real
``distributed.LocalCluster`` (2 worker processes, started here on loopback), give
sklearn's numbers, report progress, cancel, and end when workers die."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from bench.model_selection import local_cluster
from service.config import Settings
from service.main import create_app
from tests.conftest import SEED_BLOBS, require, wait_job

distributed = require("distributed")

pytestmark = pytest.mark.slow

COV_TYPES = ["full", "tied", "diag", "spherical"]
KMEANS = {"algorithm": "kmeans", "params": {"n_clusters": 4}}


def long_fit(max_iter: int, **body: Any) -> dict[str, Any]:
    """A mixture fit of 20,000 x 6 points that runs ``max_iter`` EM iterations (tol=0)."""
    X, _ = make_blobs(n_samples=20_000, n_features=6, centers=8, random_state=0)
    return {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 8, "tol": 0.0, "max_iter": max_iter, "random_state": 0},
        "data": {"points": X.tolist()},
        **body,
    }


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with local_cluster(2) as cluster, distributed.Client(cluster, set_as_default=False) as c:
        yield c


def _settings(tmp_path: Path, scheduler: str | None, **extra: Any) -> Settings:
    return Settings(
        store_dir=tmp_path / "store",
        secret_key="test-secret-key",
        dask_scheduler=scheduler,
        **extra,
    )


@pytest.fixture
def api(tmp_path: Path, cluster: Any) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(tmp_path, cluster.scheduler.address))) as c:
        yield c


def seed_X() -> np.ndarray:
    X, _ = make_blobs(**{k: v for k, v in SEED_BLOBS.items() if k != "kind"})
    return X


def fit_keys(stream: Any) -> dict[str, str]:
    """The fit tasks the cluster ran: key -> worker address."""
    return {t["key"]: t["worker"] for t in stream.data if str(t["key"]).startswith("gmm-fit-")}


def test_readyz_reports_the_scheduler_and_its_workers(api: TestClient, cluster: Any) -> None:
    response = api.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "dask": {"scheduler": cluster.scheduler.address, "workers": 2, "threads": 2},
    }


def test_a_sweep_fans_out_over_the_workers_and_equals_sklearn(
    api: TestClient, cluster: Any
) -> None:
    X = seed_X()
    params = {"random_state": 0}
    body = {
        "data": {"points": X.tolist()},
        "grid": {"n_components": {"min": 1, "max": 4}, "covariance_type": COV_TYPES},
        "params": params,
    }
    with distributed.get_task_stream(cluster) as stream:
        response = api.post("/v1/model-selection", json=body)
    assert response.status_code == 200, response.text
    cells = response.json()["scores"]
    assert len(cells) == 16
    for cell in cells:
        gm = GaussianMixture(
            n_components=cell["n_components"], covariance_type=cell["covariance_type"], **params
        ).fit(X)
        np.testing.assert_allclose(cell["bic"], gm.bic(X), rtol=1e-10)
        np.testing.assert_allclose(cell["lower_bound"], gm.lower_bound_, rtol=1e-10)
        assert cell["n_iter"] == gm.n_iter_
    ran = fit_keys(stream)
    assert len(ran) == 16  # one task per cell
    assert set(ran.values()) == set(cluster.scheduler_info()["workers"])  # on both


def test_a_fit_job_reports_iterations_and_stores_sklearns_model(
    api: TestClient, cluster: Any
) -> None:
    X = seed_X()
    params = {"n_components": 4, "covariance_type": "full", "random_state": 3}
    with distributed.get_task_stream(cluster) as stream:
        accepted = api.post(
            "/v1/models",
            json={
                "algorithm": "gaussian_mixture",
                "params": params,
                "data": {"points": X.tolist()},
                "wait": False,
            },
        )
        assert accepted.status_code == 202, accepted.text
        job = wait_job(api, accepted.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["progress"]["unit"] == "iterations"
    model = api.get(f"/v1/models/{job['model_id']}").json()
    gm = GaussianMixture(**params).fit(X)
    np.testing.assert_allclose(model["means"], gm.means_, rtol=1e-10)
    np.testing.assert_allclose(model["covariances"], gm.covariances_, rtol=1e-10)
    assert model["n_iter"] == gm.n_iter_
    assert len(fit_keys(stream)) == 1


def test_cancel_stops_the_task_on_the_worker(api: TestClient, cluster: Any) -> None:
    job_id = api.post("/v1/models", json=long_fit(10_000, wait=False)).json()["id"]
    deadline = time.monotonic() + 60
    while api.get(f"/v1/jobs/{job_id}").json()["progress"]["done"] < 2:
        assert time.monotonic() < deadline, "the fit never reported an iteration"
        time.sleep(0.1)
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code in (200, 202)
    job = wait_job(api, job_id, 30)
    assert job["status"] == "cancelled" and job["model_id"] is None
    deadline = time.monotonic() + 10
    while any(cluster.processing().values()):  # the worker's fit stopped too
        assert time.monotonic() < deadline, cluster.processing()
        time.sleep(0.1)


def test_losing_a_worker_mid_sweep_still_ends_the_job(tmp_path: Path) -> None:
    """A worker process killed (SIGKILL) while the sweep runs: the scheduler reruns its
    task elsewhere (its nanny restarts it), and the job ends with sklearn's numbers."""
    X, _ = make_blobs(n_samples=20_000, n_features=4, centers=5, random_state=1)
    params = {"random_state": 0, "tol": 1e-6, "max_iter": 300}
    with (
        local_cluster(2) as lc,
        distributed.Client(lc, set_as_default=False) as dc,
        TestClient(create_app(_settings(tmp_path, lc.scheduler_address))) as api,
    ):
        body = {
            "data": {"points": X.tolist()},
            "grid": {"n_components": [3, 5, 7], "covariance_type": ["full", "diag"]},
            "params": params,
            "wait": False,
        }
        job_id = api.post("/v1/model-selection", json=body).json()["id"]
        deadline = time.monotonic() + 60
        while not any(dc.processing().values()):
            assert time.monotonic() < deadline, "no fit task ever started"
            time.sleep(0.05)
        busy = next(addr for addr, keys in dc.processing().items() if keys)
        pid = dc.run(os.getpid, workers=[busy])[busy]
        os.kill(pid, signal.SIGKILL)
        job = wait_job(api, job_id, 240)
    assert job["status"] == "succeeded", job["error"]
    for cell in job["result"]["scores"]:
        gm = GaussianMixture(
            n_components=cell["n_components"], covariance_type=cell["covariance_type"], **params
        ).fit(X)
        np.testing.assert_allclose(cell["bic"], gm.bic(X), rtol=1e-9)


def test_a_cluster_with_no_worker_left_fails_the_job_with_the_reason(tmp_path: Path) -> None:
    X = seed_X()
    with local_cluster(0) as lc:
        app = create_app(_settings(tmp_path, lc.scheduler_address))
        with TestClient(app) as api:
            app.state.services.training._fit_runner._no_worker_seconds = 1.0
            accepted = api.post(
                "/v1/models",
                json={
                    "algorithm": "gaussian_mixture",
                    "params": {"n_components": 2},
                    "data": {"points": X.tolist()},
                    "wait": False,
                },
            )
            job = wait_job(api, accepted.json()["id"], 60)
            # Not ready: every fit would wait for a worker and fail.
            ready = api.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert "no workers" in ready.json()["detail"]
    assert job["status"] == "failed"
    assert job["error"]["status"] == 503
    assert "no worker" in job["error"]["detail"]


def test_an_unreachable_scheduler_is_a_503_and_predictions_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nobody listens there: each try to connect waits out the connect limit (10 s by
    # default, twice here) before the 503 it is about. 2 s says the same.
    from service.domain.runtime.cluster import DaskCluster

    monkeypatch.setitem(DaskCluster.__init__.__kwdefaults__, "connect_seconds", 2.0)
    X = seed_X()
    with TestClient(create_app(_settings(tmp_path, None))) as local:
        fitted = local.post(
            "/v1/models",
            json={**KMEANS, "data": {"points": X.tolist()}},
        ).json()
    # The same store, now with a scheduler that nobody runs (a closed port).
    settings = _settings(tmp_path, "tcp://127.0.0.1:9")
    with TestClient(create_app(settings)) as api:
        ready = api.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["type"].endswith(":cluster-unavailable")
        refused = api.post(
            "/v1/models",
            json={**KMEANS, "data": {"points": X.tolist()}},
        )
        assert refused.status_code == 503
        assert "tcp://127.0.0.1:9" in refused.json()["detail"]
        predicted = api.post(f"/v1/models/{fitted['id']}/predict", json={"points": X[:5].tolist()})
        assert predicted.status_code == 200
        assert predicted.json()["labels"] == fitted["labels"][:5]


# -- engine "dask": stored datasets fitted in row chunks ----------------------------------
CHUNK_ROWS = 1_000


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 1,000 rows, so that a test-sized dataset is several chunks."""
    from service.domain.outofcore import chunked

    monkeypatch.setattr(chunked, "CHUNK_BYTES", 8)


def chunk_data(n: int = 5_500, seed: int = 0) -> np.ndarray:
    X, _ = make_blobs(n_samples=n, n_features=3, centers=3, cluster_std=1.5, random_state=seed)
    return X + 50.0  # away from the origin, where raw moments would cancel


def upload(api: TestClient, X: np.ndarray) -> str:
    import io

    buffer = io.BytesIO()
    np.save(buffer, X)
    response = api.post(
        "/v1/datasets", content=buffer.getvalue(), headers={"Content-Type": "application/x-npy"}
    )
    assert response.status_code in (200, 201), response.text
    dataset_id: str = response.json()["id"]
    return dataset_id


def sklearn_mixture(params: dict[str, Any]) -> GaussianMixture:
    """The GaussianMixture a request's params stand for (initial values as arrays)."""
    return GaussianMixture(
        **{k: np.asarray(v) if k.endswith("_init") else v for k, v in params.items()}
    )


def initial_values(X: np.ndarray, cov: str) -> dict[str, Any]:
    means = X[[5, 2_000, 4_000]]
    precisions = {
        "full": np.stack([np.eye(3) * 0.5] * 3),
        "tied": np.eye(3) * 0.5,
        "diag": np.full((3, 3), 0.5),
        "spherical": np.full(3, 0.5),
    }[cov]
    return {
        "weights_init": [0.3, 0.3, 0.4],
        "means_init": means.tolist(),
        "precisions_init": precisions.tolist(),
    }


@pytest.mark.parametrize("cov", COV_TYPES)
def test_a_chunked_fit_equals_sklearn_from_the_same_start(
    api: TestClient, cluster: Any, small_chunks: None, cov: str
) -> None:
    X = chunk_data()
    dataset_id = upload(api, X)
    params = {"n_components": 3, "covariance_type": cov, "tol": 1e-6, **initial_values(X, cov)}
    with distributed.get_task_stream(cluster) as stream:
        response = api.post(
            "/v1/models",
            json={
                "algorithm": "gaussian_mixture",
                "engine": "dask",
                "params": params,
                "data": {"dataset_id": dataset_id},
                "include": ["labels"],
            },
        )
    assert response.status_code == 201, response.text
    model = response.json()
    gm = sklearn_mixture(params).fit(X)
    for ours, theirs in (
        ("means", gm.means_),
        ("weights", gm.weights_),
        ("covariances", gm.covariances_),
        ("precisions", gm.precisions_),
    ):
        np.testing.assert_allclose(model[ours], theirs, rtol=1e-8, err_msg=ours)
    assert model["n_iter"] == gm.n_iter_ and model["converged"] is gm.converged_
    np.testing.assert_allclose(model["bic"], gm.bic(X), rtol=1e-8)
    assert model["labels"] == gm.predict(X).tolist()
    # The workers read the rows: six 1,000-row chunks per pass, no fit task, no upload.
    reads = [t for t in stream.data if "read" in str(t["key"])]
    assert len(reads) >= 6 * gm.n_iter_
    assert {t["worker"] for t in reads} == set(cluster.scheduler_info()["workers"])
    # An ordinary model: predict answers sklearn's labels, and the rest all works.
    predicted = api.post(f"/v1/models/{model['id']}/predict", json={"points": X[:50].tolist()})
    assert predicted.json()["labels"] == gm.predict(X[:50]).tolist()
    if cov == "full":
        assert_serves_like_any_model(api, model["id"], X, gm)


def assert_serves_like_any_model(
    api: TestClient, model_id: str, X: np.ndarray, gm: GaussianMixture
) -> None:
    scored = api.post(f"/v1/models/{model_id}/score", json={"points": X[:20].tolist()})
    np.testing.assert_allclose(scored.json()["log_likelihood"], gm.score_samples(X[:20]), rtol=1e-8)
    sampled = api.post(f"/v1/models/{model_id}/sample", json={"n_samples": 5, "random_state": 0})
    assert sampled.status_code == 200 and len(sampled.json()["points"]) == 5
    plot = api.get(f"/v1/models/{model_id}/plot?format=png")
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    exported = api.get(f"/v1/models/{model_id}/export")
    assert exported.status_code == 200, exported.text
    infer = api.post(
        f"/v2/models/{model_id}/infer",
        json={
            "inputs": [
                {
                    "name": "points",
                    "shape": [2, 3],
                    "datatype": "FP64",
                    "data": X[:2].ravel().tolist(),
                }
            ]
        },
    )
    assert infer.status_code == 200, infer.text
    labels = next(o for o in infer.json()["outputs"] if o["name"] == "labels")
    assert labels["data"] == gm.predict(X[:2]).tolist()


def test_a_chunked_kmeans_equals_sklearns_lloyd(api: TestClient, small_chunks: None) -> None:
    from sklearn.cluster import KMeans

    X = chunk_data(seed=4)
    init = X[[1, 2_500, 5_000]]
    response = api.post(
        "/v1/models",
        json={
            "algorithm": "kmeans",
            "engine": "dask",
            "params": {"n_clusters": 3, "init": init.tolist(), "n_init": 1},
            "data": {"dataset_id": upload(api, X)},
            "include": ["labels", "distances"],
        },
    )
    assert response.status_code == 201, response.text
    model = response.json()
    km = KMeans(3, init=init, n_init=1).fit(X)
    np.testing.assert_allclose(model["means"], km.cluster_centers_, rtol=1e-8)
    np.testing.assert_allclose(model["inertia"], km.inertia_, rtol=1e-8)
    assert model["n_iter"] == km.n_iter_
    assert model["labels"] == km.labels_.tolist()
    np.testing.assert_allclose(model["distances"], km.transform(X), rtol=1e-8)


def test_a_chunked_fit_job_counts_iterations_and_cancels(
    api: TestClient, cluster: Any, small_chunks: None
) -> None:
    X = chunk_data(20_000, seed=2)
    body = {
        "algorithm": "gaussian_mixture",
        "engine": "dask",
        "params": {"n_components": 6, "tol": 0.0, "max_iter": 5_000, "random_state": 0},
        "data": {"dataset_id": upload(api, X)},
        "wait": False,
    }
    accepted = api.post("/v1/models", json=body)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    assert accepted.json()["request"]["engine"] == "dask"
    deadline = time.monotonic() + 60
    while (progress := api.get(f"/v1/jobs/{job_id}").json()["progress"])["done"] < 3:
        assert time.monotonic() < deadline, progress
        time.sleep(0.1)
    assert progress["unit"] == "iterations" and progress["total"] == 5_000
    assert progress["lower_bound"] is not None
    api.post(f"/v1/jobs/{job_id}/cancel")
    job = wait_job(api, job_id, 30)
    assert job["status"] == "cancelled" and job["model_id"] is None
    assert api.get("/v1/models").json()["total"] == 0


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"params": {"n_components": 2, "n_init": 2}}, ["body", "params", "n_init"]),
        (
            {"params": {"n_components": 2, "init_params": "random"}},
            ["body", "params", "init_params"],
        ),
        ({"algorithm": "bayesian_gaussian_mixture"}, ["body", "algorithm"]),
        ({"algorithm": "kmeans", "params": {"init": "random"}}, ["body", "params", "init"]),
        ({"algorithm": "kmeans", "sample_weight": [1.0] * 200}, ["body", "sample_weight"]),
        ({"data": {"dataset_id": "0" * 64}}, ["body", "data", "dataset_id"]),
    ],
)
def test_what_a_chunked_fit_cannot_do_is_refused_by_name(
    api: TestClient, change: dict[str, Any], loc: list[str]
) -> None:
    body = {
        "algorithm": "gaussian_mixture",
        "engine": "dask",
        "data": {"points": seed_X().tolist()},
    }
    response = api.post("/v1/models", json=body | change)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == loc


def test_engine_dask_without_a_cluster_names_the_setting(client: TestClient) -> None:
    body = {
        "algorithm": "gaussian_mixture",
        "engine": "dask",
        "data": {"points": seed_X().tolist()},
    }
    response = client.post("/v1/models", json=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "engine"]
    assert "GMM_DASK_SCHEDULER" in response.json()["detail"]


def test_workers_read_chunks_straight_from_the_s3_store(
    tmp_path: Path, cluster: Any, moto_url: str, s3_bucket: str, small_chunks: None
) -> None:
    """With the shared S3 store the workers fetch their rows with ranged GETs (their own
    credentials, the endpoint from the service); the fit equals sklearn's."""
    env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}

    def set_env(env: dict[str, str]) -> None:
        os.environ.update(env)

    cluster.run(set_env, env)
    settings = _settings(
        tmp_path,
        cluster.scheduler.address,
        store_url=f"s3://{s3_bucket}/gmm",
        s3_endpoint_url=moto_url,
    )
    X = chunk_data(seed=7)
    params = {"n_components": 3, "covariance_type": "diag", **initial_values(X, "diag")}
    with TestClient(create_app(settings)) as api:
        response = api.post(
            "/v1/models",
            json={
                "algorithm": "gaussian_mixture",
                "engine": "dask",
                "params": params,
                "data": {"dataset_id": upload(api, X)},
                "include": [],
            },
        )
    assert response.status_code == 201, response.text
    gm = sklearn_mixture(params).fit(X)
    np.testing.assert_allclose(response.json()["means"], gm.means_, rtol=1e-8)
    np.testing.assert_allclose(response.json()["covariances"], gm.covariances_, rtol=1e-8)


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_a_comparison_on_the_cluster_answers_what_the_local_one_does(
    api: TestClient, tmp_path: Path, cluster: Any
) -> None:
    body = {
        "data": {"generator": SEED_BLOBS},
        "algorithms": [
            {"algorithm": "kmeans", "params": {"n_clusters": 4, "random_state": 0}},
            {"algorithm": "gaussian_mixture", "params": {"n_components": 4, "random_state": 0}},
            {
                "algorithm": "bayesian_gaussian_mixture",
                "params": {"n_components": 5, "random_state": 1},
            },
        ],
    }
    with distributed.get_task_stream(cluster) as stream:
        remote = api.post("/v1/comparisons", json=body)
    assert remote.status_code == 200, remote.text
    assert len(fit_keys(stream)) == 3
    with TestClient(create_app(_settings(tmp_path / "local", None))) as local_api:
        local = local_api.post("/v1/comparisons", json=body)
    assert _without_timings(remote.json()) == _without_timings(local.json())


def test_the_fit_queue_and_429_hold_with_the_cluster(tmp_path: Path, cluster: Any) -> None:
    import threading

    settings = _settings(
        tmp_path, cluster.scheduler.address, max_concurrent_fits=1, fit_queue_length=0
    )
    body = long_fit(300, include=[], wait=True)
    with TestClient(create_app(settings)) as api:
        answers: list[int] = []
        first = threading.Thread(
            target=lambda: answers.append(api.post("/v1/models", json=body).status_code)
        )
        first.start()
        deadline = time.monotonic() + 60
        while not any(cluster.processing().values()):
            assert time.monotonic() < deadline, "the first fit never reached a worker"
            time.sleep(0.05)
        busy = api.post("/v1/models", json={**body, "params": {"n_components": 2}})
        assert busy.status_code == 429, busy.text
        assert int(busy.headers["Retry-After"]) >= 1
        first.join(120)
    assert answers == [201]


def _executing(dask_worker: Any) -> int:
    return int(dask_worker.state.executing_count)


def test_a_fit_past_the_time_limit_is_stopped_on_the_worker(tmp_path: Path, cluster: Any) -> None:
    settings = _settings(tmp_path, cluster.scheduler.address, fit_timeout_seconds=1.0)
    with TestClient(create_app(settings)) as api:
        response = api.post("/v1/models", json=long_fit(10_000, include=[], wait=True))
        assert response.status_code == 422, response.text
        assert response.json()["type"].endswith(":fit-timeout")
        assert api.get("/v1/models").json()["total"] == 0
    deadline = time.monotonic() + 15
    while sum(cluster.run(_executing).values()):  # the worker's fit stopped as well
        assert time.monotonic() < deadline, "the timed-out fit kept running on a worker"
        time.sleep(0.2)


def test_a_chunked_fit_keeps_the_feature_limit(tmp_path: Path, cluster: Any) -> None:
    """GMM_MAX_POINTS does not bind a chunked fit (its points never enter the service),
    GMM_MAX_FEATURES still does."""
    with TestClient(create_app(_settings(tmp_path, cluster.scheduler.address))) as api:
        wide = upload(api, chunk_data(50))  # 50 x 3, stored under the default limits
    settings = _settings(tmp_path, cluster.scheduler.address, max_features=2, max_points=10)
    with TestClient(create_app(settings)) as api:
        body = {"algorithm": "kmeans", "engine": "dask", "data": {"dataset_id": wide}}
        response = api.post("/v1/models", json=body)
    assert response.status_code == 413, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "data"]
    assert "GMM_MAX_FEATURES" in response.json()["detail"]


def test_a_future_the_scheduler_cancelled_is_submitted_once_more(tmp_path: Path) -> None:
    """A fit whose future comes back cancelled without the service cancelling it (a
    worker killed while the task's inputs moved; distributed issue 8514 makes that an
    ``UnboundLocalError``) is run again as a new task, and the answer is sklearn's.
    A second such loss is a 503, as any lost fit is."""
    from distributed.client import FutureCancelledError

    X = seed_X()
    with (
        local_cluster(1) as lc,
        TestClient(create_app(_settings(tmp_path, lc.scheduler_address))) as api,
    ):
        runner = api.app.state.services.training._fit_runner  # type: ignore[attr-defined]
        real_wait = runner._wait
        waited: list[str] = []

        def losing_first(client: Any, name: str, future: Any, progress: Any) -> Any:
            waited.append(name)
            if len(waited) == 1:
                future.result()  # the task runs; then the scheduler "loses" it
                lost = _CancelledFuture(FutureCancelledError(name, "lost with its worker"))
                return real_wait(client, name, lost, progress)
            return real_wait(client, name, future, progress)

        runner._wait = losing_first
        body = {"algorithm": "gaussian_mixture", "params": {"n_components": 2, "random_state": 0},
                "data": {"points": X.tolist()}, "include": [], "wait": True}  # fmt: skip
        r = api.post("/v1/models", json=body)
        assert r.status_code == 201, r.text
        assert len(waited) == 2 and waited[1] == f"{waited[0]}-again"
        ref = GaussianMixture(n_components=2, random_state=0).fit(X)
        np.testing.assert_allclose(r.json()["means"], ref.means_, rtol=1e-10)

        waited.clear()
        runner._wait = lambda client, name, future, progress: real_wait(
            client, name, _CancelledFuture(UnboundLocalError("x")), progress
        )
        r = api.post("/v1/models", json=body)
        assert r.status_code == 503, r.text
        assert r.json()["type"].endswith("cluster-unavailable")


class _CancelledFuture:
    """Stands in for a future whose ``result`` raises what a cancelled one raises."""

    def __init__(self, exc: BaseException) -> None:
        self._exc = exc

    def result(self, timeout: float | None = None) -> Any:
        raise self._exc
