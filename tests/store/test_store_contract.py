"""One contract, every store: the local store on disk and the S3 store on a bucket of a
moto server on loopback keep the same promises, checked by the same tests.

Damage is done behind the store's back through a ``Backend`` that reads and writes
the raw bytes where each store keeps them (files, or objects in the bucket).
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
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from service.errors import ArtifactIntegrityError, NotFound
from service.ids import new_job_id, new_model_id
from service.store.base import ModelStore, array_sha256
from service.store.local import LocalModelStore
from service.store.signing import ARTIFACT, META

SECRET = "contract-secret"


class Backend:
    """Where one store keeps its bytes, and a way to open more stores over them."""

    def new_store(self, *, cache_size: int = 8) -> ModelStore:
        raise NotImplementedError

    def read(self, *parts: str) -> bytes:
        raise NotImplementedError

    def write(self, data: bytes, *parts: str) -> None:
        raise NotImplementedError

    def remove(self, *parts: str) -> None:
        raise NotImplementedError


class LocalBackend(Backend):
    def __init__(self, root: Path) -> None:
        self.root = root

    def new_store(self, *, cache_size: int = 8) -> ModelStore:
        return LocalModelStore(self.root, secret_key=SECRET, cache_size=cache_size)

    def read(self, *parts: str) -> bytes:
        return self.root.joinpath(*parts).read_bytes()

    def write(self, data: bytes, *parts: str) -> None:
        path = self.root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def remove(self, *parts: str) -> None:
        self.root.joinpath(*parts).unlink()


class S3Backend(Backend):
    def __init__(self, url: str, bucket: str, cache_dir: Path) -> None:
        import boto3

        self.url, self.bucket, self.prefix = url, bucket, "some/prefix"
        self.cache_dir = cache_dir
        self.s3 = boto3.client("s3", endpoint_url=url)
        self.count = 0

    def new_store(self, *, cache_size: int = 8) -> ModelStore:
        from service.store.s3 import S3ModelStore

        self.count += 1  # each store its own points cache, as in separate processes
        return S3ModelStore(
            self.bucket,
            self.prefix,
            secret_key=SECRET,
            endpoint_url=self.url,
            cache_size=cache_size,
            points_cache_dir=self.cache_dir / f"points-{self.count}",
        )

    def _key(self, parts: tuple[str, ...]) -> str:
        return "/".join((self.prefix, *parts))

    def read(self, *parts: str) -> bytes:
        body: bytes = self.s3.get_object(Bucket=self.bucket, Key=self._key(parts))["Body"].read()
        return body

    def write(self, data: bytes, *parts: str) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self._key(parts), Body=data)

    def remove(self, *parts: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(parts))


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return LocalBackend(tmp_path / "store")
    url = request.getfixturevalue("moto_url")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Backend(url, bucket, tmp_path)


@pytest.fixture
def store(backend: Backend) -> ModelStore:
    return backend.new_store()


# -- helpers -------------------------------------------------------------------------
def _kmeans(seed: int = 0) -> KMeans:
    X, _ = make_blobs(n_samples=40, centers=3, random_state=seed)
    return KMeans(n_clusters=3, n_init=1, random_state=0).fit(X)


def _put(store: ModelStore, name: str = "m", **tags: str) -> str:
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
def test_put_get_load_delete_round_trip(store: ModelStore) -> None:
    X, _ = make_blobs(n_samples=40, centers=3, random_state=0)
    model_id = _put(store, "first", team="a")
    meta = store.get_metadata(model_id)
    assert meta["id"] == model_id and meta["resource"] == {"name": "first", "tags": {"team": "a"}}
    assert meta["artifact"]["bytes"] > 0
    np.testing.assert_array_equal(store.load(model_id).predict(X), _kmeans().predict(X))
    assert store.exists(model_id)
    assert store.count() == 1 and store.total_bytes() == meta["artifact"]["bytes"]
    assert store.load_points(model_id) is None
    store.delete(model_id)
    assert not store.exists(model_id)
    for read in (store.get_metadata, store.load, store.delete):
        with pytest.raises(NotFound):
            read(model_id)
    assert store.list(limit=10, cursor=None) == ([], None)
    store.check_writable()


@pytest.mark.parametrize("bad", ["..", "../secret.key", "ABCDEF" * 5, "0" * 29, "0" * 27 + "/"])
def test_ids_that_are_not_ours_are_refused_before_they_become_keys(
    store: ModelStore, bad: str
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
    assert store.count() == 0 and store.job_ids() == []


# -- atomic publish --------------------------------------------------------------------
def test_a_model_without_metadata_is_invisible(backend: Backend, store: ModelStore) -> None:
    shown = _put(store, "shown")
    hidden = _put(store, "hidden")
    backend.remove("models", hidden, META)  # what a crash before the publish leaves
    half = new_model_id()  # an upload cut short: the artifact, no metadata
    backend.write(backend.read("models", shown, ARTIFACT), "models", half, ARTIFACT)
    assert _ids(store.list(limit=10, cursor=None)[0]) == [shown]
    for model_id in (hidden, half):
        with pytest.raises(NotFound):
            store.get_metadata(model_id)
        with pytest.raises(NotFound):
            store.load(model_id)
    # The S3 store names a published model by its metadata alone.
    if not isinstance(store, LocalModelStore):
        assert not store.exists(hidden) and not store.exists(half)
        assert store.count() == 1


def test_unsigned_metadata_is_invisible_to_listing_and_refused_by_id(
    backend: Backend, store: ModelStore
) -> None:
    good = _put(store)
    bad = _put(store)
    raw = backend.read("models", bad, META)
    meta = json.loads(raw)
    del meta["signature"]
    backend.write(json.dumps(meta).encode(), "models", bad, META)
    assert _ids(store.list(limit=10, cursor=None)[0]) == [good]
    with pytest.raises(ArtifactIntegrityError):
        store.get_metadata(bad)


# -- tampering and damage --------------------------------------------------------------
@pytest.mark.parametrize("part", [META, ARTIFACT])
def test_one_flipped_byte_is_refused(backend: Backend, store: ModelStore, part: str) -> None:
    model_id = _put(store)
    raw = bytearray(backend.read("models", model_id, part))
    raw[len(raw) // 2] ^= 0x01
    backend.write(bytes(raw), "models", model_id, part)
    fresh = backend.new_store()
    with pytest.raises(ArtifactIntegrityError):
        fresh.load(model_id)


def test_a_planted_pickle_is_never_unpickled(
    backend: Backend, store: ModelStore, tmp_path: Path
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
        (META, lambda raw: b"{not json"),
        (META, lambda raw: b"[]"),
        (META, lambda raw: raw[:-3]),
    ],
    ids=["truncated-artifact", "empty-artifact", "garbage-meta", "array-meta", "cut-meta"],
)
def test_damaged_objects_are_integrity_errors(
    backend: Backend, store: ModelStore, part: str, damage: Any
) -> None:
    good = _put(store)
    model_id = _put(store)
    backend.write(damage(backend.read("models", model_id, part)), "models", model_id, part)
    with pytest.raises(ArtifactIntegrityError):
        backend.new_store().load(model_id)
    if part == META:
        assert _ids(store.list(limit=10, cursor=None)[0]) == [good]


def test_metadata_moved_to_another_id_is_refused(backend: Backend, store: ModelStore) -> None:
    a, b = _put(store), _put(store)
    backend.write(backend.read("models", a, META), "models", b, META)
    with pytest.raises(ArtifactIntegrityError):
        store.get_metadata(b)


def test_another_key_refuses_every_model(backend: Backend, store: ModelStore) -> None:
    model_id = _put(store)
    other = backend.new_store()
    other._signer = type(other._signer)(b"another key")  # type: ignore[attr-defined]
    with pytest.raises(ArtifactIntegrityError):
        other.get_metadata(model_id)


# -- paging ------------------------------------------------------------------------------
def test_pages_of_ten_over_25_models_newest_first_with_filters(store: ModelStore) -> None:
    ids = [_put(store, f"m{i}", parity=str(i % 2)) for i in range(25)]
    newest_first = ids[::-1]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = store.list(limit=10, cursor=cursor)
        seen += _ids(page)
        pages += 1
        if cursor is None:
            break
    assert seen == newest_first and pages == 3
    even = [m for i, m in enumerate(ids) if i % 2 == 0][::-1]  # 13 of them

    def is_even(meta: dict[str, Any]) -> bool:
        return bool(meta["resource"]["tags"].get("parity") == "0")

    page, cursor = store.list(limit=10, cursor=None, where=is_even)
    assert _ids(page) == even[:10] and cursor == even[9]
    page, cursor = store.list(limit=10, cursor=cursor, where=is_even)
    assert _ids(page) == even[10:] and cursor is None
    # Exactly one full page left: no empty page after it.
    page, cursor = store.list(limit=3, cursor=even[9], where=is_even)
    assert _ids(page) == even[10:] and cursor is None
    assert store.count() == 25 and store.count(where=is_even) == 13


# -- metadata updates and races ------------------------------------------------------------
def test_an_update_is_signed_and_seen_by_another_store(backend: Backend, store: ModelStore) -> None:
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
        assert model_id not in _ids(a.list(limit=100, cursor=None)[0])


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
            for meta in s.list(limit=100, cursor=None)[0]:
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
    assert sorted(_ids(stores[1].list(limit=100, cursor=None)[0])) == sorted(keep)
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
    assert a.count_datasets() == 0 and a.count() == 1


def test_tampered_dataset_points_are_refused(backend: Backend) -> None:
    store = backend.new_store()
    X = _points()
    meta, _ = store.put_dataset(X, {})
    name = meta.get("file", "data.npy")
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
    name = meta.get("file", "data.npy")
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


def test_datasets_list_newest_first_by_cursor(store: ModelStore) -> None:
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
        a.put_job({"id": job_id, "status": "queued"})
    a.put_job({"id": ids[0], "status": "running"})
    assert b.get_job(ids[0])["status"] == "running"
    assert b.job_ids() == ids[::-1]
    page, cursor = b.list_jobs(limit=2, cursor=None)
    assert _ids(page) == ids[::-1][:2]
    page, cursor = b.list_jobs(limit=10, cursor=cursor)
    assert _ids(page) == ids[::-1][2:] and cursor is None
    with pytest.raises(NotFound):
        b.get_job(new_job_id())


def test_damaged_jobs_are_integrity_errors_and_skipped(backend: Backend) -> None:
    store = backend.new_store()
    good, bad = new_job_id(), new_job_id()
    store.put_job({"id": good})
    backend.write(b"{not json", "jobs", f"{bad}.json")
    with pytest.raises(ArtifactIntegrityError):
        store.get_job(bad)
    assert _ids(store.list_jobs(limit=10, cursor=None)[0]) == [good]
