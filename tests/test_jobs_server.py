"""Jobs and the fit queue against real server processes.

What only processes show: a fit in a killable worker process reporting its progress
over the pipe and killed on cancel; a ``SIGKILL`` mid-job leaving no job ``running``
after the restart, while the jobs of another live process on the same store are left
alone; a cancel through one process stopping a job run by another; and many clients
at once queueing for fit slots instead of being turned away.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from tests.conftest import SEED_BLOBS, SEED_FIT
from tests.helpers_server import running_server, running_servers, start_servers

pytestmark = pytest.mark.slow

SECRET = "jobs-server-key"
TERMINAL = {"succeeded", "failed", "cancelled"}
#: Runs until cancelled (tens of seconds): tol=0 never converges.
LONG_FIT = {
    "algorithm": "gaussian_mixture",
    "params": {"n_components": 4, "random_state": 0, "tol": 0, "max_iter": 10_000},
    "data": {"generator": {**SEED_BLOBS, "n_samples": 5000}},
    "wait": False,
}


def _env(store: Path, **extra: str) -> dict[str, str]:
    return {
        "GMM_STORE_DIR": str(store),
        "GMM_SECRET_KEY": SECRET,
        "GMM_LOG_JSON": "false",
        "GMM_LOG_LEVEL": "warning",
        **extra,
    }


def wait_for(
    client: httpx.Client, url: str, statuses: set[str], timeout: float = 60.0, pred: Any = None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(url).json()
        if job["status"] in statuses and (pred is None or pred(job)):
            return job
        if job["status"] in TERMINAL and job["status"] not in statuses:
            raise AssertionError(f"job ended {job['status']}: {job}")
        time.sleep(0.05)
    raise AssertionError(f"{url} never reached {statuses}: {client.get(url).json()}")


def _models(client: httpx.Client) -> int:
    total: int = client.get("/v1/models").json()["total"]
    return total


@pytest.mark.parametrize("isolated", [False, True], ids=["threads", "worker-processes"])
def test_every_job_state_against_a_real_server(tmp_path: Path, isolated: bool) -> None:
    extra = {"GMM_JOB_WORKERS": "1"}
    if isolated:  # fits run in killable worker processes; progress comes over the pipe
        extra["GMM_FIT_TIMEOUT_SECONDS"] = "300"
    with running_server(_env(tmp_path / "store", **extra), cwd=tmp_path) as srv:
        c = srv.client
        # succeeded: the model is stored and equals sklearn's in-process fit
        r = c.post("/v1/models", json={**SEED_FIT, "wait": False})
        assert r.status_code == 202, r.text
        job = wait_for(c, r.headers["location"], {"succeeded"})
        model = c.get(f"/v1/models/{job['model_id']}").json()
        X, _ = make_blobs(n_samples=200, centers=4, cluster_std=1.6, random_state=10)
        ref = GaussianMixture(4, random_state=0).fit(X)
        np.testing.assert_array_equal(model["means"], ref.means_)
        assert model["lower_bounds"] == [float(v) for v in ref.lower_bounds_]

        # failed: the problem object the synchronous request would have answered
        bad = {
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 2, "reg_covar": 0},
            "data": {"points": [[1.0, 1.0]] * 10},
            "wait": False,
        }
        failed = wait_for(c, c.post("/v1/models", json=bad).headers["location"], {"failed"})
        assert failed["error"]["status"] == 422 and failed["error"]["type"].endswith("fit-failed")

        # running with rising progress, a second job queued behind it, then cancelled
        before = _models(c)
        running = c.post("/v1/models", json=LONG_FIT).headers["location"]
        queued = c.post("/v1/models", json=LONG_FIT).headers["location"]
        first = wait_for(c, running, {"running"}, pred=lambda j: j["progress"]["done"] > 0)
        assert c.get(queued).json()["status"] == "queued"
        later = wait_for(
            c,
            running,
            {"running"},
            pred=lambda j: j["progress"]["done"] > first["progress"]["done"],
        )
        assert 0 < first["progress"]["fraction"] < later["progress"]["fraction"] < 1
        assert later["progress"]["unit"] == "iterations"
        assert isinstance(later["progress"]["lower_bound"], float)
        assert c.post(f"{queued}/cancel").json()["status"] == "cancelled"
        asked = time.monotonic()
        assert c.post(f"{running}/cancel").status_code == 202
        cancelled = wait_for(c, running, {"cancelled"}, timeout=20)
        assert time.monotonic() - asked < 10  # at its next step, not at the end
        assert cancelled["model_id"] is None
        assert _models(c) == before  # nothing stored
        # The service still fits after a cancel (a killed worker is replaced).
        again = wait_for(
            c,
            c.post("/v1/models", json={**SEED_FIT, "wait": False}).headers["location"],
            {"succeeded"},
        )
        assert again["model_id"]


def test_sigkill_mid_job_leaves_no_job_running_and_spares_live_processes(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    env = _env(store, GMM_JOB_WORKERS="1")
    doomed, survivor = start_servers([env, env], cwd=tmp_path)
    try:
        victim = doomed.client.post("/v1/models", json=LONG_FIT).json()["id"]
        kept = survivor.client.post("/v1/models", json=LONG_FIT).json()["id"]
        wait_for(doomed.client, f"/v1/jobs/{victim}", {"running"})
        wait_for(survivor.client, f"/v1/jobs/{kept}", {"running"})
        os.killpg(doomed.proc.pid, signal.SIGKILL)
        doomed.proc.wait(timeout=10)
        # The killed process's job still says running in the store until a start recovers it.
        assert survivor.client.get(f"/v1/jobs/{victim}").json()["status"] == "running"
        with running_server(env, cwd=tmp_path) as restarted:
            job = restarted.client.get(f"/v1/jobs/{victim}").json()
            assert job["status"] == "failed"
            assert "stopped (crash or restart)" in job["error"]["detail"]
            assert job["model_id"] is None
            # The job of the live process was not touched by the restart's recovery...
            assert restarted.client.get(f"/v1/jobs/{kept}").json()["status"] == "running"
            # ...and a cancel through another process reaches it through the store.
            r = restarted.client.post(f"/v1/jobs/{kept}/cancel")
            assert r.status_code == 202 and r.json()["cancel_requested"] is True
            assert wait_for(survivor.client, f"/v1/jobs/{kept}", {"cancelled"}, timeout=20)
            # Its owner shows its live copy first; the store catches up a moment later.
            assert wait_for(restarted.client, f"/v1/jobs/{kept}", {"cancelled"}, timeout=10)
            listed = restarted.client.get("/v1/jobs").json()["items"]
            assert {j["status"] for j in listed} <= TERMINAL
    finally:
        doomed.stop()
        survivor.stop()


def test_64_tiny_fits_from_16_clients_all_succeed_with_default_settings(
    tmp_path: Path,
) -> None:
    body = {
        "algorithm": "kmeans",
        "params": {"n_clusters": 2, "n_init": 1, "random_state": 0},
        "data": {"points": [[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]]},
        "include": [],
    }
    with running_server(_env(tmp_path / "store"), cwd=tmp_path) as srv:

        def client_run(_: int) -> list[int]:
            with httpx.Client(base_url=srv.base_url, timeout=120) as c:
                return [c.post("/v1/models", json=body).status_code for _ in range(4)]

        with ThreadPoolExecutor(16) as pool:
            statuses = [s for run in pool.map(client_run, range(16)) for s in run]
        assert statuses == [201] * 64
        assert _models(srv.client) == 64


def test_429_only_when_the_queue_is_full(tmp_path: Path) -> None:
    env = _env(
        tmp_path / "store",
        GMM_MAX_CONCURRENT_FITS="1",
        GMM_FIT_QUEUE_LENGTH="2",
        # Long enough that the queued fits outlast the slow one even on a loaded CI
        # machine: a queue timeout would be a 429 too, and this test is about length.
        GMM_FIT_QUEUE_SECONDS="900",
    )
    slow = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 4, "random_state": 0, "tol": 0, "max_iter": 1500},
        "data": {"generator": {**SEED_BLOBS, "n_samples": 5000}},
        "include": [],
        "wait": True,
    }
    quick = {
        "algorithm": "kmeans",
        "params": {"n_clusters": 2, "n_init": 1, "random_state": 0},
        "data": {"points": [[0.0, 0.0], [1.0, 1.0], [9.0, 9.0]]},
        "include": [],
    }
    with running_servers([env], cwd=tmp_path) as (srv,):
        results: dict[str, int] = {}

        def post(name: str, body: dict[str, Any]) -> None:
            with httpx.Client(base_url=srv.base_url, timeout=900) as c:
                results[name] = c.post("/v1/models", json=body).status_code

        def in_flight() -> float:
            for line in srv.client.get("/metrics").text.splitlines():
                if line.startswith("gmm_fits_in_flight "):
                    return float(line.split()[1])
            return 0.0

        def until(n: float) -> None:
            deadline = time.monotonic() + 30
            while in_flight() < n and time.monotonic() < deadline:
                time.sleep(0.02)
            assert in_flight() >= n

        threads = [threading.Thread(target=post, args=("slow", slow))]
        threads[0].start()
        until(1)
        time.sleep(0.5)  # its data is generated: it holds the one slot
        for i in range(2):  # these two wait in the queue
            threads.append(threading.Thread(target=post, args=(f"queued{i}", quick)))
            threads[-1].start()
        until(3)
        time.sleep(0.3)
        r = srv.client.post("/v1/models", json=quick)  # the queue is full: 429 at once
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["content-type"] == "application/problem+json"
        assert "GMM_FIT_QUEUE_LENGTH" in r.json()["detail"]
        for t in threads:
            t.join(900)
        assert results == {"slow": 201, "queued0": 201, "queued1": 201}
        # A job never takes a synchronous slot nor waits in the queue.
        job = srv.client.post("/v1/models", json={**quick, "wait": False})
        assert job.status_code == 202
        assert wait_for(srv.client, job.headers["location"], {"succeeded"})["model_id"]
