"""The cluster profile in miniature, with real processes: two ``python -m service``
replicas on one S3 bucket (a moto server) and one Dask LocalCluster, all on loopback.

What one replica accepts, the other follows: a dataset uploaded on A is fitted out
of core on the cluster through B, the job is read on A, the model predicted on A;
and when a replica is killed mid-job, the other reports that job failed once its
heartbeat is stale, instead of ``running`` for good.
"""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from bench.model_selection import local_cluster
from tests.conftest import require, wait_job
from tests.helpers_server import ServerProcess, running_servers

distributed = require("distributed")

pytestmark = pytest.mark.slow

STALE_SECONDS = 4


@pytest.fixture
def stale_seconds() -> float:
    """GMM_JOB_STALE_SECONDS of the replicas: long, unless a test is about a dead
    replica's jobs (a heartbeat of 4 s can be late on a loaded CI machine, and a job
    of a live replica would then be taken for an orphan)."""
    return 60.0


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[Any]:
    with (
        local_cluster(2) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture
def replicas(
    tmp_path: Path,
    moto_url: str,
    s3_bucket: str,
    postgres_url: str,
    dask_cluster: Any,
    stale_seconds: float,
) -> Iterator[list[ServerProcess]]:
    aws = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    aws["AWS_DEFAULT_REGION"] = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")

    def set_env(env: dict[str, str]) -> None:
        os.environ.update(env)

    dask_cluster.run(set_env, aws)  # the workers read dataset chunks from the bucket
    env = {
        **aws,
        "GMM_STORE_URL": f"s3://{s3_bucket}/gmm",
        "GMM_S3_ENDPOINT_URL": moto_url,
        "GMM_DATABASE_URL": postgres_url,  # one catalogue, as the compose cluster has
        "GMM_SECRET_KEY": "one-key-for-every-replica",
        "GMM_DASK_SCHEDULER": dask_cluster.scheduler.address,
        "GMM_JOB_STALE_SECONDS": str(stale_seconds),
        "GMM_LOG_JSON": "false",
    }
    with running_servers([env, env], cwd=tmp_path) as servers:
        yield servers


def test_replicas_share_datasets_jobs_and_models_fitted_on_the_cluster(
    replicas: list[ServerProcess],
) -> None:
    a, b = (server.client for server in replicas)
    for http in (a, b):
        assert http.get("/readyz").json()["dask"]["workers"] == 2
    X, _ = make_blobs(n_samples=30_000, n_features=3, centers=3, random_state=5)
    buffer = io.BytesIO()
    np.save(buffer, X)
    uploaded = a.post(
        "/v1/datasets", content=buffer.getvalue(), headers={"Content-Type": "application/x-npy"}
    )
    assert uploaded.status_code == 201, uploaded.text
    start = {
        "weights_init": [0.2, 0.3, 0.5],
        "means_init": X[[0, 10_000, 20_000]].tolist(),
        "precisions_init": np.stack([np.eye(3)] * 3).tolist(),
    }
    accepted = b.post(
        "/v1/models",
        json={
            "algorithm": "gaussian_mixture",
            "engine": "dask",
            "params": {"n_components": 3, "tol": 1e-6, **start},
            "data": {"dataset_id": uploaded.json()["id"]},
            "wait": False,
        },
    )
    assert accepted.status_code == 202, accepted.text
    job = wait_job(a, accepted.json()["id"])  # followed on the other replica
    assert job["status"] == "succeeded", job
    gm = GaussianMixture(3, tol=1e-6, **{k: np.asarray(v) for k, v in start.items()}).fit(X)
    model = a.get(f"/v1/models/{job['model_id']}").json()
    np.testing.assert_allclose(model["means"], gm.means_, rtol=1e-8)
    np.testing.assert_allclose(model["covariances"], gm.covariances_, rtol=1e-8)
    predicted = a.post(f"/v1/models/{model['id']}/predict", json={"points": X[:20].tolist()})
    assert predicted.json()["labels"] == gm.predict(X[:20]).tolist()


def _executing(dask_worker: Any) -> int:
    return int(dask_worker.state.executing_count)


@pytest.mark.parametrize("stale_seconds", [STALE_SECONDS])
def test_a_job_of_a_killed_replica_ends_failed_on_the_other(
    replicas: list[ServerProcess], dask_cluster: Any
) -> None:
    a, b = replicas
    X, _ = make_blobs(n_samples=20_000, n_features=4, centers=6, random_state=0)
    accepted = a.client.post(
        "/v1/models",
        json={
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 6, "tol": 0.0, "max_iter": 10_000, "random_state": 0},
            "data": {"points": X.tolist()},
            "wait": False,
        },
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    deadline = time.monotonic() + 60
    while b.client.get(f"/v1/jobs/{job_id}").json()["progress"]["done"] < 5:
        assert time.monotonic() < deadline  # its fit is running on a worker
        time.sleep(0.1)
    os.killpg(a.proc.pid, signal.SIGKILL)  # no shutdown: its jobs stay "running" in S3
    a.proc.wait(10)
    assert b.client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"  # not yet stale
    job = wait_job(b.client, job_id, STALE_SECONDS * 10)
    assert job["status"] == "failed"
    assert "stopped" in job["error"]["detail"]
    # Its fit on the cluster stopped too: nobody held its task any more.
    deadline = time.monotonic() + 30
    while sum(dask_cluster.run(_executing).values()):
        assert time.monotonic() < deadline, "the orphaned fit kept a worker busy"
        time.sleep(0.2)
