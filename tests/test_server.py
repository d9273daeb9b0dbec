"""The service as users run it: ``python -m service`` processes over real HTTP.

Several workers and several replicas over one store are the cases a TestClient cannot
show: each process has its own model cache, so a delete in one must still be a 404
in every other one, at most GMM_MODEL_RECHECK_SECONDS later.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from service.config import Settings
from tests.conftest import SEED_BLOBS
from tests.helpers_server import HOST, ServerProcess, free_port, start_servers

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"
#: How late another process may still serve a model deleted elsewhere (the default).
RECHECK_SECONDS: float = Settings.model_fields["model_recheck_seconds"].default


def _past_the_recheck_time(deleted_at: float) -> None:
    """Sleep until every other process must see a delete that returned at ``deleted_at``."""
    time.sleep(max(0.0, deleted_at + RECHECK_SECONDS - time.monotonic()))


StartServers = Callable[..., list[ServerProcess]]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartServers]:
    """``start(env_a, env_b, ...)`` boots servers in parallel; teardown stops every one."""
    started: list[ServerProcess] = []

    def _start(*envs: Mapping[str, str]) -> list[ServerProcess]:
        servers = start_servers(list(envs), cwd=tmp_path)
        started.extend(servers)
        return servers

    yield _start
    for server in started:
        server.stop()


def _fresh_connections(server: ServerProcess) -> httpx.Client:
    """A client that opens a new connection per request, so any worker may answer each."""
    return httpx.Client(base_url=server.base_url, headers={"Connection": "close"}, timeout=30.0)


def _worker_pids(metrics_dir: Path) -> set[str]:
    """The processes that have written metrics: one ``counter_<pid>.db`` per worker."""
    return {path.stem.rsplit("_", 1)[-1] for path in metrics_dir.glob("counter_*.db")}


def _until_both_workers(http: httpx.Client, metrics_dir: Path, path: str = "/healthz") -> int:
    """GET ``path`` over new connections until both workers have answered one (at most
    400 times: an idle kernel may hand a run of connections to one worker); the count."""
    sent = 0
    while sent < 400 and (sent < 20 or len(_worker_pids(metrics_dir)) < 2):
        assert http.get(path).status_code == 200
        sent += 1
    return sent


def _metric(text: str, name: str) -> float:
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    assert values, f"{name} not in /metrics"
    return sum(values)


def _kmeans_data(seed: int = 3) -> np.ndarray:
    X, _ = make_blobs(n_samples=60, n_features=2, centers=3, random_state=seed)
    return X


def _kmeans_body(X: np.ndarray) -> dict[str, Any]:
    return {
        "algorithm": "kmeans",
        "params": {"n_clusters": 3, "n_init": 2, "random_state": 0},
        "data": {"points": X.tolist()},
        "include": [],
    }


# -- 7. python -m service -------------------------------------------------------------
def test_python_m_service_fits_predicts_and_reports_metrics(
    start: StartServers, tmp_path: Path
) -> None:
    store_dir = tmp_path / "not" / "yet" / "store"
    (server,) = start({"GMM_STORE_DIR": str(store_dir)})
    http = server.client

    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").status_code == 200
    assert store_dir.is_dir()  # created on first start
    assert stat.S_IMODE((store_dir / "secret.key").stat().st_mode) == 0o600

    body = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 4, "random_state": 0},
        "data": {"generator": SEED_BLOBS},
        "name": "seed-blobs",
    }
    r = http.post("/v1/models", json=body)
    assert r.status_code == 201, r.text
    fitted = r.json()
    assert r.headers["location"] == f"/v1/models/{fitted['id']}"
    assert (store_dir / "models" / fitted["id"]).is_dir()

    X, _ = make_blobs(n_samples=200, n_features=2, centers=4, cluster_std=1.6, random_state=10)
    gm = GaussianMixture(n_components=4, random_state=0).fit(X)
    np.testing.assert_allclose(fitted["means"], gm.means_, rtol=1e-10)
    np.testing.assert_allclose(fitted["weights"], gm.weights_, rtol=1e-10)
    np.testing.assert_array_equal(fitted["labels"], gm.predict(X))

    new_points = X[::7] * 1.1
    r = http.post(f"/v1/models/{fitted['id']}/predict", json={"points": new_points.tolist()})
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(r.json()["labels"], gm.predict(new_points))
    np.testing.assert_allclose(r.json()["probabilities"], gm.predict_proba(new_points), rtol=1e-10)

    missing = http.get("/v1/models/" + "0" * 28)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith(PROBLEM)

    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "gmm_http_requests_total" in metrics.text
    assert _metric(metrics.text, 'gmm_fits_total{algorithm="gaussian_mixture"') == 1
    assert _metric(metrics.text, "gmm_store_models") == 1

    server.stop()  # SIGTERM: uvicorn finishes the lifespan, then re-raises the signal
    assert server.proc.returncode in (0, -signal.SIGTERM), server.log()[-2000:]
    assert "Application shutdown complete" in server.log()


# -- 5. replicas and workers over one store ----------------------------------------------
def test_two_replicas_see_each_others_writes_and_deletes(
    start: StartServers, tmp_path: Path
) -> None:
    env = {"GMM_STORE_DIR": str(tmp_path / "shared"), "GMM_SECRET_KEY": "replica-secret"}
    a, b = start(env, env)
    X = _kmeans_data()
    km = KMeans(n_clusters=3, n_init=2, random_state=0).fit(X)
    new_points = {"points": (X[:10] + 0.25).tolist()}

    r = a.client.post("/v1/models", json=_kmeans_body(X))
    assert r.status_code == 201, r.text
    model_id = r.json()["id"]
    assert (
        b.client.get(f"/v1/models/{model_id}").json()
        == a.client.get(f"/v1/models/{model_id}").json()
    )
    for _ in range(3):  # the first loads into B's cache, the others are served from it
        r = b.client.post(f"/v1/models/{model_id}/predict", json=new_points)
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(
            r.json()["labels"], km.predict(np.asarray(new_points["points"]))
        )
    assert _metric(b.client.get("/metrics").text, "gmm_model_cache_hits") >= 2

    r = b.client.post("/v1/models", json=_kmeans_body(X[::-1]))
    assert r.status_code == 201, r.text
    other_id = r.json()["id"]
    listed = [m["id"] for m in a.client.get("/v1/models").json()["items"]]
    assert listed == [other_id, model_id]

    assert a.client.delete(f"/v1/models/{model_id}").status_code == 204
    _past_the_recheck_time(time.monotonic())
    for server in (b, a):
        r = server.client.get(f"/v1/models/{model_id}")
        assert r.status_code == 404, r.text
        assert r.headers["content-type"].startswith(PROBLEM)
        r = server.client.post(f"/v1/models/{model_id}/predict", json=new_points)
        assert r.status_code == 404, r.text
        assert r.headers["content-type"].startswith(PROBLEM)
    assert b.client.delete(f"/v1/models/{model_id}").status_code == 404
    assert [m["id"] for m in b.client.get("/v1/models").json()["items"]] == [other_id]


def test_two_workers_serve_no_deleted_model_past_the_recheck_time(
    start: StartServers, tmp_path: Path
) -> None:
    """No GMM_SECRET_KEY: both workers must also agree on the key they generate at start."""
    metrics_dir = tmp_path / "metrics"
    (server,) = start(
        {
            "GMM_STORE_DIR": str(tmp_path / "store"),
            "GMM_WORKERS": "2",
            "GMM_METRICS_DIR": str(metrics_dir),
        }
    )
    X = _kmeans_data()
    km = KMeans(n_clusters=3, n_init=2, random_state=0).fit(X)
    new_points = {"points": (X[:10] - 0.25).tolist()}

    with _fresh_connections(server) as http:
        r = http.post("/v1/models", json=_kmeans_body(X))
        assert r.status_code == 201, r.text
        model_id = r.json()["id"]
        for _ in range(20):  # with new connections both workers load it into their caches
            r = http.post(f"/v1/models/{model_id}/predict", json=new_points)
            assert r.status_code == 200, r.text
            np.testing.assert_array_equal(
                r.json()["labels"], km.predict(np.asarray(new_points["points"]))
            )

        assert http.delete(f"/v1/models/{model_id}").status_code == 204
        _past_the_recheck_time(time.monotonic())
        statuses = []
        for i in range(20):
            if i % 2:
                r = http.post(f"/v1/models/{model_id}/predict", json=new_points)
            else:
                r = http.get(f"/v1/models/{model_id}")
            statuses.append(r.status_code)
        assert statuses == [404] * 20
        _until_both_workers(http, metrics_dir)
    assert len(_worker_pids(metrics_dir)) == 2, "GMM_WORKERS=2 did not give two processes"


def test_metrics_add_up_every_workers_requests(start: StartServers, tmp_path: Path) -> None:
    """Whichever worker answers the scrape, it reports every worker's requests."""
    metrics_dir = tmp_path / "metrics"
    (server,) = start(
        {
            "GMM_STORE_DIR": str(tmp_path / "store"),
            "GMM_WORKERS": "2",
            "GMM_METRICS_DIR": str(metrics_dir),
        }
    )
    with _fresh_connections(server) as http:
        sent = _until_both_workers(http, metrics_dir, "/v1/models")
        assert len(_worker_pids(metrics_dir)) == 2, "both workers should have answered"
        name = 'gmm_http_requests_total{method="GET",route="/v1/models",status="200"}'
        for _ in range(6):  # each scrape may land on either worker
            assert _metric(http.get("/metrics").text, name) == sent


# -- logging: one line per request ------------------------------------------------------
def _spawn_uvicorn_cli(tmp_path: Path) -> ServerProcess:
    """``uvicorn service.main:create_app --factory`` as someone might launch it by hand:
    the settings that ``python -m service`` would pass as flags are uvicorn's defaults."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GMM_")}
    env.update({"GMM_STORE_DIR": str(tmp_path / "store"), "PYTHONUNBUFFERED": "1"})
    log_path = tmp_path / "uvicorn-cli.log"
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "service.main:create_app",
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(proc=proc, port=port, log_path=log_path)
    if not server.wait_healthy():
        server.stop()
        pytest.fail(f"uvicorn service.main:create_app did not start:\n{server.log()[-4000:]}")
    return server


@pytest.mark.parametrize("launch", ["python -m service", "uvicorn --factory"])
def test_one_json_access_line_per_request(launch: str, start: StartServers, tmp_path: Path) -> None:
    """uvicorn's own access line would repeat, as plain text, what the service's JSON
    line says: however the service is launched, a request is logged once, as JSON."""
    if launch == "python -m service":
        (server,) = start({"GMM_STORE_DIR": str(tmp_path / "store")})
    else:
        server = _spawn_uvicorn_cli(tmp_path)
    try:
        # Each request carries its id in the header (the JSON line records it) and in
        # the query string (uvicorn's line shows the raw path): either finds its lines.
        ids = [uuid.uuid4().hex for _ in range(3)]
        paths = ["/healthz", "/v1/models", "/v1/models/" + "0" * 28]
        for request_id, path in zip(ids, paths, strict=True):
            server.client.get(f"{path}?probe={request_id}", headers={"X-Request-ID": request_id})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = server.log().splitlines()
            if all(any(f'"request_id": "{i}"' in line for line in lines) for i in ids):
                break
            time.sleep(0.05)
        for request_id, path in zip(ids, paths, strict=True):
            mentions = [line for line in lines if request_id in line]
            assert len(mentions) == 1, f"{path}: {len(mentions)} access lines\n" + "\n".join(
                mentions
            )
            entry = json.loads(mentions[0])
            assert entry["request_id"] == request_id and entry["path"] == path, entry
    finally:
        server.stop()
