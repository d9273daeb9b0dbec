"""Metadata updates (rename, tags) on a real local store: signed again, written in one
transaction, never lost to a concurrent update, never bringing a deleted model back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.errors import ArtifactIntegrityError, NotFound
from service.ids import new_model_id
from service.store import IndexedStore
from service.store.signing import ARTIFACT
from tests.helpers_store import local_store, read_row, write_row

ROOT = Path(__file__).resolve().parents[2]
POINTS = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [10.0, 10.0], [10.0, 11.0], [11.0, 10.0]]


def _store(tmp_path: Path) -> IndexedStore:
    return local_store(tmp_path / "store", secret_key="k")


def _root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def _put(store: IndexedStore, **resource: Any) -> str:
    model_id = new_model_id()
    store.put(model_id, {"estimator": "x"}, {"resource": {"id": model_id, **resource}})
    return model_id


def _set(key: str, value: Any) -> Any:
    def change(meta: dict[str, Any]) -> dict[str, Any]:
        meta["resource"][key] = value
        return meta

    return change


def test_an_update_is_signed_and_leaves_the_artifact_alone(tmp_path: Path) -> None:
    store = _store(tmp_path)
    model_id = _put(store, name="a", tags={})
    folder = _root(tmp_path) / "models" / model_id
    before = os.stat(folder / ARTIFACT)
    old_meta = read_row(_root(tmp_path), "model", model_id)
    stored = store.update_metadata(model_id, _set("tags", {"k": "v"}))
    assert stored["resource"]["tags"] == {"k": "v"}
    # A fresh store (another process) verifies the new signature.
    again = _store(tmp_path).get_metadata(model_id)
    assert again == {k: v for k, v in stored.items() if k != "signature"}
    assert read_row(_root(tmp_path), "model", model_id) != old_meta
    after = os.stat(folder / ARTIFACT)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert _store(tmp_path).load(model_id) == {"estimator": "x"}


def test_a_no_op_update_writes_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    model_id = _put(store, name="a")
    before = read_row(_root(tmp_path), "model", model_id)
    store.update_metadata(model_id, lambda meta: None)
    assert read_row(_root(tmp_path), "model", model_id) == before


@pytest.mark.parametrize("key", ["id", "artifact", "points"])
def test_an_update_may_not_touch_what_guards_the_artifact(tmp_path: Path, key: str) -> None:
    store = _store(tmp_path)
    model_id = _put(store)
    raw = read_row(_root(tmp_path), "model", model_id)
    with pytest.raises(ValueError, match=key):
        store.update_metadata(model_id, lambda meta: {**meta, key: {"sha256": "0" * 64}})
    assert read_row(_root(tmp_path), "model", model_id) == raw


def test_a_tampered_tag_after_an_update_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    model_id = _put(store, tags={})
    store.update_metadata(model_id, _set("tags", {"stage": "dev"}))
    meta = json.loads(read_row(_root(tmp_path), "model", model_id))
    meta["resource"]["tags"]["stage"] = "prod"
    write_row(_root(tmp_path), "model", model_id, json.dumps(meta).encode())
    fresh = _store(tmp_path)  # no cache
    with pytest.raises(ArtifactIntegrityError):
        fresh.get_metadata(model_id)
    with pytest.raises(ArtifactIntegrityError):
        fresh.load(model_id)
    # Nor is a tampered file signed again by the next update.
    with pytest.raises(ArtifactIntegrityError):
        fresh.update_metadata(model_id, _set("tags", {}))
    assert json.loads(read_row(_root(tmp_path), "model", model_id))["resource"]["tags"] == {
        "stage": "prod"
    }


def test_a_tampered_tag_is_refused_over_http(client: TestClient, settings: Any) -> None:
    body = {"algorithm": "kmeans", "params": {"n_clusters": 2}, "data": {"points": POINTS}}
    model_id = client.post("/v1/models", json=body).json()["id"]
    r = client.patch(f"/v1/models/{model_id}", json={"tags": {"stage": "dev"}})
    assert r.status_code == 200, r.text
    meta = json.loads(read_row(settings.store_dir, "model", model_id))
    meta["resource"]["tags"]["stage"] = "prod"
    write_row(settings.store_dir, "model", model_id, json.dumps(meta).encode())
    for response in (
        client.get(f"/v1/models/{model_id}"),
        client.patch(f"/v1/models/{model_id}", json={"name": "x"}),
    ):
        assert response.status_code == 500, response.text
        assert response.json()["type"].endswith("artifact-integrity")
    # The listing (and its filters) skip the damaged model rather than trust it.
    assert client.get("/v1/models", params={"tag": "stage:prod"}).json()["items"] == []


def test_racing_updates_in_threads_lose_nothing(tmp_path: Path) -> None:
    """Each update reads, waits a little (widening the race), and writes a counter + 1;
    without the per-model lock most increments would be lost."""
    store = _store(tmp_path)
    model_id = _put(store, count=0)

    def increment(meta: dict[str, Any]) -> dict[str, Any]:
        count = meta["resource"]["count"]
        time.sleep(0.002)
        meta["resource"]["count"] = count + 1
        return meta

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: store.update_metadata(model_id, increment), range(64)))
    assert store.get_metadata(model_id)["resource"]["count"] == 64


_HAMMER = """
import sys, time
from pathlib import Path
from tests.helpers_store import local_store

store = local_store(Path(sys.argv[1]), secret_key="k")

def increment(meta):
    count = meta["resource"]["count"]
    time.sleep(0.001)
    meta["resource"]["count"] = count + 1
    return meta

for _ in range(int(sys.argv[3])):
    store.update_metadata(sys.argv[2], increment)
"""


def test_racing_updates_in_processes_lose_nothing(tmp_path: Path) -> None:
    """``--workers 2``: the lock is the file system's, not a thread lock."""
    store = _store(tmp_path)
    model_id = _put(store, count=0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _HAMMER, str(_root(tmp_path)), model_id, "40"],
            cwd=ROOT,
        )
        for _ in range(3)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert store.get_metadata(model_id)["resource"]["count"] == 120


def test_racing_patches_over_http_keep_every_tag(client: TestClient) -> None:
    body = {"algorithm": "kmeans", "params": {"n_clusters": 2}, "data": {"points": POINTS}}
    model_id = client.post("/v1/models", json=body).json()["id"]
    barrier = threading.Barrier(8)

    def tag(i: int) -> list[int]:
        barrier.wait()
        return [
            client.patch(f"/v1/models/{model_id}", json={"tags": {f"t{i}-{j}": str(j)}}).status_code
            for j in range(3)
        ]

    with ThreadPoolExecutor(8) as pool:
        statuses = [s for result in pool.map(tag, range(8)) for s in result]
    assert statuses == [200] * 24
    tags = client.get(f"/v1/models/{model_id}").json()["tags"]
    assert tags == {f"t{i}-{j}": str(j) for i in range(8) for j in range(3)}


def test_a_delete_during_an_update_waits_for_it_and_wins(tmp_path: Path) -> None:
    """The delete (another process) comes while the update holds the model's row: it
    waits for the update's commit, then removes the model for good."""
    store = _store(tmp_path)
    other = _store(tmp_path)
    model_id = _put(store, name="a")
    deleting = threading.Thread(target=other.delete, args=(model_id,))

    def change_while_deleted(meta: dict[str, Any]) -> dict[str, Any]:
        deleting.start()
        time.sleep(0.2)  # the delete is waiting for the row now
        meta["resource"]["name"] = "b"
        return meta

    assert store.update_metadata(model_id, change_while_deleted)["resource"]["name"] == "b"
    deleting.join(timeout=30)
    assert not (_root(tmp_path) / "models" / model_id).exists()
    assert store.list(limit=10, cursor=None) == ([], None)
    with pytest.raises(NotFound):
        store.update_metadata(model_id, _set("name", "c"))


def test_patch_racing_delete_is_404_or_200_never_500_nor_a_resurrection(
    client: TestClient, settings: Any
) -> None:
    body = {"algorithm": "kmeans", "params": {"n_clusters": 2}, "data": {"points": POINTS}}
    for round_ in range(4):
        model_id = client.post("/v1/models", json=body).json()["id"]
        barrier = threading.Barrier(6)

        def patch(i: int, model_id: str = model_id, barrier: Any = barrier) -> int:
            barrier.wait()
            statuses = [
                client.patch(f"/v1/models/{model_id}", json={"tags": {f"k{i}": str(j)}}).status_code
                for j in range(3)
            ]
            assert set(statuses) <= {200, 404}, statuses
            return statuses[-1]

        def delete(model_id: str = model_id, barrier: Any = barrier) -> int:
            barrier.wait()
            return client.delete(f"/v1/models/{model_id}").status_code

        with ThreadPoolExecutor(6) as pool:
            patches = [pool.submit(patch, i) for i in range(5)]
            deleted = pool.submit(delete)
            assert deleted.result() == 204
            for future in patches:
                assert future.result() in (200, 404)
        assert client.get(f"/v1/models/{model_id}").status_code == 404, round_
        assert not (settings.store_dir / "models" / model_id).exists()
    assert client.get("/v1/models").json() == {"items": [], "next_cursor": None, "total": 0}
