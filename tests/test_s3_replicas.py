"""Two service instances on one bucket and one PostgreSQL catalogue: what one writes the
other serves at once, and what one deletes the other stops serving, its caches
notwithstanding: its metadata at once, its predictions at most GMM_MODEL_RECHECK_SECONDS
later.

Each instance is a full app with its own store object and its own compiled-model
cache, as two replicas behind a load balancer would be; the bucket is served by a
moto server on loopback (``moto_url`` in conftest) and the database by a PostgreSQL
server the tests start (``postgres_url``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from tests.conftest import SEED_FIT

SECRET = "replicas-share-this-key"
POINTS = [[0.0, 0.0], [0.5, 0.2], [10.0, 10.0], [10.2, 9.7], [0.1, 0.3], [9.9, 10.1]]


@pytest.fixture
def replicas(
    moto_url: str, s3_bucket: str, postgres_url: str, tmp_path: Any
) -> Iterator[tuple[TestClient, TestClient]]:
    def settings(name: str) -> Settings:
        return Settings(
            store_url=f"s3://{s3_bucket}/gmm",
            s3_endpoint_url=moto_url,
            database_url=postgres_url,
            secret_key=SECRET,
            store_dir=tmp_path / name,  # unused with a bucket and a database
            job_workers=1,
        )

    with TestClient(create_app(settings("a"))) as a, TestClient(create_app(settings("b"))) as b:
        yield a, b


def _fit(client: TestClient, **data: Any) -> str:
    body = {
        "algorithm": "kmeans",
        "params": {"n_clusters": 2, "n_init": 1, "random_state": 0},
        "data": data or {"points": POINTS},
        "include": [],
    }
    r = client.post("/v1/models", json=body)
    assert r.status_code == 201, r.text
    model_id: str = r.json()["id"]
    return model_id


def test_a_model_fitted_on_a_is_listed_fetched_and_predicted_on_b(
    replicas: tuple[TestClient, TestClient],
) -> None:
    a, b = replicas
    model_id = _fit(a)
    assert [m["id"] for m in b.get("/v1/models").json()["items"]] == [model_id]
    assert b.get(f"/v1/models/{model_id}").status_code == 200
    on_a = a.post(f"/v1/models/{model_id}/predict", json={"points": POINTS})
    on_b = b.post(f"/v1/models/{model_id}/predict", json={"points": POINTS})
    assert on_b.status_code == 200, on_b.text
    assert on_b.json()["labels"] == on_a.json()["labels"]


def test_a_dataset_uploaded_on_a_is_fitted_by_id_on_b(
    replicas: tuple[TestClient, TestClient],
) -> None:
    a, b = replicas
    r = a.post("/v1/datasets", json={"points": POINTS})
    assert r.status_code == 201, r.text
    dataset_id = r.json()["id"]
    assert b.get(f"/v1/datasets/{dataset_id}").status_code == 200
    model_id = _fit(b, dataset_id=dataset_id)
    assert a.get(f"/v1/models/{model_id}").status_code == 200
    assert b.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert a.get(f"/v1/datasets/{dataset_id}").status_code == 404


def test_a_job_submitted_on_a_is_visible_on_b(replicas: tuple[TestClient, TestClient]) -> None:
    a, b = replicas
    r = a.post("/v1/models", json={**SEED_FIT, "wait": False})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert b.get(f"/v1/jobs/{job_id}").status_code == 200
    assert job_id in [j["id"] for j in b.get("/v1/jobs").json()["items"]]
    deadline = time.monotonic() + 60
    while (job := b.get(f"/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "succeeded", job


def test_a_delete_on_b_is_a_404_on_a_within_the_recheck_time_despite_as_cache(
    replicas: tuple[TestClient, TestClient],
) -> None:
    a, b = replicas
    model_id = _fit(a)
    for _ in range(2):  # compiled and cached on A
        assert a.post(f"/v1/models/{model_id}/predict", json={"points": POINTS}).status_code == 200
    assert b.delete(f"/v1/models/{model_id}").status_code == 204
    deleted_at = time.monotonic()
    assert a.get(f"/v1/models/{model_id}").status_code == 404  # metadata: read afresh
    recheck = a.app.state.settings.model_recheck_seconds  # type: ignore[attr-defined]
    time.sleep(max(0.0, deleted_at + recheck - time.monotonic()))
    assert a.post(f"/v1/models/{model_id}/predict", json={"points": POINTS}).status_code == 404
    assert a.get("/v1/models").json()["items"] == []


def test_an_unreachable_bucket_is_a_503_that_names_no_endpoint_nor_key(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client is told the store is unavailable and why in a word; the endpoint, the
    bucket and the object keys go to the log only."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings = Settings(
        store_url="s3://secret-bucket-name/secret-prefix",
        s3_endpoint_url="http://127.0.0.1:9",  # nothing listens on the discard port
        secret_key=SECRET,
        store_dir=tmp_path / "local",
    )
    with TestClient(create_app(settings)) as client:
        for r in (
            client.post("/v1/datasets", json={"points": POINTS}),
            client.get("/readyz"),
        ):
            assert r.status_code == 503, r.text
            for secret in ("127.0.0.1", ":9", "secret-bucket-name", "secret-prefix", "datasets/"):
                assert secret not in r.text, r.text
