"""Long work as jobs over HTTP: 202 and Location, each state, progress, cancel, listing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture

from service.config import Settings
from service.main import create_app
from tests.conftest import SEED_BLOBS, SEED_FIT

PROBLEM = "application/problem+json"
TERMINAL = {"succeeded", "failed", "cancelled"}

#: A fit that runs until cancelled (several seconds at most): tol=0 never converges.
LONG_FIT = {
    "algorithm": "gaussian_mixture",
    "params": {"n_components": 4, "random_state": 0, "tol": 0, "max_iter": 10_000},
    "data": {"generator": {**SEED_BLOBS, "n_samples": 3000}},
    "wait": False,
}


def seed_X() -> np.ndarray:
    X, _ = make_blobs(n_samples=200, n_features=2, centers=4, cluster_std=1.6, random_state=10)
    return X


@pytest.fixture
def jobs_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(store_dir=tmp_path / "store", secret_key="k", job_workers=1)
    with TestClient(create_app(settings)) as c:
        yield c


def wait_for(
    c: Any, url: str, statuses: set[str], timeout: float = 30.0, pred: Any = None
) -> dict[str, Any]:
    """Poll a job until its status is one of ``statuses`` (and ``pred`` holds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = c.get(url).json()
        if job["status"] in statuses and (pred is None or pred(job)):
            return job
        if job["status"] in TERMINAL and job["status"] not in statuses:
            raise AssertionError(f"job ended {job['status']}: {job}")
        time.sleep(0.02)
    raise AssertionError(f"{url} never reached {statuses}: {c.get(url).json()}")


def test_wait_false_answers_202_then_the_model_equals_sklearns(jobs_client: TestClient) -> None:
    r = jobs_client.post("/v1/models", json={**SEED_FIT, "wait": False})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["kind"] == "fit"
    assert job["status"] in ("queued", "running")
    assert job["progress"]["unit"] == "iterations" and job["progress"]["total"] == 100
    assert job["model_id"] is None and job["error"] is None and "owner" not in job
    done = wait_for(jobs_client, r.headers["location"], {"succeeded"})
    assert done["progress"]["fraction"] == 1.0
    assert done["started_at"] and done["finished_at"]
    model = jobs_client.get(f"/v1/models/{done['model_id']}").json()
    ref = GaussianMixture(4, random_state=0).fit(seed_X())
    np.testing.assert_array_equal(model["means"], ref.means_)
    assert model["lower_bounds"] == [float(v) for v in ref.lower_bounds_]
    assert done["progress"]["lower_bound"] == ref.lower_bound_
    # What is known, not "100 / 100": one init, finished after the model's n_iter.
    assert done["progress"]["stage"] == "finished"
    assert done["progress"]["iteration"] == model["n_iter"] == ref.n_iter_
    assert (done["progress"]["init"], done["progress"]["n_init"]) == (1, 1)
    assert done["progress"]["change"] < done["progress"]["tol"] == ref.tol
    # The job's model predicts like any other.
    p = jobs_client.post(f"/v1/models/{done['model_id']}/predict", json={"points": [[0, 0]]})
    assert p.json()["labels"] == ref.predict([[0, 0]]).tolist()


def test_wait_true_runs_in_the_request_and_unset_answers_201_through_a_job(
    jobs_client: TestClient,
) -> None:
    assert jobs_client.post("/v1/models", json={**SEED_FIT, "wait": True}).status_code == 201
    assert jobs_client.get("/v1/jobs").json()["items"] == []
    r = jobs_client.post("/v1/models", json=SEED_FIT)
    assert r.status_code == 201, r.text
    assert "labels" in r.json() and "probabilities" in r.json()
    (job,) = jobs_client.get("/v1/jobs").json()["items"]
    assert (job["kind"], job["status"], job["model_id"]) == ("fit", "succeeded", r.json()["id"])


def test_a_fit_not_done_within_the_wait_answers_202_and_its_result_later(tmp_path: Path) -> None:
    settings = Settings(store_dir=tmp_path / "s", secret_key="k", sync_wait_seconds=0)
    with TestClient(create_app(settings)) as c:
        sync = c.post("/v1/models", json={**SEED_FIT, "wait": True}).json()
        r = c.post("/v1/models", json=SEED_FIT)
        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
        job = wait_for(c, r.headers["location"], {"succeeded"})
        result = c.get(f"{r.headers['location']}/result")
        assert result.status_code == 200, result.text
        body = result.json()
        assert body["id"] == job["model_id"]
        # Exactly what the synchronous answer holds, but for the id and times.
        for key in ("labels", "probabilities", "means", "covariances", "weights", "bic"):
            assert body[key] == sync[key], key


def test_prefer_header_sets_the_wait_for_one_request(jobs_client: TestClient) -> None:
    r = jobs_client.post("/v1/models", json=SEED_FIT, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    wait_for(jobs_client, r.headers["location"], {"succeeded"})
    r = jobs_client.post("/v1/models", json=SEED_FIT, headers={"Prefer": "wait=0"})
    assert r.status_code in (201, 202), r.text
    r = jobs_client.post("/v1/models", json=SEED_FIT, headers={"Prefer": "wait=60, lenient"})
    assert r.status_code == 201, r.text
    # The body's wait wins over the header.
    r = jobs_client.post(
        "/v1/models", json={**SEED_FIT, "wait": True}, headers={"Prefer": "respond-async"}
    )
    assert r.status_code == 201, r.text


def test_a_failed_jobs_result_is_its_problem_and_no_job_is_404(tmp_path: Path) -> None:
    settings = Settings(store_dir=tmp_path / "s", secret_key="k")
    with TestClient(create_app(settings)) as c:
        assert c.get("/v1/jobs/019abc12de34f0a1b2c3d4e5f6a7/result").status_code == 404
        # Finite points whose fitted means overflow float64: the job itself fails.
        huge = {"points": [[1e300 * (i % 7), -1e300 * (i % 3)] for i in range(40)]}
        sync = c.post("/v1/models", json={**SEED_FIT, "data": huge, "wait": True})
        assert sync.status_code == 422, sync.text
        r = c.post("/v1/models", json={**SEED_FIT, "data": huge, "wait": False})
        assert r.status_code == 202, r.text
        wait_for(c, r.headers["location"], {"failed"})
        result = c.get(f"{r.headers['location']}/result")
        assert result.status_code == 422
        assert result.json()["type"] == sync.json()["type"]
        assert result.json()["detail"] == sync.json()["detail"]


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"params": {"n_components": 500}}, ["body", "params", "n_components"]),
        ({"params": {"n_components": 4, "bogus": 1}}, ["body", "params", "bogus"]),
        ({"data": {"points": [[0, 0], [1]]}}, ["body", "data", "points", 1]),
        ({"include": ["distances"]}, ["body", "include", 0]),
        ({"wait": "no"}, ["body", "wait"]),
    ],
)
def test_bad_input_is_refused_before_any_job(
    jobs_client: TestClient, change: dict[str, Any], loc: list[Any]
) -> None:
    r = jobs_client.post("/v1/models", json={**SEED_FIT, "wait": False, **change})
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["errors"][0]["loc"][: len(loc)] == loc
    assert jobs_client.get("/v1/jobs").json()["total"] == 0


def test_a_fit_sklearn_refuses_ends_failed_with_the_problem(jobs_client: TestClient) -> None:
    body = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 2, "reg_covar": 0, "random_state": 0},
        "data": {"points": [[1.0, 1.0]] * 10},
        "wait": False,
    }
    r = jobs_client.post("/v1/models", json=body)
    assert r.status_code == 202
    job = wait_for(jobs_client, r.headers["location"], {"failed"})
    assert job["error"]["status"] == 422
    assert job["error"]["type"].endswith("fit-failed")
    assert "scikit-learn could not fit" in job["error"]["detail"]
    assert job["model_id"] is None
    assert jobs_client.get("/v1/models").json()["total"] == 0


def test_queued_running_with_rising_progress_then_cancelled_stores_nothing(
    jobs_client: TestClient,
) -> None:
    before = jobs_client.get("/v1/models").json()["total"]
    first = jobs_client.post("/v1/models", json=LONG_FIT)
    second = jobs_client.post("/v1/models", json=LONG_FIT)  # one job worker: it waits
    assert first.status_code == second.status_code == 202
    url = first.headers["location"]
    seen = wait_for(jobs_client, url, {"running"}, pred=lambda j: j["progress"]["done"] > 0)
    assert jobs_client.get(second.headers["location"]).json()["status"] == "queued"
    later = wait_for(
        jobs_client,
        url,
        {"running"},
        pred=lambda j: j["progress"]["done"] > seen["progress"]["done"],
    )
    assert 0 < seen["progress"]["fraction"] < later["progress"]["fraction"] < 1
    assert later["progress"]["total"] == 10_000
    assert isinstance(later["progress"]["lower_bound"], float)

    # A queued job is cancelled at once: 200, it never starts.
    r = jobs_client.post(second.headers["location"] + "/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled" and r.json()["started_at"] is None
    # A running one is asked to stop: 202, then it stops at its next iteration.
    r = jobs_client.post(f"{url}/cancel")
    assert r.status_code == 202, r.json()
    assert r.json()["cancel_requested"] is True
    job = wait_for(jobs_client, url, {"cancelled"}, timeout=10)
    assert job["model_id"] is None and job["finished_at"]
    assert job["progress"]["done"] < 10_000
    assert jobs_client.get("/v1/models").json()["total"] == before
    # Cancelling a finished job changes nothing: 200 and the resource as it was.
    r = jobs_client.post(f"{url}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    # DELETE removes the record: then it is gone.
    assert jobs_client.delete(url).status_code == 204
    assert jobs_client.get(url).status_code == 404
    assert jobs_client.delete(url).status_code == 404


def test_job_ids_unknown_or_malformed_are_404(jobs_client: TestClient) -> None:
    for job_id in ("0" * 28, "abc", "A" * 28, "x" * 10_000, "..", "%2e%2e%2fmodels"):
        for method in ("GET", "DELETE"):
            r = jobs_client.request(method, f"/v1/jobs/{job_id}")
            assert r.status_code == 404, (method, job_id, r.text)
            assert r.headers["content-type"] == PROBLEM
    r = jobs_client.get("/v1/jobs", params={"cursor": "../x"})
    assert r.status_code == 422


def test_jobs_are_listed_newest_first_and_paginated(jobs_client: TestClient) -> None:
    ids = []
    for _ in range(3):
        r = jobs_client.post("/v1/models", json={**SEED_FIT, "wait": False})
        ids.append(r.json()["id"])
    for job_id in ids:
        wait_for(jobs_client, f"/v1/jobs/{job_id}", {"succeeded"})
    page = jobs_client.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    assert page["total"] == 3
    rest = jobs_client.get("/v1/jobs", params={"limit": 2, "cursor": page["next_cursor"]})
    assert [j["id"] for j in rest.json()["items"]] == [ids[0]]
    assert rest.json()["next_cursor"] is None


def test_model_selection_as_a_job_counts_cells_and_stores_the_best(
    jobs_client: TestClient,
) -> None:
    body = {
        "data": {"generator": SEED_BLOBS},
        "grid": {"n_components": {"min": 1, "max": 4}, "covariance_type": ["full", "diag"]},
        "params": {"random_state": 0},
        "store_best": True,
    }
    sync = jobs_client.post("/v1/model-selection", json=body).json()
    r = jobs_client.post("/v1/model-selection", json={**body, "wait": False})
    assert r.status_code == 202
    assert r.json()["kind"] == "model_selection"
    assert r.json()["progress"] == {"fraction": 0.0, "done": 0, "total": 8, "unit": "cells"}
    job = wait_for(jobs_client, r.headers["location"], {"succeeded"})
    assert job["progress"]["done"] == 8
    assert job["model_id"] == job["result"]["best"]["model_id"]
    for a, b in zip(job["result"]["scores"], sync["scores"], strict=True):
        assert (a["bic"], a["aic"]) == (b["bic"], b["aic"])
    model = jobs_client.get(f"/v1/models/{job['model_id']}").json()
    assert model["n_components"] == sync["best"]["n_components"]


def test_model_selection_bad_grid_is_refused_before_any_job(jobs_client: TestClient) -> None:
    body = {
        "data": {"generator": SEED_BLOBS},
        "grid": {"n_components": [2, 2], "covariance_type": ["full"]},
        "wait": False,
    }
    r = jobs_client.post("/v1/model-selection", json=body)
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "grid", "n_components", 1]
    plot = jobs_client.post(
        "/v1/model-selection/plot",
        json={**body, "grid": {"n_components": [2], "covariance_type": ["full"]}},
    )
    assert plot.status_code == 422
    assert plot.json()["errors"][0]["loc"] == ["body", "wait"]
    assert jobs_client.get("/v1/jobs").json()["total"] == 0


def test_comparison_as_a_job_counts_algorithms(jobs_client: TestClient) -> None:
    body = {
        "data": {"generator": SEED_BLOBS},
        "algorithms": [
            {"algorithm": "kmeans", "params": {"n_clusters": 4, "random_state": 0}},
            {"algorithm": "gaussian_mixture", "params": {"n_components": 4, "random_state": 0}},
        ],
        "wait": False,
    }
    r = jobs_client.post("/v1/comparisons", json=body)
    assert r.status_code == 202
    job = wait_for(jobs_client, r.headers["location"], {"succeeded"})
    assert job["kind"] == "comparison"
    assert job["progress"] == {"fraction": 1.0, "done": 2, "total": 2, "unit": "algorithms"}
    km = job["result"]["results"][0]
    labels = KMeans(4, random_state=0).fit(seed_X()).labels_
    assert km["labels"] == labels.tolist()
    assert km["silhouette_score"] == silhouette_score(seed_X(), labels)


def test_a_comparison_job_can_be_cancelled(jobs_client: TestClient) -> None:
    long_params = {"n_components": 4, "random_state": 0, "tol": 0, "max_iter": 10_000}
    body = {
        "data": LONG_FIT["data"],
        "algorithms": [{"algorithm": "gaussian_mixture", "params": long_params}] * 2,
        "wait": False,
    }
    r = jobs_client.post("/v1/comparisons", json=body)
    wait_for(jobs_client, r.headers["location"], {"running"})
    assert jobs_client.post(r.headers["location"] + "/cancel").status_code in (200, 202)
    job = wait_for(jobs_client, r.headers["location"], {"cancelled"}, timeout=10)
    assert job["result"] is None


def test_jobs_survive_a_restart_and_none_is_left_running(tmp_path: Path) -> None:
    settings = Settings(store_dir=tmp_path / "store", secret_key="k", job_workers=1)
    with TestClient(create_app(settings)) as c:
        done = c.post("/v1/models", json={**SEED_FIT, "wait": False}).json()["id"]
        wait_for(c, f"/v1/jobs/{done}", {"succeeded"})
        running = c.post("/v1/models", json=LONG_FIT).json()["id"]
        wait_for(c, f"/v1/jobs/{running}", {"running"})
    # An orderly shutdown marks the unfinished job failed, with the reason.
    with TestClient(create_app(settings)) as c:
        assert c.get(f"/v1/jobs/{done}").json()["status"] == "succeeded"
        job = c.get(f"/v1/jobs/{running}").json()
        assert job["status"] == "failed"
        assert "shut down" in job["error"]["detail"]


def test_a_plain_fit_of_100000_by_8_points_answers_201_with_the_model(
    jobs_client: TestClient,
) -> None:
    """The cost model once answered 202 for this (estimated at minutes, done in about a
    second); now it is simply done within GMM_SYNC_WAIT_SECONDS."""
    body = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 8, "random_state": 0},
        "data": {
            "generator": {
                "kind": "blobs",
                "n_samples": 100_000,
                "n_features": 8,
                "centers": 8,
                "random_state": 0,
            }
        },
        "include": ["labels"],
    }
    r = jobs_client.post("/v1/models", json=body)
    assert r.status_code == 201, r.text
    assert len(r.json()["labels"]) == 100_000


# -- records: bounded in size and in time ----------------------------------------------
def _comparison_job(client: TestClient) -> str:
    body = {
        "data": {"generator": SEED_BLOBS},
        "algorithms": [{"algorithm": "kmeans", "params": {"n_clusters": 4, "random_state": 0}}],
        "wait": False,
    }
    r = client.post("/v1/comparisons", json=body)
    assert r.status_code == 202, r.text
    url: str = r.headers["location"]
    wait_for(client, url, {"succeeded"})
    return url


def test_listed_jobs_carry_no_results_and_finished_ones_say_when_they_expire(
    jobs_client: TestClient,
) -> None:
    url = _comparison_job(jobs_client)
    job = jobs_client.get(url).json()
    assert job["result"]["results"] and job["expires_at"] > job["finished_at"]
    [item] = jobs_client.get("/v1/jobs").json()["items"]
    assert item["id"] == job["id"] and "result" not in item
    assert item["expires_at"] == job["expires_at"]


def test_finished_jobs_are_removed_after_the_retention(tmp_path: Path) -> None:
    settings = Settings(
        store_dir=tmp_path / "store",
        secret_key="k",
        job_retention_seconds=1,
        sweep_interval_seconds=0.2,
    )
    with TestClient(create_app(settings)) as client:
        url = _comparison_job(client)
        deadline = time.monotonic() + 20
        while client.get(url).status_code == 200:
            assert time.monotonic() < deadline, "the finished job was never removed"
            time.sleep(0.1)
        assert client.get(url).status_code == 404
        assert client.get("/v1/jobs").json()["total"] == 0


def test_deleting_a_running_job_stops_it_and_it_never_comes_back(
    jobs_client: TestClient,
) -> None:
    before = jobs_client.get("/v1/models").json()["total"]
    body = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 4, "max_iter": 10_000, "tol": 0.0, "random_state": 0},
        "data": {"generator": {**SEED_BLOBS, "n_samples": 20_000}},
        "wait": False,
    }
    r = jobs_client.post("/v1/models", json=body)
    url = r.headers["location"]
    wait_for(jobs_client, url, {"running"})
    assert jobs_client.delete(url).status_code == 204
    for _ in range(10):  # its next progress writes find no record and write none
        assert jobs_client.get(url).status_code == 404
        time.sleep(0.1)
    assert jobs_client.get("/v1/models").json()["total"] == before


def test_an_edited_job_record_is_refused_as_damage(jobs_client: TestClient, tmp_path: Path) -> None:
    import json

    from tests.helpers_store import read_row, write_row

    url = _comparison_job(jobs_client)
    job_id = url.rsplit("/", 1)[-1]
    record = json.loads(read_row(tmp_path / "store", "job", job_id))
    write_row(tmp_path / "store", "job", job_id, json.dumps({**record, "progress": "x"}).encode())
    r = jobs_client.get(url)
    assert r.status_code == 500 and r.json()["type"].endswith("artifact-integrity"), r.text
    assert jobs_client.get("/v1/jobs").json()["items"] == []


def test_the_job_queue_is_bounded_and_queued_fits_hold_a_stored_dataset(tmp_path: Path) -> None:
    settings = Settings(
        store_dir=tmp_path / "store", secret_key="k", job_workers=1, job_queue_length=2
    )
    slow = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 4, "max_iter": 10_000, "tol": 0.0, "random_state": 0},
        "data": {"generator": {**SEED_BLOBS, "n_samples": 20_000}},
        "wait": False,
    }
    with TestClient(create_app(settings)) as client:
        running = client.post("/v1/models", json=slow).headers["location"]
        wait_for(client, running, {"running"})
        queued = []
        for seed in range(2):
            points = np.random.default_rng(seed).normal(size=(50, 2)).tolist()
            body = {**FIT_SMALL, "data": {"points": points}, "wait": False}
            r = client.post("/v1/models", json=body)
            assert r.status_code == 202, r.text
            queued.append(r.headers["location"])
        # Each fit's points were stored when it was accepted (the running one's too), not
        # when it runs: a queued job holds a dataset id, not the array.
        assert client.get("/v1/datasets").json()["total"] == 3
        full = client.post("/v1/models", json={**FIT_SMALL, "wait": False})
        assert full.status_code == 429, full.text
        assert "GMM_JOB_QUEUE_LENGTH" in full.json()["detail"]
        assert int(full.headers["retry-after"]) > 0
        client.post(f"{running}/cancel")
        for url in queued:
            job = wait_for(client, url, {"succeeded"})
            model = client.get(f"/v1/models/{job['model_id']}").json()
            assert model["dataset_id"] is not None


FIT_SMALL = {
    "algorithm": "kmeans",
    "params": {"n_clusters": 2, "n_init": 1, "random_state": 0},
    "data": {"points": [[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]]},
}
