"""One contract, every store: artifacts on local disk or in a bucket of a moto server on
loopback, and metadata in SQLite or in a PostgreSQL server the tests start, keep the
same promises, checked by the same tests.

Damage is done behind the store's back through a ``Backend`` that reads and writes the
raw bytes where each store keeps them: artifacts as files or objects, metadata as the
``document`` column of its row.
"""

from __future__ import annotations

import json
import pathlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from service.errors import ArtifactIntegrityError, NotFound
from service.ids import new_job_id, new_model_id
from service.store import IndexedStore, open_store
from service.store.base import ModelQuery, array_sha256
from service.store.db import schema
from service.store.signing import ARTIFACT

SECRET = "contract-secret"
ALL = ModelQuery()


class Backend:
    """Where one store keeps its bytes, and a way to open more stores over them (as
    other processes or replicas would)."""

    def __init__(self, root: Path, database_url: str | None, store_url: str | None) -> None:
        self.root = root
        self.database_url = database_url
        self.store_url = store_url
        self.opened: list[IndexedStore] = []

    def new_store(self) -> IndexedStore:
        store = open_store(
            store_dir=self.root,
            store_url=self.store_url,
            database_url=self.database_url,
            secret_key=SECRET,
        )
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in self.opened:
            store.close()

    # -- artifacts ------------------------------------------------------------------
    def read(self, *parts: str) -> bytes:
        raise NotImplementedError

    def write(self, data: bytes, *parts: str) -> None:
        raise NotImplementedError

    def remove(self, *parts: str) -> None:
        raise NotImplementedError

    def artifact_names(self, kind: str) -> set[str]:
        """The ids (models) or ``id/file`` (datasets) of every artifact stored."""
        raise NotImplementedError

    # -- rows -----------------------------------------------------------------------
    def _table(self, kind: str) -> sa.Table:
        return {"models": schema.models, "datasets": schema.datasets, "jobs": schema.jobs}[kind]

    def read_row(self, kind: str, item_id: str) -> bytes:
        table = self._table(kind)
        with self.opened[0].db.engine.connect() as conn:
            document = conn.execute(sa.select(table.c.document).where(table.c.id == item_id))
            return str(document.scalar_one()).encode()

    def write_row(self, kind: str, item_id: str, document: bytes) -> None:
        table = self._table(kind)
        with self.opened[0].db.engine.begin() as conn:
            conn.execute(
                table.update().where(table.c.id == item_id).values(document=document.decode())
            )

    def delete_row(self, kind: str, item_id: str) -> None:
        table = self._table(kind)
        with self.opened[0].db.engine.begin() as conn:
            if kind == "models":
                conn.execute(
                    schema.model_tags.delete().where(schema.model_tags.c.model_id == item_id)
                )
            conn.execute(table.delete().where(table.c.id == item_id))


class LocalBackend(Backend):
    def read(self, *parts: str) -> bytes:
        return self.root.joinpath(*parts).read_bytes()

    def write(self, data: bytes, *parts: str) -> None:
        path = self.root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def remove(self, *parts: str) -> None:
        self.root.joinpath(*parts).unlink()

    def artifact_names(self, kind: str) -> set[str]:
        folder = self.root / kind
        if kind == "models":
            return {p.name for p in folder.iterdir()}
        return {f"{p.parent.name}/{p.name}" for p in folder.glob("*/*.npy")}


class S3Backend(Backend):
    def __init__(self, root: Path, database_url: str | None, url: str, bucket: str) -> None:
        import boto3

        self.bucket, self.prefix = bucket, "some/prefix"
        super().__init__(root, database_url, f"s3://{bucket}/{self.prefix}")
        self.s3 = boto3.client("s3", endpoint_url=url)

    def _key(self, parts: tuple[str, ...]) -> str:
        return "/".join((self.prefix, *parts))

    def read(self, *parts: str) -> bytes:
        body: bytes = self.s3.get_object(Bucket=self.bucket, Key=self._key(parts))["Body"].read()
        return body

    def write(self, data: bytes, *parts: str) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self._key(parts), Body=data)

    def remove(self, *parts: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(parts))

    def artifact_names(self, kind: str) -> set[str]:
        prefix = self._key((kind,)) + "/"
        got = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix).get("Contents", [])
        names = [obj["Key"][len(prefix) :] for obj in got]
        if kind == "models":
            return {name.partition("/")[0] for name in names}
        return set(names)


@pytest.fixture(params=["local-sqlite", "s3-sqlite", "local-postgres", "s3-postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    objects, database = request.param.split("-")
    database_url = request.getfixturevalue("postgres_url") if database == "postgres" else None
    if objects == "local":
        made: Backend = LocalBackend(tmp_path / "store", database_url, None)
    else:
        url = request.getfixturevalue("moto_url")
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        bucket = request.getfixturevalue("s3_bucket")
        made = S3Backend(tmp_path / "store", database_url, url, bucket)
    yield made
    made.close()


@pytest.fixture
def store(backend: Backend) -> IndexedStore:
    return backend.new_store()


# -- helpers -------------------------------------------------------------------------
def _kmeans(seed: int = 0) -> KMeans:
    X, _ = make_blobs(n_samples=40, centers=3, random_state=seed)
    return KMeans(n_clusters=3, n_init=1, random_state=0).fit(X)


def _put(store: IndexedStore, name: str = "m", **tags: str) -> str:
    model_id = new_model_id()
    store.put(model_id, _kmeans(), {"resource": {"name": name, "tags": dict(tags)}})
    return model_id


def _add_tag(key: str, value: str) -> Any:
    def change(meta: dict[str, Any]) -> dict[str, Any]:
        meta["resource"]["tags"][key] = value
        return meta

    return change


class _TouchOnUnpickle:
    """Unpickling this calls ``Path.touch(marker)``: a file appearing proves it ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _evil_pickle(marker: Path) -> bytes:
    path = marker.parent / "evil.joblib"
    joblib.dump(_TouchOnUnpickle(marker), path)
    return path.read_bytes()


def _ids(page: list[dict[str, Any]]) -> list[str]:
    return [m["id"] for m in page]


# -- round trip ----------------------------------------------------------------------
def test_put_get_load_delete_round_trip(store: IndexedStore) -> None:
    X, _ = make_blobs(n_samples=40, centers=3, random_state=0)
    model_id = _put(store, "first", team="a")
    meta = store.get_metadata(model_id)
    assert meta["id"] == model_id and meta["resource"] == {"name": "first", "tags": {"team": "a"}}
    assert meta["artifact"]["bytes"] > 0
    np.testing.assert_array_equal(store.load(model_id).predict(X), _kmeans().predict(X))
    assert store.exists(model_id)
    assert store.count(ALL) == 1 and store.total_bytes() == meta["artifact"]["bytes"]
    assert store.load_points(model_id) is None
    store.delete(model_id)
    assert not store.exists(model_id)
    for read in (store.get_metadata, store.load, store.delete):
        with pytest.raises(NotFound):
            read(model_id)
    assert store.list(ALL, limit=10, cursor=None) == ([], None)
    store.check_writable()


@pytest.mark.parametrize("bad", ["..", "../secret.key", "ABCDEF" * 5, "0" * 29, "0" * 27 + "/"])
def test_ids_that_are_not_ours_are_refused_before_they_become_keys(
    store: IndexedStore, bad: str
) -> None:
    for call in (store.get_metadata, store.load, store.delete, store.load_points):
        with pytest.raises(NotFound):
            call(bad)
    with pytest.raises(NotFound):
        store.put(bad, _kmeans(), {})
    with pytest.raises(NotFound):
        store.get_job(bad)
    with pytest.raises(NotFound):
        store.put_job({"id": bad})
    with pytest.raises(NotFound):
        store.load_dataset(bad)
    assert store.count(ALL) == 0 and store.count_jobs() == 0


# -- atomic publish --------------------------------------------------------------------
def test_an_artifact_without_a_row_is_invisible(backend: Backend, store: IndexedStore) -> None:
    shown = _put(store, "shown")
    hidden = _put(store, "hidden")
    backend.delete_row("models", hidden)  # what a crash before the publish leaves
    half = new_model_id()  # an upload cut short: the artifact, no row
    backend.write(backend.read("models", shown, ARTIFACT), "models", half, ARTIFACT)
    assert _ids(store.list(ALL, limit=10, cursor=None)[0]) == [shown]
    for model_id in (hidden, half):
        with pytest.raises(NotFound):
            store.get_metadata(model_id)
        with pytest.raises(NotFound):
            store.load(model_id)
        assert not store.exists(model_id)
    assert store.count(ALL) == 1


def test_unsigned_metadata_is_invisible_to_listing_and_refused_by_id(
    backend: Backend, store: IndexedStore
) -> None:
    good = _put(store)
    bad = _put(store)
    meta = json.loads(backend.read_row("models", bad))
    del meta["signature"]
    backend.write_row("models", bad, json.dumps(meta).encode())
    assert _ids(store.list(ALL, limit=10, cursor=None)[0]) == [good]
    with pytest.raises(ArtifactIntegrityError):
        store.get_metadata(bad)


# -- tampering and damage --------------------------------------------------------------
@pytest.mark.parametrize("part", ["row", ARTIFACT])
def test_one_flipped_byte_is_refused(backend: Backend, store: IndexedStore, part: str) -> None:
    model_id = _put(store)
    if part == "row":
        raw = bytearray(backend.read_row("models", model_id))
        raw[len(raw) // 2] ^= 0x01
        backend.write_row("models", model_id, bytes(raw))
    else:
        raw = bytearray(backend.read("models", model_id, part))
        raw[len(raw) // 2] ^= 0x01
        backend.write(bytes(raw), "models", model_id, part)
    fresh = backend.new_store()
    with pytest.raises(ArtifactIntegrityError):
        fresh.load(model_id)


def test_a_planted_pickle_is_never_unpickled(
    backend: Backend, store: IndexedStore, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    model_id = _put(store)
    backend.write(_evil_pickle(marker), "models", model_id, ARTIFACT)
    with pytest.raises(ArtifactIntegrityError):
        backend.new_store().load(model_id)
    assert not marker.exists()
    joblib.load(tmp_path / "evil.joblib")  # the payload is live: it would have run
    assert marker.exists()


@pytest.mark.parametrize(
    ("part", "damage"),
    [
        (ARTIFACT, lambda raw: raw[: len(raw) // 2]),
        (ARTIFACT, lambda raw: b""),
        ("row", lambda raw: b"{not json"),
        ("row", lambda raw: b"[]"),
        ("row", lambda raw: raw[:-3]),
    ],
    ids=["truncated-artifact", "empty-artifact", "garbage-row", "array-row", "cut-row"],
)
def test_damaged_objects_are_integrity_errors(
    backend: Backend, store: IndexedStore, part: str, damage: Any
) -> None:
    good = _put(store)
    model_id = _put(store)
    if part == "row":
        backend.write_row("models", model_id, damage(backend.read_row("models", model_id)))
    else:
        backend.write(damage(backend.read("models", model_id, part)), "models", model_id, part)
    with pytest.raises(ArtifactIntegrityError):
        backend.new_store().load(model_id)
    if part == "row":
        assert _ids(store.list(ALL, limit=10, cursor=None)[0]) == [good]


def test_metadata_moved_to_another_id_is_refused(backend: Backend, store: IndexedStore) -> None:
    a, b = _put(store), _put(store)
    backend.write_row("models", b, backend.read_row("models", a))
    with pytest.raises(ArtifactIntegrityError):
        store.get_metadata(b)


def test_another_key_refuses_every_model(backend: Backend, store: IndexedStore) -> None:
    model_id = _put(store)
    other = backend.new_store()
    other._signer = type(other._signer)(b"another key")  # type: ignore[attr-defined]
    with pytest.raises(ArtifactIntegrityError):
        other.get_metadata(model_id)


# -- paging ------------------------------------------------------------------------------
def test_pages_of_ten_over_25_models_newest_first_with_filters(store: IndexedStore) -> None:
    ids = [_put(store, f"m{i}", parity=str(i % 2)) for i in range(25)]
    newest_first = ids[::-1]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = store.list(ALL, limit=10, cursor=cursor)
        seen += _ids(page)
        pages += 1
        if cursor is None:
            break
    assert seen == newest_first and pages == 3
    even = [m for i, m in enumerate(ids) if i % 2 == 0][::-1]  # 13 of them

    is_even = ModelQuery(tags=("parity:0",))
    page, cursor = store.list(is_even, limit=10, cursor=None)
    assert _ids(page) == even[:10] and cursor == even[9]
    page, cursor = store.list(is_even, limit=10, cursor=cursor)
    assert _ids(page) == even[10:] and cursor is None
    # Exactly one full page left: no empty page after it.
    page, cursor = store.list(is_even, limit=3, cursor=even[9])
    assert _ids(page) == even[10:] and cursor is None
    assert store.count(ALL) == 25 and store.count(is_even) == 13


# -- metadata updates and races ------------------------------------------------------------
def test_an_update_is_signed_and_seen_by_another_store(
    backend: Backend, store: IndexedStore
) -> None:
    model_id = _put(store, "old")
    artifact = backend.read("models", model_id, ARTIFACT)

    def rename(meta: dict[str, Any]) -> dict[str, Any]:
        meta["resource"]["name"] = "new"
        return meta

    store.update_metadata(model_id, rename)
    assert backend.new_store().get_metadata(model_id)["resource"]["name"] == "new"
    assert backend.read("models", model_id, ARTIFACT) == artifact
    for key in ("id", "artifact"):
        with pytest.raises(ValueError):
            store.update_metadata(model_id, lambda meta, key=key: {**meta, key: "x"})
    with pytest.raises(NotFound):
        store.update_metadata(new_model_id(), rename)


def test_racing_patches_from_many_stores_lose_nothing(backend: Backend) -> None:
    stores = [backend.new_store() for _ in range(4)]
    model_id = _put(stores[0])
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: stores[i % 4].update_metadata(model_id, _add_tag(f"t{i}", str(i))),
                range(32),
            )
        )
    tags = stores[1].get_metadata(model_id)["resource"]["tags"]
    assert tags == {f"t{i}": str(i) for i in range(32)}


def test_a_patch_racing_a_delete_never_brings_the_model_back(backend: Backend) -> None:
    a, b = backend.new_store(), backend.new_store()
    for _ in range(10):
        model_id = _put(a)
        barrier = threading.Barrier(2)

        def patch(model_id: str = model_id, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            for i in range(20):
                try:
                    a.update_metadata(model_id, _add_tag(f"k{i}", "v"))
                except NotFound:  # the delete won: every later patch must fail too
                    continue

        t = threading.Thread(target=patch)
        t.start()
        barrier.wait()
        b.delete(model_id)
        t.join()
        assert not a.exists(model_id) and not b.exists(model_id)
        with pytest.raises(NotFound):
            a.get_metadata(model_id)
        assert model_id not in _ids(a.list(ALL, limit=100, cursor=None)[0])


def test_concurrent_puts_deletes_and_patches(backend: Backend) -> None:
    stores = [backend.new_store() for _ in range(3)]
    keep = [_put(stores[0]) for _ in range(6)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        s = stores[n % 3]
        for _ in range(6):
            model_id = _put(s)
            s.update_metadata(model_id, _add_tag("w", str(n)))
            stores[(n + 1) % 3].delete(model_id)

    def patcher(n: int) -> None:
        for i in range(10):
            stores[n % 3].update_metadata(keep[i % 6], _add_tag(f"p{n}-{i}", "x"))

    def reader() -> None:
        s = stores[2]
        while not stop.is_set():
            for meta in s.list(ALL, limit=100, cursor=None)[0]:
                try:
                    s.load(meta["id"])  # every listed model loads, or is gone since
                except NotFound:
                    pass
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(writer, n) for n in range(3)]
        futures += [pool.submit(patcher, n) for n in range(3)]
        for f in futures:
            f.result()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert sorted(_ids(stores[1].list(ALL, limit=100, cursor=None)[0])) == sorted(keep)
    for i, model_id in enumerate(keep):
        tags = stores[0].get_metadata(model_id)["resource"]["tags"]
        expected = {f"p{n}-{j}" for n in range(3) for j in range(10) if j % 6 == i}
        assert set(tags) == expected


def test_a_delete_through_one_store_is_seen_by_anothers_cache(backend: Backend) -> None:
    a, b = backend.new_store(), backend.new_store()
    model_id = _put(a)
    a.load(model_id)
    a.load(model_id)  # cached now
    b.delete(model_id)
    assert not a.exists(model_id)
    with pytest.raises(NotFound):
        a.load(model_id)


# -- datasets --------------------------------------------------------------------------------
def _points() -> np.ndarray:
    X, _ = make_blobs(n_samples=30, n_features=3, random_state=1)
    return X


def test_datasets_are_content_addressed_and_load_verified(backend: Backend) -> None:
    a, b = backend.new_store(), backend.new_store()
    X = _points()
    meta, created = a.put_dataset(X, {"name": "blobs"})
    assert created and meta["id"] == array_sha256(X) and meta["shape"] == [30, 3]
    again, created = b.put_dataset(np.asfortranarray(X), {"name": "x"})
    assert not created and again["id"] == meta["id"] and again["name"] == "blobs"
    loaded = b.load_dataset(meta["id"])
    np.testing.assert_array_equal(loaded, X)
    assert not loaded.flags.writeable
    assert b.get_dataset_metadata(meta["id"])["name"] == "blobs"
    assert b.count_datasets() == 1 and _ids(b.list_datasets(limit=5, cursor=None)[0]) == [
        meta["id"]
    ]
    # A model keeps its own copy of its training points past the dataset's delete.
    model_id = new_model_id()
    a.put(model_id, _kmeans(), {"resource": {}}, dataset_id=meta["id"])
    a.delete_dataset(meta["id"])
    for s in (a, b):
        with pytest.raises(NotFound):
            s.load_dataset(meta["id"])
        with pytest.raises(NotFound):
            s.get_dataset_metadata(meta["id"])
    np.testing.assert_array_equal(b.load_points(model_id), X)
    with pytest.raises(NotFound):
        a.delete_dataset(meta["id"])
    with pytest.raises(NotFound):
        a.put(new_model_id(), _kmeans(), {}, dataset_id=meta["id"])
    assert a.count_datasets() == 0 and a.count(ALL) == 1


def test_tampered_dataset_points_are_refused(backend: Backend) -> None:
    store = backend.new_store()
    X = _points()
    meta, _ = store.put_dataset(X, {})
    name = meta["file"]
    raw = bytearray(backend.read("datasets", meta["id"], name))
    raw[-1] ^= 0x40
    backend.write(bytes(raw), "datasets", meta["id"], name)
    with pytest.raises(ArtifactIntegrityError):
        backend.new_store().load_dataset(meta["id"])


def test_dataset_rows_read_any_range_from_another_process(backend: Backend) -> None:
    """What a Dask worker gets: a small picklable reader whose ranges are the rows."""
    import pickle

    X = np.random.default_rng(0).normal(size=(1_003, 3))
    meta, _ = backend.new_store().put_dataset(X, {})
    rows = pickle.loads(pickle.dumps(backend.new_store().dataset_rows(meta["id"])))
    assert rows.shape == (1_003, 3)
    for start, stop in ((0, 1_003), (0, 1), (500, 1_000), (1_000, 1_003), (7, 7)):
        np.testing.assert_array_equal(rows.read(start, stop), X[start:stop])
    with pytest.raises(ValueError):
        rows.read(1_000, 1_004)


def test_dataset_rows_refuse_a_damaged_file(backend: Backend) -> None:
    store = backend.new_store()
    X = np.ones((50, 2))
    meta, _ = store.put_dataset(X, {})
    name = meta["file"]
    raw = backend.read("datasets", meta["id"], name)
    rows = store.dataset_rows(meta["id"])
    backend.write(raw[: rows.offset + 8 * 2 * 10], "datasets", meta["id"], name)  # truncated
    with pytest.raises(ArtifactIntegrityError):
        rows.read(0, 50)
    np.testing.assert_array_equal(rows.read(0, 10), X[:10])
    backend.write(raw.replace(b"(50, 2)", b"(25, 4)"), "datasets", meta["id"], name)
    with pytest.raises(ArtifactIntegrityError):
        store.dataset_rows(meta["id"])  # the header no longer says the signed shape
    with pytest.raises(NotFound):
        store.dataset_rows("0" * 64)


def test_datasets_list_newest_first_by_cursor(store: IndexedStore) -> None:
    made = []
    for seed in range(5):
        X = np.full((2, 2), float(seed))
        made.append(store.put_dataset(X, {})[0]["id"])
        threading.Event().wait(0.002)  # distinct creation milliseconds
    page, cursor = store.list_datasets(limit=3, cursor=None)
    rest, end = store.list_datasets(limit=3, cursor=cursor)
    assert _ids(page) + _ids(rest) == made[::-1] and end is None


# -- jobs ------------------------------------------------------------------------------------
def test_jobs_put_get_replace_and_list(backend: Backend) -> None:
    a, b = backend.new_store(), backend.new_store()
    ids = [new_job_id() for _ in range(5)]
    for job_id in ids:
        a.add_job({"id": job_id, "status": "queued"})
    a.put_job({"id": ids[0], "status": "running"})
    assert b.get_job(ids[0])["status"] == "running"
    assert b.count_jobs() == 5
    page, cursor = b.list_jobs(limit=2, cursor=None)
    assert _ids(page) == ids[::-1][:2]
    page, cursor = b.list_jobs(limit=10, cursor=cursor)
    assert _ids(page) == ids[::-1][2:] and cursor is None
    with pytest.raises(NotFound):
        b.get_job(new_job_id())
    # A record deleted is never written back by a late update; expired ones are swept.
    b.delete_job(ids[1])
    assert a.put_job({"id": ids[1], "status": "running"}) is None
    with pytest.raises(NotFound):
        a.get_job(ids[1])
    with pytest.raises(NotFound):
        a.delete_job(ids[1])
    a.put_job({"id": ids[2], "status": "succeeded", "expires_at": "2000-01-01T00:00:00.000Z"})
    a.put_job({"id": ids[3], "status": "succeeded", "expires_at": "2999-01-01T00:00:00.000Z"})
    assert b.sweep_expired_jobs() == 1
    assert _ids(b.list_jobs(limit=10, cursor=None)[0]) == [ids[4], ids[3], ids[0]]


def test_damaged_jobs_are_integrity_errors_and_skipped(backend: Backend) -> None:
    store = backend.new_store()
    good, bad = new_job_id(), new_job_id()
    store.add_job({"id": good})
    store.add_job({"id": bad})
    backend.write_row("jobs", bad, b"{not json")
    with pytest.raises(ArtifactIntegrityError):
        store.get_job(bad)
    assert _ids(store.list_jobs(limit=10, cursor=None)[0]) == [good]


def test_jobs_in_progress_are_settled_once_whichever_store_asks(backend: Backend) -> None:
    """Recovery after a crash: replicas starting together each mark different jobs, and
    every orphan exactly once (``FOR UPDATE SKIP LOCKED`` on PostgreSQL)."""
    stores = [backend.new_store() for _ in range(4)]
    ids = [new_job_id() for _ in range(40)]
    for job_id in ids:
        stores[0].add_job({"id": job_id, "status": "running"})
    stores[0].add_job({"id": new_job_id(), "status": "succeeded"})
    seen: list[str] = []
    lock = threading.Lock()

    def settle(job: dict[str, Any]) -> dict[str, Any]:
        with lock:
            seen.append(job["id"])
        return {**job, "status": "failed"}

    with ThreadPoolExecutor(4) as pool:
        changed = list(pool.map(lambda s: s.settle_jobs(("queued", "running"), settle), stores))
    assert sum(changed) == 40 and sorted(seen) == sorted(ids)
    assert {stores[1].get_job(job_id)["status"] for job_id in ids} == {"failed"}


# -- queries in SQL ----------------------------------------------------------------------------
def test_filters_by_name_algorithm_tags_and_creation_time(store: IndexedStore) -> None:
    import datetime as dt

    def put(name: str, algorithm: str, created_at: str, **tags: str) -> str:
        model_id = new_model_id()
        resource = {"name": name, "algorithm": algorithm, "created_at": created_at, "tags": tags}
        store.put(model_id, _kmeans(), {"resource": resource})
        return model_id

    a = put("a", "gmm", "2026-01-01T00:00:00.000Z", team="x", tier="1")
    b = put("b", "kmeans", "2026-02-01T00:00:00.000Z", team="x")
    c = put("a", "kmeans", "2026-03-01T00:00:00.000Z", team="y:z", tier="1")

    def ids(**query: Any) -> list[str]:
        found = _ids(store.list(ModelQuery(**query), limit=10, cursor=None)[0])
        assert store.count(ModelQuery(**query)) == len(found)
        return found

    feb = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    assert ids(name="a") == [c, a]
    assert ids(algorithm="kmeans") == [c, b]
    assert ids(tags=("team:x",)) == [b, a]
    assert ids(tags=("team:y:z",)) == [c]  # the whole string, colons and all
    assert ids(tags=("team:x", "tier:1")) == [a]
    assert ids(tags=("team:y",)) == []
    assert ids(created_after=feb) == [c]
    assert ids(created_before=feb) == [b, a]
    assert ids(name="a", algorithm="kmeans", created_before=feb) == []
    store.update_metadata(a, lambda meta: {**meta, "resource": {**meta["resource"], "tags": {}}})
    assert ids(tags=("tier:1",)) == [c]


# -- crash safety: orphans and stores from before the database ---------------------------------
def test_the_sweeper_removes_old_artifacts_without_a_row_and_nothing_else(
    backend: Backend, store: IndexedStore
) -> None:
    kept = _put(store)
    dataset, _ = store.put_dataset(_points(), {})
    orphan = _put(store)
    backend.delete_row("models", orphan)  # a delete that crashed after its row went
    young = new_model_id()  # a put in flight: artifact written, row not yet
    backend.write(backend.read("models", kept, ARTIFACT), "models", young, ARTIFACT)
    stray = f"{dataset['id']}/data-0123456789abcdef.npy"  # an upload that lost its race
    backend.write(
        backend.read("datasets", dataset["id"], dataset["file"]), "datasets", *stray.split("/")
    )
    assert store.sweep_orphans(grace_seconds=3600) == 0  # all younger than the grace
    assert store.sweep_orphans(grace_seconds=-1) == 3
    assert backend.artifact_names("models") == {kept}
    assert backend.artifact_names("datasets") == {f"{dataset['id']}/{dataset['file']}"}
    store.load(kept)
    np.testing.assert_array_equal(store.load_dataset(dataset["id"]), _points())


def test_a_store_from_before_the_database_keeps_every_model(backend: Backend) -> None:
    """``meta.json`` and job files are imported once, signatures checked; a forged one
    is not, and a second start imports nothing again."""
    writer = backend.new_store()
    model_id = _put(writer, "old", team="a")
    dataset, _ = writer.put_dataset(_points(), {"name": "d"})
    with_points = new_model_id()
    writer.put(with_points, _kmeans(), {"resource": {"name": "p"}}, dataset_id=dataset["id"])
    forged = _put(writer)
    job_id = new_job_id()
    writer.add_job({"id": job_id, "status": "succeeded"})
    # Turn it into the old layout: each row as a file beside its artifact, no rows.
    backend.write(backend.read_row("models", model_id), "models", model_id, "meta.json")
    backend.write(backend.read_row("models", with_points), "models", with_points, "meta.json")
    backend.write(
        b'{"id": "%s", "signature": "00"}' % forged.encode(), "models", forged, "meta.json"
    )
    backend.write(
        backend.read_row("datasets", dataset["id"]), "datasets", dataset["id"], "meta.json"
    )
    backend.write(backend.read_row("jobs", job_id), "jobs", f"{job_id}.json")
    with writer.db.engine.begin() as conn:
        for table in (
            schema.model_tags,
            schema.models,
            schema.datasets,
            schema.jobs,
            schema.store_state,
        ):
            conn.execute(table.delete())

    reopened = backend.new_store()
    assert sorted(_ids(reopened.list(ALL, limit=10, cursor=None)[0])) == sorted(
        [model_id, with_points]
    )
    assert _ids(reopened.list(ModelQuery(tags=("team:a",)), limit=10, cursor=None)[0]) == [model_id]
    np.testing.assert_array_equal(reopened.load_points(with_points), _points())
    np.testing.assert_array_equal(reopened.load_dataset(dataset["id"]), _points())
    assert reopened.get_job(job_id)["status"] == "succeeded"
    reopened.load(model_id)
    assert backend.new_store().import_legacy() == 0


def test_idempotency_keys_hold_one_request_per_key(store: IndexedStore) -> None:
    def claim(key: str, body: str, resource_id: str) -> dict[str, Any]:
        return store.db.claim_key(
            "models",
            key,
            request_sha256=body * 64,
            resource="job",
            resource_id=resource_id,
            ttl_seconds=60,
        )

    with ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(lambda i: claim("k1", "a", f"job{i}"), range(16)))
    assert len({row["resource_id"] for row in rows}) == 1
    assert claim("k2", "b", "other")["resource_id"] == "other"
    assert claim("k1", "c", "late")["request_sha256"] == "a" * 64


def test_expired_models_are_swept_once_whichever_stores_sweep(backend: Backend) -> None:
    stores = [backend.new_store() for _ in range(3)]

    def put(expires_at: str | None) -> str:
        model_id = new_model_id()
        resource = {"name": "m", "algorithm": "kmeans", "expires_at": expires_at}
        stores[0].put(model_id, _kmeans(), {"resource": resource})
        return model_id

    expired = [put("2000-01-01T00:00:00.000Z") for _ in range(12)]
    alive = [put("2999-01-01T00:00:00.000Z"), put(None)]
    with ThreadPoolExecutor(3) as pool:
        removed = list(pool.map(lambda s: s.sweep_expired_models(), stores))
    assert sum(removed) == 12
    assert sorted(_ids(stores[1].list(ALL, limit=50, cursor=None)[0])) == sorted(alive)
    assert backend.artifact_names("models") == set(alive)
    for model_id in expired:
        assert not stores[2].exists(model_id)


def test_expired_datasets_are_swept_and_models_keep_their_points(backend: Backend) -> None:
    store = backend.new_store()
    X = _points()
    doomed, _ = store.put_dataset(X, {"expires_at": "2000-01-01T00:00:00.000Z"})
    kept, _ = store.put_dataset(X + 1.0, {"expires_at": None})
    model_id = new_model_id()
    store.put(model_id, _kmeans(), {"resource": {}}, dataset_id=doomed["id"])
    assert backend.new_store().sweep_expired_datasets() == 1
    with pytest.raises(NotFound):
        store.get_dataset_metadata(doomed["id"])
    assert store.get_dataset_metadata(kept["id"])["id"] == kept["id"]
    np.testing.assert_array_equal(store.load_points(model_id), X)
    assert backend.artifact_names("datasets") == {f"{kept['id']}/{kept['file']}"}


# -- inline datasets: stored by fits from the points in their body (issue 16, finding 9) ---
def test_an_inline_dataset_goes_once_no_model_or_unfinished_job_refers_to_it(
    backend: Backend,
) -> None:
    store, other = backend.new_store(), backend.new_store()
    X = _points()
    inline, _ = store.put_dataset(X, {}, inline=True)
    first, second = new_model_id(), new_model_id()
    for model_id in (first, second):
        store.put(model_id, _kmeans(), {"resource": {}}, dataset_id=inline["id"])
    other.delete(first)
    assert store.get_dataset_metadata(inline["id"])["id"] == inline["id"]  # second refers
    job_id = new_job_id()
    store.add_job({"id": job_id, "status": "queued", "request": {"dataset_id": inline["id"]}})
    other.delete(second)
    assert store.get_dataset_metadata(inline["id"])["id"] == inline["id"]  # the job does
    other.put_job({"id": job_id, "status": "cancelled", "request": {"dataset_id": inline["id"]}})
    with pytest.raises(NotFound):
        store.get_dataset_metadata(inline["id"])
    assert backend.artifact_names("datasets") == set()
    np.testing.assert_array_equal(store.put_dataset(X, {}, inline=True)[0]["shape"], [30, 3])


def test_an_upload_of_an_inline_dataset_keeps_it_and_an_upload_is_never_released(
    backend: Backend,
) -> None:
    store = backend.new_store()
    X = _points()
    store.put_dataset(X, {}, inline=True)
    adopted, created = store.put_dataset(X, {"name": "mine"})  # the same array, uploaded
    uploaded, _ = store.put_dataset(X + 1.0, {})
    again, created_again = store.put_dataset(X + 1.0, {}, inline=True)  # a fit of an upload
    assert not created and not created_again and again["id"] == uploaded["id"]
    model_ids = []
    for dataset in (adopted, uploaded):
        model_id = new_model_id()
        store.put(model_id, _kmeans(), {"resource": {}}, dataset_id=dataset["id"])
        model_ids.append(model_id)
    for model_id in model_ids:
        store.delete(model_id)
    assert store.release_datasets(older_than=-1) == 0
    assert store.count_datasets() == 2


def test_inline_datasets_of_expired_models_and_crashes_are_swept(backend: Backend) -> None:
    store = backend.new_store()
    X = _points()
    expiring, _ = store.put_dataset(X, {}, inline=True)
    model_id = new_model_id()
    resource = {"name": "m", "algorithm": "kmeans", "expires_at": "2000-01-01T00:00:00.000Z"}
    store.put(model_id, _kmeans(), {"resource": resource}, dataset_id=expiring["id"])
    # A fit that crashed between storing its points and its model left this one.
    crashed, _ = store.put_dataset(X + 1.0, {}, inline=True)
    assert store.sweep_expired_models() == 1
    with pytest.raises(NotFound):
        store.get_dataset_metadata(expiring["id"])
    assert store.sweep_orphans(grace_seconds=3600) == 0  # a fit may be storing it still
    assert store.get_dataset_metadata(crashed["id"])["id"] == crashed["id"]
    assert store.sweep_orphans(grace_seconds=-1) == 1
    assert store.count_datasets() == 0 and backend.artifact_names("datasets") == set()
