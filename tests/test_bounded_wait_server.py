"""Clients that give up against a real server: with bounded waiting the job goes on,
listed, and ends with a model; with ``"wait": true`` the fit stops, stores nothing and
frees its slot (issue 16, finding 4). Only a real uvicorn reports a lost connection."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers_server import ServerProcess, running_server

pytestmark = pytest.mark.slow

#: Seconds of EM on two cores: long enough that a 0.5 s client gives up first.
SLOW_FIT = {
    "algorithm": "gaussian_mixture",
    "params": {"n_components": 8, "n_init": 4, "max_iter": 300, "tol": 1e-9, "random_state": 0},
    "data": {
        "generator": {
            "kind": "blobs",
            "n_samples": 60_000,
            "n_features": 6,
            "centers": 8,
            "random_state": 0,
        }
    },
    "include": [],
}


#: Minutes of EM, were it left to run (tol 0 never converges early).
ENDLESS_FIT = {
    **SLOW_FIT,
    "params": {"n_components": 8, "n_init": 50, "max_iter": 1000, "tol": 0, "random_state": 0},
    "wait": True,
}
QUICK_FIT = {
    "algorithm": "gaussian_mixture",
    "params": {"n_components": 2, "random_state": 0},
    "data": {"points": [[float(i % 7), float(i % 5)] for i in range(40)]},
    "include": [],
    "wait": True,
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """One fit slot, so that an abandoned fit holding it would keep every other out."""
    env = {
        "GMM_STORE_DIR": str(tmp_path / "store"),
        "GMM_SECRET_KEY": "k",
        "GMM_MAX_CONCURRENT_FITS": "1",
    }
    with running_server(env, cwd=tmp_path) as srv:
        yield srv


def test_a_client_that_disconnects_while_waiting_leaves_its_job_running(
    server: ServerProcess,
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/models", json=SLOW_FIT, timeout=0.5)
    deadline = time.monotonic() + 120
    jobs: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        jobs = server.client.get("/v1/jobs").json()["items"]
        if jobs and jobs[0]["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert len(jobs) == 1, jobs
    assert jobs[0]["status"] == "succeeded", jobs[0]
    model_id = jobs[0]["model_id"]
    assert server.client.get(f"/v1/models/{model_id}").status_code == 200
    result = server.client.get(f"/v1/jobs/{jobs[0]['id']}/result")
    assert result.status_code == 200 and result.json()["id"] == model_id


def test_a_client_that_disconnects_from_a_wait_true_fit_stops_it(server: ServerProcess) -> None:
    """The reviewer's case: a synchronous fit whose client gave up held the only slot
    (every other fit got 429 for a minute), then stored a model nobody received."""
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/models", json=ENDLESS_FIT, timeout=1.0)
    began = time.monotonic()
    # The slot is free again within a poll and an EM step: the next fit waits for it
    # in the queue (GMM_FIT_QUEUE_SECONDS), and gets it long before the endless one ends.
    quick = server.client.post("/v1/models", json=QUICK_FIT, timeout=60)
    assert quick.status_code == 201, quick.text
    assert time.monotonic() - began < 20
    models = server.client.get("/v1/models").json()
    assert [m["id"] for m in models["items"]] == [quick.json()["id"]], models
    assert server.client.get("/v1/jobs").json()["items"] == []
    assert '"POST /v1/models 409"' in server.log(), "the abandoned fit ends as cancelled"
