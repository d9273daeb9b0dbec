"""``Idempotency-Key`` on the three POSTs that start work: a retry with the same key and
body answers the first request's job or result, never a second fit; the same key with
another body is a 422 naming the header."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SEED_BLOBS, wait_job

POINTS = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [10.0, 10.0], [10.0, 11.0], [11.0, 10.0]]
FIT = {"algorithm": "kmeans", "params": {"n_clusters": 2, "n_init": 1}, "data": {"points": POINTS}}


def _models(client: TestClient) -> int:
    total: int = client.get("/v1/models").json()["total"]
    return total


def test_a_retried_fit_answers_the_first_model(client: TestClient) -> None:
    key = {"Idempotency-Key": "fit-1"}
    first = client.post("/v1/models", json=FIT, headers=key)
    again = client.post("/v1/models", json={**FIT}, headers=key)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["labels"] == first.json()["labels"]
    assert _models(client) == 1
    # Without the key, or with another, it is new work.
    assert client.post("/v1/models", json=FIT).json()["id"] != first.json()["id"]
    assert (
        client.post("/v1/models", json=FIT, headers={"Idempotency-Key": "fit-2"}).json()["id"]
        != first.json()["id"]
    )
    assert _models(client) == 3


def test_a_retried_job_answers_the_same_job_then_its_result(client: TestClient) -> None:
    key = {"Idempotency-Key": "job-1"}
    body = {**FIT, "wait": False}
    first = client.post("/v1/models", json=body, headers=key)
    assert first.status_code == 202
    again = client.post("/v1/models", json=body, headers=key)
    assert again.status_code in (201, 202)
    job = wait_job(client, first.json()["id"])
    if again.status_code == 202:
        assert again.json()["id"] == first.json()["id"]
    done = client.post("/v1/models", json=body, headers=key)
    assert done.status_code == 201 and done.json()["id"] == job["model_id"]
    assert _models(client) == 1
    assert client.get("/v1/jobs").json()["total"] == 1


def test_the_same_key_with_another_body_is_a_422(client: TestClient) -> None:
    key = {"Idempotency-Key": "k"}
    assert client.post("/v1/models", json=FIT, headers=key).status_code == 201
    other = {**FIT, "params": {"n_clusters": 3, "n_init": 1}}
    r = client.post("/v1/models", json=other, headers=key)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert _models(client) == 1


def test_racing_retries_start_the_work_once(client: TestClient) -> None:
    barrier = threading.Barrier(6)

    def post(_: int) -> Any:
        barrier.wait()
        return client.post("/v1/models", json=FIT, headers={"Idempotency-Key": "race"})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(post, range(6)))
    assert {r.status_code for r in answers} <= {201, 202}
    assert _models(client) == 1
    ids = {r.json().get("model_id") or r.json()["id"] for r in answers if r.status_code == 201}
    assert len(ids) == 1


def test_keys_are_per_route(client: TestClient) -> None:
    key = {"Idempotency-Key": "shared"}
    comparison = {
        "data": {"generator": SEED_BLOBS},
        "algorithms": [{"algorithm": "kmeans", "params": {"n_clusters": 4, "random_state": 0}}],
    }
    selection = {
        "data": {"generator": SEED_BLOBS},
        "grid": {"n_components": [1, 2], "covariance_type": ["full"]},
        "params": {"random_state": 0},
    }
    compared = client.post("/v1/comparisons", json=comparison, headers=key)
    selected = client.post("/v1/model-selection", json=selection, headers=key)
    assert compared.status_code == selected.status_code == 200
    again = client.post("/v1/comparisons", json=comparison, headers=key)
    assert again.status_code == 200 and again.json() == compared.json()
    assert client.post("/v1/model-selection", json=selection, headers=key).json() == selected.json()
    assert client.get("/v1/jobs").json()["total"] == 2


@pytest.mark.parametrize("bad", [b"", b"with space", b"x" * 256, b"tab\tkey"])
def test_a_key_is_printable_ascii(client: TestClient, bad: bytes) -> None:
    r = client.post("/v1/models", json=FIT, headers=[(b"Idempotency-Key", bad)])
    assert r.status_code == 422, r.text
    assert _models(client) == 0


def test_a_body_with_integers_past_64_bits_is_still_refused_by_its_checks(
    client: TestClient,
) -> None:
    """The fingerprint must not fail (500) where the request's own checks answer 4xx."""
    body = {
        "data": {"generator": {**SEED_BLOBS, "n_samples": 2**70}},
        "algorithms": [{"algorithm": "kmeans"}],
    }
    r = client.post("/v1/comparisons", json=body, headers={"Idempotency-Key": "big"})
    assert r.status_code == 413 and "GMM_MAX_POINTS" in r.text, r.text


def test_a_retry_after_its_model_was_deleted_is_a_422(client: TestClient) -> None:
    key = {"Idempotency-Key": "gone"}
    model = client.post("/v1/models", json=FIT, headers=key).json()
    assert client.delete(f"/v1/models/{model['id']}").status_code == 204
    r = client.post("/v1/models", json=FIT, headers=key)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
