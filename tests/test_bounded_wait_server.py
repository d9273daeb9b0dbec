"""Bounded waiting against a real server: a client that gives up while its fit runs
leaves the job running, listed, and ending with a model."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.helpers_server import running_server

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


def test_a_client_that_disconnects_while_waiting_leaves_its_job_running(tmp_path: Path) -> None:
    env = {"GMM_STORE_DIR": str(tmp_path / "store"), "GMM_SECRET_KEY": "k"}
    with running_server(env, cwd=tmp_path) as server:
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
