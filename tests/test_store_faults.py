"""A store that fills up, turns read-only or whose bucket misbehaves (issue 16): writes
answer 503 (or 507) problem+json that names the cause and nothing of the server's,
reads and predictions go on, nothing is half-written, /readyz says the replica cannot
write, and all of it recovers without a restart.

These are the real faults, against a real ``python -m service``: a small tmpfs filled
to its last byte, a tmpfs remounted read-only under the running server, and an HTTP
proxy in front of moto that answers 500 or 503, resets connections or never answers.
Their monkeypatched versions are in tests/api/test_hostile_inputs.py and
tests/store/test_local.py.

Mounting needs root (and CAP_SYS_ADMIN): without it those tests skip. Each mount is
undone by the test that made it, whatever happens.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.helpers_fault_proxy import Fault, FaultProxy
from tests.helpers_server import ServerProcess, running_server

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"
#: Readiness turns false under this much free space; the full-disk test goes below it.
MIN_FREE_BYTES = 1_000_000
#: How long a store that is writable again may take to say so on /readyz.
RECOVERY_SECONDS = 15.0
#: The cause a full disk's 503 names: the file system's, or SQLite's for the catalogue.
FULL = re.compile(r"No space left on device|database or disk is full")
READ_ONLY = "Read-only file system"

POINTS = [[0.0, 0.0], [0.5, 0.2], [10.0, 10.0], [10.2, 9.7], [0.1, 0.3], [9.9, 10.1]]


# -- what every test uses ----------------------------------------------------------------


def points(seed: int, n: int = 6) -> list[list[float]]:
    """Points no other request sent: a dataset is stored once per content, and a write
    that finds its array already stored would not write at all."""
    rng = np.random.default_rng(seed)
    rows: list[list[float]] = rng.normal(size=(n, 2)).round(6).tolist()
    return rows


def npy(X: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, X)
    return buf.getvalue()


def fit_body(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 2, "random_state": 0},
        "data": data,
        "include": [],
    }


def fit(http: httpx.Client, data: dict[str, Any]) -> str:
    r = http.post("/v1/models", json=fit_body(data))
    assert r.status_code == 201, r.text
    model_id: str = r.json()["id"]
    return model_id


def post_npy(http: httpx.Client, X: np.ndarray) -> httpx.Response:
    return http.post("/v1/datasets", content=npy(X), headers={"Content-Type": "application/x-npy"})


def upload(http: httpx.Client, X: np.ndarray) -> str:
    r = post_npy(http, X)
    assert r.status_code == 201, r.text
    dataset_id: str = r.json()["id"]
    return dataset_id


@dataclass(frozen=True)
class Reads:
    """What a client reads of one model: compared before, during and after a fault."""

    model: dict[str, Any]
    listed: list[str]
    predicted: dict[str, Any]


def reads(http: httpx.Client, model_id: str) -> Reads:
    got = http.get(f"/v1/models/{model_id}")
    listed = http.get("/v1/models", params={"limit": 100})
    predicted = http.post(f"/v1/models/{model_id}/predict", json={"points": POINTS})
    for r in (got, listed, predicted):
        assert r.status_code == 200, (r.request.url, r.status_code, r.text)
    return Reads(got.json(), [m["id"] for m in listed.json()["items"]], predicted.json())


def assert_refused(
    r: httpx.Response, cause: str | re.Pattern[str], hidden: tuple[str, ...]
) -> dict[str, Any]:
    """A write the store could not take: 503 (or 507, a quota) problem+json naming the
    cause, and nothing of the server's own (paths, endpoint, bucket, keys)."""
    assert r.status_code in (503, 507), (r.request.url, r.status_code, r.text)
    assert r.headers["content-type"] == PROBLEM, r.headers
    problem: dict[str, Any] = r.json()
    assert problem["status"] == r.status_code, problem
    assert re.search(cause, problem["detail"]), problem
    assert "/" not in problem["detail"], problem  # no path, URL nor object key
    for secret in hidden:
        assert secret not in r.text, (secret, r.text)
    return problem


def wait_ready(http: httpx.Client) -> None:
    """Poll /readyz until the store says it can write again; no restart in between."""
    deadline = time.monotonic() + RECOVERY_SECONDS
    while (r := http.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, f"still not ready: {r.status_code} {r.text}"
        time.sleep(0.1)


def totals(http: httpx.Client) -> tuple[int, int]:
    models = http.get("/v1/models").json()["total"]
    datasets = http.get("/v1/datasets").json()["total"]
    return models, datasets


def assert_counts(http: httpx.Client, *, models: int, datasets_at_most: int) -> None:
    """No model but those expected, and no new dataset (one whose last model was just
    deleted may go with it)."""
    got_models, got_datasets = totals(http)
    assert got_models == models and got_datasets <= datasets_at_most, totals(http)


def assert_jobs_settled(http: httpx.Client) -> None:
    """A fit that could not store its model is a failed job, never one left running."""
    for job in http.get("/v1/jobs", params={"limit": 100}).json()["items"]:
        assert job["status"] in ("succeeded", "failed"), job


def at_once(*calls: Callable[[], httpx.Response]) -> list[tuple[httpx.Response, float]]:
    """The requests side by side (a stalled store makes each wait its full timeout),
    each with the seconds it took."""

    def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
        start = time.monotonic()
        return call(), time.monotonic() - start

    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(timed, calls))


# -- local store: a real file system ----------------------------------------------------


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` for the block, unmounted after it (lazily
    if something still holds it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("mount(8) is not installed")
    path.mkdir(parents=True, exist_ok=True)
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if _run("umount", str(path)).returncode != 0:
            _run("umount", "-l", str(path))


def remount(path: Path, mode: str) -> None:
    """``mount -o remount,<mode>``. The kernel refuses ``ro`` while a file on the mount
    is open for writing: a write in flight may hold one for a moment, a file the
    server keeps open would hold one for ever (and fail the test)."""
    deadline = time.monotonic() + 5
    while (done := _run("mount", "-o", f"remount,{mode}", str(path))).returncode != 0:
        assert time.monotonic() < deadline, f"remount,{mode} failed: {done.stderr}"
        time.sleep(0.1)


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


@contextlib.contextmanager
def filled(store: Path) -> Iterator[Callable[[int], None]]:
    """A filler file in the store; ``leave(n)`` grows it until ``n`` bytes are free
    (``leave(0)``: until the file system answers ENOSPC). Removed after the block."""
    filler = store / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def leave(n: int) -> None:
        if n:
            os.write(fd, b"\0" * max(free_bytes(store) - n, 0))
            return
        chunk = 1 << 20
        while chunk:
            try:
                os.write(fd, b"\0" * chunk)
            except OSError:
                chunk //= 2
        assert free_bytes(store) == 0

    try:
        yield leave
    finally:
        os.close(fd)
        filler.unlink()


def store_files(store: Path) -> dict[str, int]:
    """Every file and folder of a local store (size, -1 for a folder) but the test's
    filler and SQLite's own files, whose sizes change with every probe."""
    found = {}
    for path in store.rglob("*"):
        name = str(path.relative_to(store))
        if name == "filler" or name.startswith("catalogue.db"):
            continue
        found[name] = -1 if path.is_dir() else path.stat().st_size
    return found


def test_a_full_disk_refuses_writes_serves_reads_and_recovers(tmp_path: Path) -> None:
    """The store (its SQLite catalogue included) on a 16 MB tmpfs, filled twice: first
    nearly (the catalogue can still append, an upload of 320 KB cannot land), then to
    the last byte. Every prediction reads its artifact from that disk (no cache)."""
    with (
        tmpfs(tmp_path / "store", "16m") as store,
        running_server(
            {
                "GMM_STORE_DIR": str(store),
                "GMM_STORE_MIN_FREE_BYTES": str(MIN_FREE_BYTES),
                "GMM_CACHE_SIZE": "0",
            },
            cwd=tmp_path,
        ) as server,
    ):
        http = server.client
        model_id = fit(http, {"points": POINTS})
        upload(http, np.asarray(points(1)))
        before = reads(http, model_id)
        files, counts = store_files(store), totals(http)
        big = np.random.default_rng(2).normal(size=(20_000, 2))  # 320 KB as .npy
        blobs = {"kind": "blobs", "n_samples": 20_000, "n_features": 2, "random_state": 3}
        big_fit = fit_body({"generator": blobs})  # its points are stored too: 320 KB
        hidden = (str(store), str(tmp_path))

        with filled(store) as leave:
            for left, small in ((200_000, False), (0, True)):
                leave(left)
                X = np.asarray(points(4)) if small else big
                assert_refused(post_npy(http, X), FULL, hidden)
                body = fit_body({"points": points(5)}) if small else big_fit
                assert_refused(http.post("/v1/models", json=body), FULL, hidden)
                assert reads(http, model_id) == before
                ready = http.get("/readyz")
                assert ready.status_code == 503
                assert_refused(ready, "GMM_STORE_MIN_FREE_BYTES", hidden)
                assert http.get("/healthz").status_code == 200
            # Nothing half-written: no row, no file, no temporary left by a write or a probe.
            assert totals(http) == counts
            assert store_files(store) == files
            assert_jobs_settled(http)

        wait_ready(http)
        upload(http, big)
        assert http.post("/v1/models", json=big_fit).status_code == 201
        assert reads(http, model_id).predicted == before.predicted
        assert totals(http) == (counts[0] + 1, counts[1] + 2)  # the fit stored its points
        assert not list((store / "tmp").iterdir())


def test_a_store_remounted_read_only_refuses_writes_serves_reads_and_recovers(
    tmp_path: Path,
) -> None:
    """The artifacts' tmpfs is remounted read-only under the running server, then
    read-write again.

    The catalogue is in a folder of its own: the kernel refuses to remount a file
    system read-only while SQLite holds its database open for writing, so a catalogue
    on the same volume keeps it writable (a disk that the kernel itself turns
    read-only after I/O errors does not come back without an unmount). A delete
    answers 204: its row goes first, and its artifact, which cannot be removed now, is
    left to the orphan sweeper, as the store's order of writes promises.
    """
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    with (
        tmpfs(tmp_path / "store", "16m") as store,
        running_server(
            {
                "GMM_STORE_DIR": str(store),
                "GMM_DATABASE_URL": f"sqlite:///{catalogue / 'catalogue.db'}",
                "GMM_STORE_MIN_FREE_BYTES": str(MIN_FREE_BYTES),
                "GMM_CACHE_SIZE": "0",
            },
            cwd=tmp_path,
        ) as server,
    ):
        http = server.client
        model_id = fit(http, {"points": POINTS})
        doomed = fit(http, {"points": points(6)})
        dataset_id = upload(http, np.asarray(points(7)))
        before = reads(http, model_id)
        files, counts = store_files(store), totals(http)
        hidden = (str(store), str(tmp_path))

        remount(store, "ro")
        try:
            for r in (
                http.post("/v1/models", json=fit_body({"points": points(8)})),
                http.post("/v1/models", json=fit_body({"dataset_id": dataset_id})),
                post_npy(http, np.asarray(points(9))),
                ready := http.get("/readyz"),
            ):
                assert_refused(r, READ_ONLY, hidden)
            assert ready.status_code == 503
            assert reads(http, model_id) == before
            assert http.get(f"/v1/datasets/{dataset_id}").status_code == 200
            assert http.delete(f"/v1/models/{doomed}").status_code == 204
            assert http.get(f"/v1/models/{doomed}").status_code == 404
            assert store_files(store) == files
            assert_counts(http, models=counts[0] - 1, datasets_at_most=counts[1])
            assert_jobs_settled(http)
        finally:
            remount(store, "rw")

        wait_ready(http)
        fit(http, {"points": points(8)})
        fit(http, {"dataset_id": dataset_id})
        upload(http, np.asarray(points(9)))
        assert reads(http, model_id).predicted == before.predicted
        # Every listed model has its artifact; the one artifact without a row is the
        # deleted model's, the sweeper's to remove.
        listed = set(reads(http, model_id).listed)
        stored = {p.name for p in (store / "models").iterdir()}
        assert stored - listed == {doomed} and listed <= stored, (stored, listed)
        for listed_id in listed:
            r = http.post(f"/v1/models/{listed_id}/predict", json={"points": POINTS})
            assert r.status_code == 200, r.text
        assert not list((store / "tmp").iterdir())


# -- S3 store: a bucket behind a proxy that fails ----------------------------------------

#: Per attempt (GMM_S3_TIMEOUT_SECONDS); boto makes 3, with up to 3 s of back-off.
S3_TIMEOUT_SECONDS = 1.0
#: A failing bucket's 503 comes within this, whatever the fault: a stalled bucket is
#: given up on after the timeouts, not after boto's 60 s an attempt.
REFUSED_WITHIN_SECONDS = 15.0
#: A stall lasts until the test ends the fault; this only bounds a test gone wrong.
STALL_SECONDS = 60.0
SECRET_PREFIX = "secret-prefix"


@dataclass
class S3Service:
    server: ServerProcess
    proxy: FaultProxy
    bucket: str
    s3: Any  # a boto3 client that reaches moto directly, past the proxy
    #: Models deleted while the bucket failed: their artifacts are the sweeper's.
    orphans: set[str] = field(default_factory=set)

    @property
    def hidden(self) -> tuple[str, ...]:
        """What a client must never read: where the bucket is and what is in it."""
        port = self.proxy.url.rpartition(":")[2]
        return (self.bucket, SECRET_PREFIX, "127.0.0.1", f":{port}", "models/", "datasets/")

    def objects(self, folder: str) -> set[str]:
        """The ids that have objects under ``<prefix>/<folder>/``."""
        prefix = f"{SECRET_PREFIX}/{folder}/"
        got = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return {obj["Key"][len(prefix) :].partition("/")[0] for obj in got.get("Contents", [])}


@pytest.fixture(scope="module")
def s3_service(moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    """One server for every fault: recovering without a restart is the point. The
    cache holds one model, so that the model predicted last is served from memory
    while the bucket fails, and every other model is read from the bucket."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_url)
    bucket = f"gmm-faults-{secrets.token_hex(6)}"
    s3.create_bucket(Bucket=bucket)
    cwd = tmp_path_factory.mktemp("s3-faults")
    with FaultProxy(moto_url, stall_seconds=STALL_SECONDS) as proxy:
        env = {
            "GMM_STORE_URL": f"s3://{bucket}/{SECRET_PREFIX}",
            "GMM_S3_ENDPOINT_URL": proxy.url,
            "GMM_S3_TIMEOUT_SECONDS": str(S3_TIMEOUT_SECONDS),
            "GMM_SECRET_KEY": "faults-test-key",
            "GMM_STORE_DIR": str(cwd / "local"),
            "GMM_STORE_MIN_FREE_BYTES": "0",  # the runner's own disk is not under test
            "GMM_CACHE_SIZE": "1",
        }
        with running_server(env, cwd=cwd) as server:
            yield S3Service(server, proxy, bucket, s3)


def assert_bucket_consistent(service: S3Service) -> None:
    """Every listed model has its artifact in the bucket and predicts; the only model
    objects without a row are those of models deleted while the bucket failed (the
    sweeper's); every listed dataset has its points."""
    http = service.server.client
    listed = {m["id"] for m in http.get("/v1/models", params={"limit": 100}).json()["items"]}
    stored = service.objects("models")
    assert listed <= stored, f"listed without an artifact: {listed - stored}"
    orphans = stored - listed - service.orphans
    assert not orphans, f"artifacts without a row: {orphans}"
    for model_id in listed:
        r = http.post(f"/v1/models/{model_id}/predict", json={"points": POINTS})
        assert r.status_code == 200, r.text
    datasets = {d["id"] for d in http.get("/v1/datasets", params={"limit": 100}).json()["items"]}
    assert datasets <= service.objects("datasets")


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        pytest.param(Fault.ERROR_500, "InternalError", id="500"),
        pytest.param(Fault.ERROR_503, "SlowDown", id="503"),
        pytest.param(Fault.RESET, r"Connection\w*Error", id="reset"),
        pytest.param(Fault.STALL, "ReadTimeoutError", id="stall"),
    ],
)
def test_a_failing_bucket_refuses_writes_serves_cached_models_and_recovers(
    s3_service: S3Service, fault: Fault, cause: str
) -> None:
    """Each write meets the fault on every attempt boto makes and answers 503 naming
    the S3 error's code or kind, within a bound; so does a prediction that must read
    its model from the bucket, and /readyz. The cached model goes on predicting."""
    http = s3_service.server.client
    seed = 100 * list(Fault).index(fault)
    uncached = fit(http, {"points": points(seed + 1)})
    doomed = fit(http, {"points": points(seed + 2)})
    kept = fit(http, {"points": points(seed + 3)})
    before = reads(http, kept)  # kept is now the one model in the cache
    counts = totals(http)
    new_points, new_dataset = points(seed + 4), np.asarray(points(seed + 5))
    met = s3_service.proxy.requests[fault]

    s3_service.proxy.fault = fault
    try:
        answers = at_once(
            lambda: http.post("/v1/models", json=fit_body({"points": new_points})),
            lambda: post_npy(http, new_dataset),
            lambda: http.get("/readyz"),
            lambda: http.post(f"/v1/models/{uncached}/predict", json={"points": POINTS}),
            lambda: http.delete(f"/v1/models/{doomed}"),
        )
        for r, seconds in answers:
            assert seconds < REFUSED_WITHIN_SECONDS, (r.request.url, seconds)
        (fitted, _), (uploaded, _), (ready, _), (predicted, _), (deleted, _) = answers
        for r in (fitted, uploaded, ready, predicted):  # predicted: it needs the bucket
            assert_refused(r, cause, s3_service.hidden)
        assert ready.status_code == 503
        # A delete takes the row first, for every replica at once; the artifact it could
        # not remove is the sweeper's.
        assert deleted.status_code == 204, deleted.text
        s3_service.orphans.add(doomed)
        during = reads(http, kept)
        assert (during.model, during.predicted) == (before.model, before.predicted)
        assert kept in during.listed
        assert http.get(f"/v1/models/{uncached}").status_code == 200  # from the catalogue
        assert s3_service.proxy.requests[fault] > met, "the fault was never met"
    finally:
        s3_service.proxy.fault = Fault.NONE

    wait_ready(http)
    assert_counts(http, models=counts[0] - 1, datasets_at_most=counts[1])
    assert_jobs_settled(http)
    fit(http, {"points": new_points})
    upload(http, new_dataset)
    assert reads(http, kept).predicted == before.predicted
    assert_bucket_consistent(s3_service)


def test_a_model_whose_artifact_fails_after_its_points_were_copied_leaves_nothing(
    s3_service: S3Service,
) -> None:
    """Only the PUT of ``model.joblib`` fails: the fit's points were stored (a dataset,
    whole) and copied beside the model (``models/<id>/data.npy``) first. The fit answers
    503, and that copy is removed: no row, and no object under ``models/`` without one.
    """
    http = s3_service.server.client
    counts = totals(http)
    new_points = points(1000)
    met = s3_service.proxy.requests[Fault.ERROR_500]
    s3_service.proxy.only = r"^PUT /[^?]*/models/[^/]+/model\.joblib"
    s3_service.proxy.fault = Fault.ERROR_500
    try:
        r = http.post("/v1/models", json=fit_body({"points": new_points}))
        assert_refused(r, "InternalError", s3_service.hidden)
        assert s3_service.proxy.requests[Fault.ERROR_500] > met, "the fault was never met"
    finally:
        s3_service.proxy.fault = Fault.NONE
        s3_service.proxy.only = None
    assert totals(http)[0] == counts[0]
    assert_jobs_settled(http)
    assert_bucket_consistent(s3_service)
    fit(http, {"points": new_points})
    assert_bucket_consistent(s3_service)
