"""The embedded store on a real disk: atomic writes, signatures, keys, races, paging.

Everything runs against a real local store (files and SQLite) in ``tmp_path``, either directly
or through the HTTP app (``TestClient``), because the promises under test (a crash
never shows half a model, a tampered file is never unpickled, a delete is seen by
every reader) are about files and processes, not about any one function.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from service.config import Settings
from service.errors import ArtifactIntegrityError, NotFound, StoreUnavailable
from service.ids import new_model_id
from service.main import create_app
from service.store import IndexedStore
from service.store.signing import ARTIFACT
from tests.conftest import SEED_BLOBS
from tests.helpers_store import delete_row, local_store, read_row, write_row

PROBLEM = "application/problem+json"


# -- helpers -------------------------------------------------------------------------
def _points(seed: int, n: int = 40) -> list[list[float]]:
    X, _ = make_blobs(n_samples=n, n_features=2, centers=3, random_state=seed)
    rows: list[list[float]] = X.tolist()
    return rows


def _kmeans_body(seed: int, **extra: Any) -> dict[str, Any]:
    return {
        "algorithm": "kmeans",
        "params": {"n_clusters": 3, "n_init": 1, "random_state": 0},
        "data": {"points": _points(seed)},
        "include": [],
        **extra,
    }


def _gmm_body(seed: int) -> dict[str, Any]:
    return {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 2, "random_state": 0},
        "data": {"points": _points(seed)},
        "include": [],
    }


def _create(client: TestClient, body: dict[str, Any]) -> str:
    r = client.post("/v1/models", json=body)
    assert r.status_code == 201, r.text
    model_id: str = r.json()["id"]
    return model_id


def _fitted_kmeans(seed: int = 0) -> KMeans:
    return KMeans(n_clusters=3, n_init=1, random_state=0).fit(np.asarray(_points(seed)))


def _assert_integrity_problem(r: Any) -> None:
    """The damaged-store answer: 500, problem+json, a type that names the integrity check."""
    assert r.status_code == 500, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == 500
    assert body["type"].endswith("artifact-integrity"), body


def _tmp_entries(store_dir: Path) -> list[str]:
    return sorted(p.name for p in (store_dir / "tmp").iterdir())


class _TouchOnUnpickle:
    """A pickle payload: unpickling it calls ``Path.touch`` on ``marker``.

    Any code at all could stand in for ``touch``; a file appearing is the proof
    that the bytes were unpickled, its absence that they never were.
    """

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _evil_pickle(marker: Path) -> bytes:
    path = marker.parent / f"{marker.name}.joblib"
    joblib.dump(_TouchOnUnpickle(marker), path)
    blob = path.read_bytes()
    path.unlink()
    return blob


# -- 1. atomic writes under a crash --------------------------------------------------
# The child blocks inside put() on a stdlib call (so that the files of the half-written
# model are really on disk when it dies), tells the parent its model id, and waits
# to be SIGKILLed: a crash at a known point, without touching the store's code.
_CRASH_CHILD = """
import os, sys, time
from pathlib import Path
from service.ids import new_model_id
from tests.helpers_store import local_store

root, hook = Path(sys.argv[1]), sys.argv[2]
store = local_store(root, secret_key="crash-key")
model_id = new_model_id()

def block(*args, **kwargs):
    print(model_id, flush=True)
    time.sleep(120)

setattr(os, hook, block)
store.put(model_id, {"payload": list(range(10_000))}, {"resource": {"id": model_id}})
"""


@pytest.mark.parametrize(
    "hook",
    [
        pytest.param("fsync", id="killed-after-artifact-bytes-before-meta"),
        pytest.param("rename", id="killed-with-all-files-written-before-rename"),
    ],
)
def test_killed_writer_leaves_no_visible_model_and_its_leftovers_are_removed(
    tmp_path: Path, hook: str
) -> None:
    root = tmp_path / "store"
    store = local_store(root, secret_key="crash-key")
    estimator = _fitted_kmeans()
    kept_id = new_model_id()
    store.put(kept_id, estimator, {"resource": {"id": kept_id}})

    with subprocess.Popen(
        [sys.executable, "-c", _CRASH_CHILD, str(root), hook],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            dead_id = child.stdout.readline().strip()
            assert dead_id, "the child died before it started writing"
            # The half-written model is really there, under the child's pid, before the kill.
            leftovers = [p for p in (root / "tmp").iterdir() if p.name.startswith(f"{child.pid}-")]
            assert len(leftovers) == 1 and (leftovers[0] / ARTIFACT).is_file()
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)

    # Until a restart, the dead writer's model is invisible to a live store...
    assert [m["id"] for m in store.list(limit=10, cursor=None)[0]] == [kept_id]
    # ...and a store opened afterwards (a restart) removes what the dead process left.
    reopened = local_store(root, secret_key="crash-key")
    assert _tmp_entries(root) == []
    items, next_cursor = reopened.list(limit=10, cursor=None)
    assert [m["id"] for m in items] == [kept_id] and next_cursor is None
    assert reopened.count() == 1
    with pytest.raises(NotFound):
        reopened.get_metadata(dead_id)
    with pytest.raises(NotFound):
        reopened.load(dead_id)
    X = np.asarray(_points(1))
    np.testing.assert_array_equal(reopened.load(kept_id).predict(X), estimator.predict(X))


def test_failed_rename_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk at the last step is a 503-style error, not a half model or a tmp leak."""
    root = tmp_path / "store"
    store = local_store(root, secret_key="k")

    def no_space(src: Any, dst: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "rename", no_space)
    model_id = new_model_id()
    with pytest.raises(StoreUnavailable):
        store.put(model_id, _fitted_kmeans(), {"resource": {"id": model_id}})
    monkeypatch.undo()
    assert _tmp_entries(root) == []
    assert store.count() == 0
    with pytest.raises(NotFound):
        store.get_metadata(model_id)


def test_start_keeps_live_processes_temp_folders_and_removes_the_rest(tmp_path: Path) -> None:
    """Another live worker's write in progress survives our start; junk does not."""
    root = tmp_path / "store"
    local_store(root, secret_key="k")
    live_other = root / "tmp" / f"{os.getppid()}-feedbeef-0011223344556677"
    live_other.mkdir()
    junk = [
        root / "tmp" / "not-a-pid",
        root / "tmp" / "99999999999999999999999-deadbeef-00",  # no such pid, ever
        root / "tmp" / f"{2**22 + 12345}-deadbeef-00",  # above Linux's pid_max
    ]
    for path in junk:
        path.mkdir()
    (root / "tmp" / "stray-file").write_bytes(b"x")

    local_store(root, secret_key="k")
    assert _tmp_entries(root) == [live_other.name]


def test_second_store_in_one_process_keeps_the_first_stores_write_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two apps over one store in one process (tests, embedding): a start is no crash."""
    root = tmp_path / "store"
    first = local_store(root, secret_key="k")
    in_rename = threading.Event()
    go_on = threading.Event()
    real_rename = os.rename

    def slow_rename(src: Any, dst: Any) -> None:
        in_rename.set()
        assert go_on.wait(10)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", slow_rename)
    model_id = new_model_id()
    with ThreadPoolExecutor(1) as pool:
        writing = pool.submit(first.put, model_id, _fitted_kmeans(), {"resource": {}})
        assert in_rename.wait(10)
        second = local_store(root, secret_key="k")
        go_on.set()
        writing.result(timeout=10)
    monkeypatch.undo()
    assert second.get_metadata(model_id)["id"] == model_id


# -- 2. integrity: nothing unverified is ever unpickled -------------------------------
def test_evil_pickle_payload_is_live(tmp_path: Path) -> None:
    """Guard for the tests below: unpickling the crafted artifact does run its code."""
    marker = tmp_path / "ran"
    joblib.load(_write(tmp_path / "evil.joblib", _evil_pickle(marker)))
    assert marker.exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("resign_checksum", [False, True], ids=["as-is", "checksum-updated"])
def test_crafted_pickle_is_refused_without_running_it(
    client: TestClient, settings: Settings, tmp_path: Path, resign_checksum: bool
) -> None:
    model_id = _create(client, _kmeans_body(0))
    folder = settings.store_dir / "models" / model_id
    marker = tmp_path / "pwned"
    evil = _evil_pickle(marker)
    (folder / ARTIFACT).write_bytes(evil)
    if resign_checksum:  # an attacker without the key can fix the checksum, not the HMAC
        meta = json.loads(read_row(settings.store_dir, "model", model_id))
        meta["artifact"]["sha256"] = hashlib.sha256(evil).hexdigest()
        meta["artifact"]["bytes"] = len(evil)
        write_row(settings.store_dir, "model", model_id, json.dumps(meta).encode())

    r = client.post(f"/v1/models/{model_id}/predict", json={"points": [[0.0, 0.0]]})
    _assert_integrity_problem(r)
    assert not marker.exists()
    if not resign_checksum:  # the metadata is untouched: reading it never unpickles
        assert client.get(f"/v1/models/{model_id}").status_code == 200
    assert not marker.exists()


def test_one_flipped_byte_is_refused(client: TestClient, settings: Settings) -> None:
    model_id = _create(client, _kmeans_body(0))
    path = settings.store_dir / "models" / model_id / ARTIFACT
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    r = client.post(f"/v1/models/{model_id}/predict", json={"points": [[0.0, 0.0]]})
    _assert_integrity_problem(r)


def _edit_name(meta: dict[str, Any]) -> Any:
    meta["resource"]["name"] = "edited"
    return meta


def _edit_signature_type(meta: dict[str, Any]) -> Any:
    meta["signature"] = 12345
    return meta


def _edit_signature_text(meta: dict[str, Any]) -> Any:
    meta["signature"] = "é" * 64
    return meta


def _drop_signature(meta: dict[str, Any]) -> Any:
    del meta["signature"]
    return meta


def _edit_nan(meta: dict[str, Any]) -> Any:
    meta["resource"]["inertia"] = float("nan")
    return meta


def _edit_not_object(meta: dict[str, Any]) -> Any:
    return [meta]


@pytest.mark.parametrize(
    "edit",
    [
        _edit_name,
        _edit_signature_type,
        _edit_signature_text,
        _drop_signature,
        _edit_nan,
        _edit_not_object,
        None,  # not JSON at all
    ],
    ids=["name", "signature-number", "signature-non-ascii", "unsigned", "nan", "list", "garbage"],
)
def test_edited_metadata_is_refused(client: TestClient, settings: Settings, edit: Any) -> None:
    model_id = _create(client, _kmeans_body(0))
    if edit is None:
        document = b"\x00{not json"
    else:
        document = json.dumps(edit(json.loads(read_row(settings.store_dir, "model", model_id))))
        document = document.encode()
    write_row(settings.store_dir, "model", model_id, document)
    _assert_integrity_problem(client.get(f"/v1/models/{model_id}"))
    _assert_integrity_problem(
        client.post(f"/v1/models/{model_id}/predict", json={"points": [[0.0, 0.0]]})
    )


def test_swapped_artifacts_are_refused(client: TestClient, settings: Settings) -> None:
    """Both artifacts are genuine and signed, but each is bound to its own model id."""
    a, b = _create(client, _kmeans_body(0)), _create(client, _kmeans_body(1))
    pa = settings.store_dir / "models" / a / ARTIFACT
    pb = settings.store_dir / "models" / b / ARTIFACT
    blob_a, blob_b = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(blob_b)
    pb.write_bytes(blob_a)
    for model_id in (a, b):
        r = client.post(f"/v1/models/{model_id}/predict", json={"points": [[0.0, 0.0]]})
        _assert_integrity_problem(r)


def test_a_row_moved_to_another_id_is_refused(client: TestClient, settings: Settings) -> None:
    a, b = _create(client, _kmeans_body(0)), _create(client, _kmeans_body(1))
    write_row(settings.store_dir, "model", b, read_row(settings.store_dir, "model", a))
    _assert_integrity_problem(client.get(f"/v1/models/{b}"))
    _assert_integrity_problem(client.post(f"/v1/models/{b}/predict", json={"points": [[0.0, 0.0]]}))


def test_a_model_whose_row_is_gone_is_404_and_its_folder_an_orphan(
    client: TestClient, settings: Settings
) -> None:
    model_id = _create(client, _kmeans_body(0))
    delete_row(settings.store_dir, "model", model_id)
    assert client.get(f"/v1/models/{model_id}").status_code == 404
    assert (settings.store_dir / "models" / model_id / ARTIFACT).is_file()


def test_store_with_another_key_refuses_existing_models(
    client: TestClient, settings: Settings
) -> None:
    model_id = _create(client, _kmeans_body(0))
    other = Settings(store_dir=settings.store_dir, secret_key="another-key")
    with TestClient(create_app(other)) as c:
        _assert_integrity_problem(c.get(f"/v1/models/{model_id}"))
        _assert_integrity_problem(
            c.post(f"/v1/models/{model_id}/predict", json={"points": [[0.0, 0.0]]})
        )
    store = local_store(settings.store_dir, secret_key="another-key")
    with pytest.raises(ArtifactIntegrityError):
        store.load(model_id)


@pytest.mark.parametrize("bad", ["..", "../secret.key", "ABCDEF" * 5, "0" * 29, "0" * 27 + "/"])
def test_ids_that_are_not_ours_never_reach_the_disk(tmp_path: Path, bad: str) -> None:
    store = local_store(tmp_path / "store", secret_key="k")
    with pytest.raises(NotFound):
        store.get_metadata(bad)
    with pytest.raises(NotFound):
        store.load(bad)
    with pytest.raises(NotFound):
        store.delete(bad)
    with pytest.raises(NotFound):
        store.put(bad, {"x": 1}, {"resource": {}})
    assert (tmp_path / "store" / "secret.key").exists() is False  # a configured key


# -- 3. restart ---------------------------------------------------------------------
def test_restart_keeps_models_and_predictions(settings: Settings) -> None:
    body = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 4, "random_state": 0},
        "data": {"generator": SEED_BLOBS},
        "name": "seed-blobs",
    }
    X, _ = make_blobs(n_samples=200, n_features=2, centers=4, cluster_std=1.6, random_state=10)
    new_points = (X[:25] + 0.5).tolist()
    with TestClient(create_app(settings)) as c:
        created = c.post("/v1/models", json=body)
        assert created.status_code == 201, created.text
        model_id = created.json()["id"]
        resource = c.get(f"/v1/models/{model_id}").json()
        before = c.post(f"/v1/models/{model_id}/predict", json={"points": new_points}).json()

    with TestClient(create_app(settings)) as c:
        listed = c.get("/v1/models").json()
        assert [m["id"] for m in listed["items"]] == [model_id]
        assert c.get(f"/v1/models/{model_id}").json() == resource
        after = c.post(f"/v1/models/{model_id}/predict", json={"points": new_points}).json()
    assert after == before

    gm = GaussianMixture(n_components=4, random_state=0).fit(X)
    np.testing.assert_array_equal(after["labels"], gm.predict(np.asarray(new_points)))
    np.testing.assert_allclose(
        after["probabilities"], gm.predict_proba(np.asarray(new_points)), rtol=1e-10
    )


# -- 4. generated secret key ----------------------------------------------------------
def test_generated_key_is_private_and_reused_after_restart(tmp_path: Path) -> None:
    settings = Settings(store_dir=tmp_path / "fresh" / "store", secret_key=None)
    key_path = settings.store_dir / "secret.key"
    assert not settings.store_dir.exists()
    with TestClient(create_app(settings)) as c:
        model_id = _create(c, _kmeans_body(0))
        before = c.post(f"/v1/models/{model_id}/predict", json={"points": _points(5)}).json()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = key_path.read_bytes()
    assert len(key.strip()) >= 32

    with TestClient(create_app(settings)) as c:
        assert c.get(f"/v1/models/{model_id}").status_code == 200
        after = c.post(f"/v1/models/{model_id}/predict", json={"points": _points(5)}).json()
    assert after == before
    assert key_path.read_bytes() == key


_OPEN_AND_PUT_CHILD = """
import sys, time
from pathlib import Path
from service.ids import new_model_id
from tests.helpers_store import local_store

root, start_at = Path(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, start_at - time.time()))
store = local_store(root)
model_id = new_model_id()
store.put(model_id, {"written_by": model_id}, {"resource": {"id": model_id}})
print(model_id, flush=True)
"""


def test_processes_opening_a_fresh_store_together_agree_on_one_key(tmp_path: Path) -> None:
    """Workers starting at once must not each mint a key and refuse each other's models."""
    root = tmp_path / "store"
    start_at = time.time() + 1.5  # all children past their imports, then open together
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_AND_PUT_CHILD, str(root), repr(start_at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    ids = []
    for child in children:
        out, _ = child.communicate(timeout=30)
        assert child.returncode == 0
        ids.append(out.strip())
    store = local_store(root)
    for model_id in ids:
        assert store.load(model_id) == {"written_by": model_id}
    assert stat.S_IMODE((root / "secret.key").stat().st_mode) == 0o600


def test_threads_opening_a_fresh_store_together_agree_on_one_key(tmp_path: Path) -> None:
    root = tmp_path / "store"
    barrier = threading.Barrier(8)

    def open_store(_: int) -> IndexedStore:
        barrier.wait()
        return local_store(root)

    with ThreadPoolExecutor(8) as pool:
        stores = list(pool.map(open_store, range(8)))
    model_id = new_model_id()
    stores[0].put(model_id, {"x": 1}, {"resource": {}})
    for store in stores[1:]:
        assert store.load(model_id) == {"x": 1}


def test_empty_key_file_left_by_a_crash_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    """Minting a fresh key would silently orphan every stored model: refuse instead."""
    root = tmp_path / "store"
    root.mkdir()
    (root / "secret.key").write_bytes(b"")
    with pytest.raises(StoreUnavailable):
        local_store(root)


# -- delete seen by another reader (a cheap stand-in for a second worker) -------------
def test_delete_by_one_store_is_seen_by_another_stores_cache(tmp_path: Path) -> None:
    root = tmp_path / "store"
    writer, reader = local_store(root, secret_key="k"), local_store(root, secret_key="k")
    model_id = new_model_id()
    writer.put(model_id, _fitted_kmeans(), {"resource": {}})
    reader.load(model_id)
    reader.load(model_id)
    writer.delete(model_id)
    with pytest.raises(NotFound):
        reader.load(model_id)
    with pytest.raises(NotFound):
        reader.get_metadata(model_id)
    with pytest.raises(NotFound):
        writer.delete(model_id)
    assert _tmp_entries(root) == []


# -- 6. racing requests ---------------------------------------------------------------
@pytest.fixture
def racing_client(tmp_path: Path) -> Iterator[TestClient]:
    """As many fit slots as racing threads, so that fits really overlap in the store."""
    settings = Settings(
        store_dir=tmp_path / "store", secret_key="test-secret-key", max_concurrent_fits=16
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_racing_creates_reads_lists_and_deletes(racing_client: TestClient, tmp_path: Path) -> None:
    client, store_dir = racing_client, tmp_path / "store"
    deadline = time.monotonic() + 2.0
    statuses: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()

    def note(op: str, status: int) -> int:
        with lock:
            statuses[(op, status)] += 1
        return status

    def worker(i: int) -> tuple[list[str], list[str]]:
        kept: list[str] = []
        deleted: list[str] = []
        n = 0
        while time.monotonic() < deadline:
            body = _gmm_body(i * 1000 + n) if n % 3 == 2 else _kmeans_body(i * 1000 + n)
            r = client.post("/v1/models", json=body)
            if r.status_code == 429:  # load shedding is a fine answer to a stampede
                note("shed", 429)
                time.sleep(0.02)
                continue
            if note("create", r.status_code) != 201:
                break
            model_id = r.json()["id"]
            note("get", client.get(f"/v1/models/{model_id}").status_code)
            note("list", client.get("/v1/models", params={"limit": 7}).status_code)
            points = {"points": _points(n, 5)}
            note("predict", client.post(f"/v1/models/{model_id}/predict", json=points).status_code)
            if n % 2:
                note("delete", client.delete(f"/v1/models/{model_id}").status_code)
                note("gone", client.get(f"/v1/models/{model_id}").status_code)
                deleted.append(model_id)
            else:
                kept.append(model_id)
            n += 1
        return kept, deleted

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(worker, range(16)))

    expected = {
        "shed": 429,
        "create": 201,
        "get": 200,
        "list": 200,
        "predict": 200,
        "delete": 204,
        "gone": 404,
    }
    unexpected = {k: v for k, v in statuses.items() if expected[k[0]] != k[1]}
    assert not unexpected, unexpected
    kept = [m for k, _ in results for m in k]
    deleted = [m for _, d in results for m in d]
    assert len(kept) >= 16 and len(set(kept + deleted)) == len(kept) + len(deleted)

    listed: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/models", params=params).json()
        listed += [m["id"] for m in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert sorted(listed) == sorted(kept)
    store = local_store(store_dir, secret_key="test-secret-key")
    for model_id in kept:
        assert client.get(f"/v1/models/{model_id}").status_code == 200
        store.load(model_id)
    for model_id in deleted:
        assert client.get(f"/v1/models/{model_id}").status_code == 404
        points = {"points": [[0.0, 0.0]]}
        assert client.post(f"/v1/models/{model_id}/predict", json=points).status_code == 404
    assert _tmp_entries(store_dir) == []


# -- 8. pagination ----------------------------------------------------------------------
def test_pages_walk_every_model_once_while_models_are_added(client: TestClient) -> None:
    initial = [_create(client, _kmeans_body(i)) for i in range(11)]
    added: list[str] = []
    stop = threading.Event()

    def keep_adding() -> None:
        i = 100
        while not stop.is_set():
            added.append(_create(client, _kmeans_body(i)))
            i += 1

    walked: list[dict[str, Any]] = []
    pages = 0
    with ThreadPoolExecutor(1) as pool:
        adder = pool.submit(keep_adding)
        try:
            cursor = None
            while True:
                params: dict[str, Any] = {"limit": 4} | ({"cursor": cursor} if cursor else {})
                r = client.get("/v1/models", params=params)
                assert r.status_code == 200, r.text
                page = r.json()
                assert len(page["items"]) <= 4
                assert all("labels" not in m for m in page["items"])
                walked += page["items"]
                pages += 1
                time.sleep(0.05)  # let the adder land models between pages
                if not (cursor := page["next_cursor"]):
                    break
        finally:
            stop.set()
            adder.result(timeout=30)

    ids = [m["id"] for m in walked]
    assert len(ids) == len(set(ids)), "a model was listed twice"
    assert set(initial) <= set(ids), "a model was skipped"
    assert set(ids) <= set(initial) | set(added)
    assert ids == sorted(ids, reverse=True), "not newest first"
    created = [m["created_at"] for m in walked if m["id"] in initial]
    assert created == sorted(created, reverse=True)
    assert pages >= 3
    assert len(added) >= 1


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "not-a-cursor"},
        {"cursor": "../../secret.key"},
        {"cursor": "F" * 28},
        {"cursor": "0" * 27},
        {"limit": 0},
        {"limit": 1001},
    ],
)
def test_invalid_page_parameters_are_422(client: TestClient, params: dict[str, Any]) -> None:
    r = client.get("/v1/models", params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["errors"][0]["loc"] == ["query", next(iter(params))]


# -- 9. readiness -------------------------------------------------------------------------
def test_readyz_is_503_while_the_store_cannot_be_written(
    client: TestClient, settings: Settings
) -> None:
    assert client.get("/readyz").status_code == 200
    model_id = _create(client, _kmeans_body(0))
    tmp = settings.store_dir / "tmp"
    shutil.rmtree(tmp)
    tmp.write_bytes(b"a file where the store needs a folder")  # refuses root too
    try:
        r = client.get("/readyz")
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith(PROBLEM)
        assert r.json()["type"].endswith("store-unavailable")
        r = client.post("/v1/models", json=_kmeans_body(0))
        assert r.status_code == 503, r.text
        assert r.json()["type"].endswith("store-unavailable")
        assert client.get(f"/v1/models/{model_id}").status_code == 200  # reads still work
        # A delete removes the row first: the model is gone although its folder cannot
        # be moved away now; the sweeper removes that orphan later.
        assert client.delete(f"/v1/models/{model_id}").status_code == 204
        assert client.get(f"/v1/models/{model_id}").status_code == 404
        assert (settings.store_dir / "models" / model_id).is_dir()
    finally:
        tmp.unlink()
        tmp.mkdir()
    assert client.get("/readyz").status_code == 200
    assert client.delete(f"/v1/models/{model_id}").status_code == 404


def test_readyz_is_503_when_models_cannot_be_published(
    client: TestClient, settings: Settings
) -> None:
    """Writing a temp file is not enough: a model only exists once renamed into models/."""
    model_id = _create(client, _kmeans_body(0))
    models = settings.store_dir / "models"
    aside = settings.store_dir / "models-aside"
    models.rename(aside)
    models.write_bytes(b"a file where the store needs a folder")
    try:
        r = client.get("/readyz")
        assert r.status_code == 503, r.text
        assert r.json()["type"].endswith("store-unavailable")
        r = client.post("/v1/models", json=_kmeans_body(0))
        assert r.status_code == 503, r.text
        assert _tmp_entries(settings.store_dir) == []
    finally:
        models.unlink()
        aside.rename(models)
    assert client.get("/readyz").status_code == 200
    assert client.get(f"/v1/models/{model_id}").status_code == 200


def test_readyz_is_503_while_the_disk_is_nearly_full(tmp_path: Path) -> None:
    settings = Settings(
        store_dir=tmp_path / "store", secret_key="k", store_min_free_bytes=2**62
    )  # more than any disk has: the store is "nearly full"
    with TestClient(create_app(settings)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503, r.text
        assert "GMM_STORE_MIN_FREE_BYTES" in r.json()["detail"]
        assert client.get("/v1/models").status_code == 200  # reads go on
        assert _tmp_entries(settings.store_dir) == []


def test_a_probe_that_fails_midway_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.store.local as local

    store = local_store(tmp_path / "store", secret_key="k")

    def half_written(path: Path, data: bytes) -> None:
        path.write_bytes(data[:1])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(local, "_write_file", half_written)
    for _ in range(3):
        with pytest.raises(StoreUnavailable, match="No space left"):
            store.check_writable()
    assert _tmp_entries(tmp_path / "store") == []
