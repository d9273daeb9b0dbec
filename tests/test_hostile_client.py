"""The security review of issue 16 ("Nothing unbounded") replayed as its hostile client
did it: against a real ``python -m service``, over real sockets, one section per finding,
numbered and titled as the issue has them.

Each test is the reviewer's reproduction at a smaller scale (megabytes where they sent
hundreds, ten connections where they held three hundred, limits lowered to match) and
asserts what the fix promises: the status, a problem+json of the service's own type that
names the setting where a limit answered, the request id and security headers on every
error, and nothing stored. The finer cases of each fix are tested beside its code
(``tests/api/``, ``tests/test_edge_server.py``); this file is the list that says every
finding is still fixed, as a client sees it.

Three server processes: ``edge`` (API keys, a one-second read timeout, a small model
limit, and faults injected at start-up: a listing that raises, a disk that is full on
demand, a filesystem slow at one point of a race), ``limits`` (one job worker, a
one-place job queue, a store quota, a short job retention, a connection cap, and a
free-space threshold no disk meets), for finding 4 one with a single fit slot per test,
and for finding 12 one over an S3 endpoint nobody answers.

These reproductions found three defects in the fixes (an upload racing a delete could
still answer 503, the quota counted deleted bytes, and a fit refused 429 left its points
stored); their tests here failed until they were fixed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.api.test_dataset_uploads import npy_bytes
from tests.api.test_hostile_inputs import NOT_JSON, header_text, npy_file
from tests.conftest import SEED_BLOBS, require, wait_job
from tests.helpers_http import (
    RawConnection,
    assert_problem,
    raw_connection,
    slow_body,
    trickling,
)
from tests.helpers_server import ServerProcess, running_server, running_servers
from tests.helpers_store import read_row, write_row
from tests.test_jobs_server import LONG_FIT, wait_for

pytestmark = pytest.mark.slow

ADMIN = {"X-API-Key": "admin-key"}
READER = {"Authorization": "Bearer reader-key"}
JSON = {"Content-Type": "application/json"}
NPY = {"Content-Type": "application/x-npy"}
CSV = {"Content-Type": "text/csv"}

READ_TIMEOUT = 1.0
MAX_MODEL_PARAMETERS = 10_000
JOB_RETENTION_SECONDS = 2.0
STORE_MAX_BYTES = 500_000
MAX_CONNECTIONS = 8
#: ``GET /v1/models?name=`` this raises RuntimeError inside the ``edge`` server.
FAULT_NAME = "raise-an-unexpected-error"

#: Imported by the ``edge`` server's interpreter at start-up (``sitecustomize`` on
#: PYTHONPATH), three faults:
#: - one listing fails as a bug would, so that a real process answers a 500;
#: - while the file ``disk_full`` names exists, every ``os.fsync`` fails with ENOSPC as on
#:   a full disk, after the file being written was created, so that a write that does not
#:   clean up after itself leaves it behind. ``OSError(ENOSPC)`` has no strerror: the case
#:   that answered "Could not write the dataset: None.";
#: - a ``mkdir`` of a dataset's folder that finds it there pauses 50 ms before saying so,
#:   as a thread descheduled on a loaded machine would. The window in which a concurrent
#:   delete broke an upload (1-2 in 50 POSTs for the reviewer) is then wide enough to
#:   hit on any machine.
_FAULTS = """
import errno
import os
import time
from pathlib import Path

from service.domain.catalogue.service import Catalogue

_list = Catalogue.list
_fsync = os.fsync
_mkdir = os.mkdir
_DISK_FULL = Path({disk_full!r})


def _failing_list(self, **kwargs):
    if kwargs.get("name") == {fault_name!r}:
        raise RuntimeError("an unexpected failure, injected by tests/test_hostile_client.py")
    return _list(self, **kwargs)


def _fsync_on_a_disk_that_may_be_full(fd):
    if _DISK_FULL.exists():
        raise OSError(errno.ENOSPC)
    _fsync(fd)


def _mkdir_slow_to_find_a_dataset_folder(path, *args, **kwargs):
    try:
        return _mkdir(path, *args, **kwargs)
    except FileExistsError:
        if os.sep + "datasets" + os.sep in os.fspath(path):
            time.sleep(0.05)
        raise


Catalogue.list = _failing_list
os.fsync = _fsync_on_a_disk_that_may_be_full
os.mkdir = _mkdir_slow_to_find_a_dataset_folder
"""


@dataclass
class Edge:
    """The ``edge`` server, its store folder, and a client for each key."""

    server: ServerProcess
    store: Path
    disk_full: Path  # while this file exists, the store's disk is full
    admin: httpx.Client
    reader: httpx.Client

    @property
    def port(self) -> int:
        return self.server.port


def _edge_env(cwd: Path) -> dict[str, str]:
    """Keys on, a one-second read timeout, a small model limit, and the faults above
    (written into ``cwd/hooks``)."""
    hooks = cwd / "hooks"
    hooks.mkdir()
    faults = _FAULTS.format(disk_full=str(cwd / "disk-full"), fault_name=FAULT_NAME)
    (hooks / "sitecustomize.py").write_text(faults)
    pythonpath = os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH")) if p)
    return {
        "GMM_STORE_DIR": str(cwd / "store"),
        "GMM_API_KEYS": "admin-key,reader-key:read",
        "GMM_REQUEST_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
        "GMM_MAX_MODEL_PARAMETERS": str(MAX_MODEL_PARAMETERS),
        "PYTHONPATH": pythonpath,
    }


def _limits_env(cwd: Path) -> dict[str, str]:
    """No keys; every bound of the review lowered to what a test reaches in a second."""
    return {
        "GMM_STORE_DIR": str(cwd / "store"),
        "GMM_SECRET_KEY": "hostile-limits-key",
        "GMM_JOB_WORKERS": "1",
        "GMM_JOB_QUEUE_LENGTH": "1",
        "GMM_JOB_RETENTION_SECONDS": str(JOB_RETENTION_SECONDS),
        "GMM_SWEEP_INTERVAL_SECONDS": "0.2",
        "GMM_STORE_MAX_BYTES": str(STORE_MAX_BYTES),
        "GMM_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        # More free space than any disk has: the store's disk is "nearly full".
        "GMM_STORE_MIN_FREE_BYTES": str(2**62),
    }


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Edge, ServerProcess]]:
    """``edge`` and ``limits``, booted at once: each start imports the whole service,
    seconds of CPU that two cores do side by side."""
    edge_dir = tmp_path_factory.mktemp("hostile-edge")
    limits_dir = tmp_path_factory.mktemp("hostile-limits")
    envs = [_edge_env(edge_dir), _limits_env(limits_dir)]
    with (
        running_servers(envs, cwd=edge_dir) as (edge_server, limits_server),
        httpx.Client(base_url=edge_server.base_url, headers=ADMIN, timeout=60) as admin,
        httpx.Client(base_url=edge_server.base_url, headers=READER, timeout=60) as reader,
    ):
        edge = Edge(edge_server, edge_dir / "store", edge_dir / "disk-full", admin, reader)
        yield edge, limits_server


@pytest.fixture(scope="module")
def edge(servers: tuple[Edge, ServerProcess]) -> Edge:
    return servers[0]


@pytest.fixture(scope="module")
def limits(servers: tuple[Edge, ServerProcess]) -> ServerProcess:
    return servers[1]


@pytest.fixture(scope="module")
def model_id(edge: Edge) -> str:
    """A 2-feature mixture on ``edge``, to send points to."""
    r = edge.admin.post("/v1/models", json={**_small_fit(0, "gaussian_mixture"), "include": []})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _small_fit(seed: int, algorithm: str = "kmeans", **extra: Any) -> dict[str, Any]:
    """A quick two-cluster fit on 20 points of its own (datasets are content-addressed:
    each seed is a new one)."""
    k = "n_clusters" if algorithm == "kmeans" else "n_components"
    points = np.random.default_rng(seed).normal(size=(20, 2)).tolist()
    return {
        "algorithm": algorithm,
        "params": {k: 2, "random_state": 0},
        "data": {"points": points},
        **extra,
    }


def _total(client: httpx.Client, path: str) -> int:
    r = client.get(path)
    assert r.status_code == 200, r.text
    total: int = r.json()["total"]
    return total


def _gone(client: httpx.Client, urls: list[str], seconds: float = 20.0) -> None:
    """Wait until every one of ``urls`` answers 404."""
    deadline = time.monotonic() + seconds
    while any(client.get(url).status_code != 404 for url in urls):
        assert time.monotonic() < deadline, f"still there after {seconds} s: {urls}"
        time.sleep(0.1)


@contextlib.contextmanager
def full_disk(edge: Edge) -> Iterator[None]:
    """The ``edge`` store's disk is full inside the block, and has room again after."""
    edge.disk_full.touch()
    try:
        yield
    finally:
        edge.disk_full.unlink()


def _leftovers(edge: Edge) -> list[str]:
    """What the store's writes left in its temporary folder."""
    return sorted(p.name for p in (edge.store / "tmp").iterdir())


# -- 1. A model's size has no limit. ------------------------------------------------------


def test_a_model_past_the_parameter_limit_is_refused_before_it_is_fitted(edge: Edge) -> None:
    """k=16, d=1000 stored a gigabyte. Here k=16, d=30 (16 + 480 + 14,400 numbers with
    full covariances) against a limit of 10,000: a 422 ``limit-exceeded`` (the body is
    small: what it asks for is large) that names the setting and the count, and nothing
    stored, not even the points."""
    k, d = 16, 30
    models, datasets = _total(edge.admin, "/v1/models"), _total(edge.admin, "/v1/datasets")
    points = np.random.default_rng(1).normal(size=(2 * k, d)).tolist()
    body = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": k},
        "data": {"points": points},
    }
    problem = assert_problem(edge.admin.post("/v1/models", json=body), 422)
    assert problem["type"].endswith(":limit-exceeded"), problem
    assert "GMM_MAX_MODEL_PARAMETERS" in problem["detail"], problem
    assert f"{k + k * d + k * d * d} numbers" in problem["detail"], problem
    assert _total(edge.admin, "/v1/models") == models
    assert _total(edge.admin, "/v1/datasets") == datasets


def test_a_listing_carries_no_k_d2_arrays_even_for_a_read_only_key(edge: Edge) -> None:
    """One list page of large models was 771 MB, and a read-only key could ask for it:
    list items carry the summary, GET of one model the covariances."""
    points = np.random.default_rng(2).normal(size=(100, 20)).tolist()
    body = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 2, "random_state": 0},
        "data": {"points": points},
        "include": [],
    }
    created = edge.admin.post("/v1/models", json=body)
    assert created.status_code == 201, created.text
    model = created.json()
    listing = edge.reader.get("/v1/models", params={"limit": 1})  # newest first: this one
    [item] = listing.json()["items"]
    assert item["id"] == model["id"] and item["means"] == model["means"]
    for large in ("covariances", "precisions", "lower_bounds"):
        assert large in model and large not in item, large
    one = edge.reader.get(f"/v1/models/{model['id']}")
    assert one.json()["covariances"] == model["covariances"]
    assert 4 * len(listing.content) < len(one.content), (len(listing.content), len(one.content))


def test_the_stored_row_of_a_large_model_holds_no_k_d2_arrays(edge: Edge) -> None:
    """The covariances were stored three times: in the artifact, and twice as JSON in
    ``meta.json`` (now the catalogue's row). The row keeps the summary; GET of the model
    (with a read-only key) answers the arrays from the artifact."""
    points = np.random.default_rng(3).normal(size=(200, 30)).tolist()
    body = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 8, "covariance_type": "full", "random_state": 0},
        "data": {"points": points},
        "include": [],
    }
    created = edge.admin.post("/v1/models", json=body)
    assert created.status_code == 201, created.text
    model = created.json()
    row = read_row(edge.store, "model", model["id"])
    assert not {"covariances", "precisions", "lower_bounds"} & set(json.loads(row)["resource"])
    got = edge.reader.get(f"/v1/models/{model['id']}").json()
    assert got["covariances"] == model["covariances"]
    assert got["precisions"] == model["precisions"]
    assert 20 * len(row) < len(json.dumps(got["covariances"])), len(row)


# -- 2. Unauthenticated bodies are read in full before the 401. ----------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "length"),
    [
        ("/v1/datasets", "application/x-npy", 500_000_000),
        ("/v1/models", "application/json", 183_000_000),
    ],
)
def test_without_a_key_401_comes_before_a_large_body(
    edge: Edge, path: str, content_type: str, length: int
) -> None:
    """The body is announced and never sent: the 401 must not wait for it."""
    with raw_connection(edge.port) as conn:
        conn.send_head("POST", path, {"Content-Type": content_type, "Content-Length": str(length)})
        conn.send(b"{" + b" " * 1000)
        r = conn.read_response()
    body = assert_problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert body["type"] == "urn:gmm-service:problem:unauthorized"


def test_malformed_json_without_a_key_is_401_not_400(edge: Edge) -> None:
    """Malformed JSON without a key answered 400: the body was parsed before the key
    was looked at. Every body that breaks the decoder is a 401 now."""
    bodies = {"syntax-error": b'{"algorithm": '} | {name: b for name, (b, _) in NOT_JSON.items()}
    for name, body in bodies.items():
        with raw_connection(edge.port) as conn:
            r = conn.request("POST", "/v1/models", body, JSON)
        problem = assert_problem(r, 401)
        assert problem["type"].endswith(":unauthorized"), (name, problem)
        assert r.headers["www-authenticate"].startswith("Bearer"), name


# -- 3. The job queue has no bound. --------------------------------------------------------


@contextlib.contextmanager
def _queue_filled(c: httpx.Client, seed: int) -> Iterator[None]:
    """The one job worker busy with a fit that runs until deleted, and a fit queued
    behind it, holding its points as a stored dataset rather than as an array in
    memory; both deleted after the block."""
    urls: list[str] = []
    try:
        running = c.post("/v1/models", json=LONG_FIT)
        assert running.status_code == 202, running.text
        urls.append(running.headers["location"])
        wait_for(c, urls[0], {"running"})
        datasets = _total(c, "/v1/datasets")
        queued = c.post("/v1/models", json=_small_fit(seed, wait=False))
        assert queued.status_code == 202, queued.text
        urls.append(queued.headers["location"])
        assert c.get(urls[1]).json()["status"] == "queued"
        assert _total(c, "/v1/datasets") == datasets + 1
        yield
        assert c.get(urls[1]).json()["status"] == "queued"
    finally:
        for url in urls:
            c.delete(url)


def test_wait_false_fits_past_the_queue_are_429_and_a_queued_fit_holds_a_dataset(
    limits: ServerProcess,
) -> None:
    """200 ``wait: false`` fits in a row all got 202, each holding its points in memory.
    With one job worker busy and a queue of one, the next is queued (its points stored
    as a dataset) and the nine after it are 429 with Retry-After."""
    c = limits.client
    with _queue_filled(c, seed=30):
        for i in range(9):
            r = c.post("/v1/models", json=_small_fit(31 + i, wait=False))
            problem = assert_problem(r, 429)
            assert "GMM_JOB_QUEUE_LENGTH" in problem["detail"], problem
            assert int(r.headers["retry-after"]) >= 1


def test_a_fit_refused_by_the_full_queue_stores_nothing(limits: ServerProcess) -> None:
    """A hostile client spamming refused fits would otherwise fill the store."""
    c = limits.client
    with _queue_filled(c, seed=40):
        datasets = _total(c, "/v1/datasets")
        for i in range(3):
            assert c.post("/v1/models", json=_small_fit(41 + i, wait=False)).status_code == 429
        assert _total(c, "/v1/datasets") == datasets


# -- 4. A client that disconnects leaves its fit running. ----------------------------------

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


#: Minutes of EM, were it left to run (tol 0 never converges early).
ENDLESS_FIT = {
    **SLOW_FIT,
    "params": {"n_components": 8, "n_init": 50, "max_iter": 1000, "tol": 0, "random_state": 0},
    "wait": True,
}
QUICK_FIT = {
    "algorithm": "gaussian_mixture",
    "params": {"n_components": 2, "random_state": 0},
    "data": {"points": [[float(i % 7), float(i % 5)] for i in range(40)]},
    "include": [],
    "wait": True,
}


@pytest.fixture
def one_slot(tmp_path: Path) -> Iterator[ServerProcess]:
    """One fit slot, so that an abandoned fit holding it would keep every other out
    (a server each: these tests count what it stores)."""
    env = {
        "GMM_STORE_DIR": str(tmp_path / "store"),
        "GMM_SECRET_KEY": "k",
        "GMM_MAX_CONCURRENT_FITS": "1",
    }
    with running_server(env, cwd=tmp_path) as srv:
        yield srv


def test_a_client_that_disconnects_while_waiting_leaves_its_job_running(
    one_slot: ServerProcess,
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{one_slot.base_url}/v1/models", json=SLOW_FIT, timeout=0.5)
    deadline = time.monotonic() + 120
    jobs: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        jobs = one_slot.client.get("/v1/jobs").json()["items"]
        if jobs and jobs[0]["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert len(jobs) == 1, jobs
    assert jobs[0]["status"] == "succeeded", jobs[0]
    model_id = jobs[0]["model_id"]
    assert one_slot.client.get(f"/v1/models/{model_id}").status_code == 200
    result = one_slot.client.get(f"/v1/jobs/{jobs[0]['id']}/result")
    assert result.status_code == 200 and result.json()["id"] == model_id


def test_a_client_that_disconnects_from_a_wait_true_fit_stops_it(one_slot: ServerProcess) -> None:
    """The reviewer's case: a synchronous fit whose client gave up held the only slot
    (every other fit got 429 for a minute), then stored a model nobody received."""
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{one_slot.base_url}/v1/models", json=ENDLESS_FIT, timeout=1.0)
    began = time.monotonic()
    # The slot is free again within a poll and an EM step: the next fit waits for it
    # in the queue (GMM_FIT_QUEUE_SECONDS), and gets it long before the endless one ends.
    quick = one_slot.client.post("/v1/models", json=QUICK_FIT, timeout=60)
    assert quick.status_code == 201, quick.text
    assert time.monotonic() - began < 20
    models = one_slot.client.get("/v1/models").json()
    assert [m["id"] for m in models["items"]] == [quick.json()["id"]], models
    assert one_slot.client.get("/v1/jobs").json()["items"] == []
    assert '"POST /v1/models 409"' in one_slot.log(), "the abandoned fit ends as cancelled"


def test_a_retry_after_the_client_gave_up_answers_the_same_model(edge: Edge) -> None:
    """The client gave up on its fit and retried: the abandoned fit stored a model and the
    retry another. With the same ``Idempotency-Key`` the retry answers the first
    request's model; the same key with another body is a 422."""
    key = {"Idempotency-Key": "hostile-retry-4"}
    body = json.dumps(_small_fit(4)).encode()
    models, jobs = _total(edge.admin, "/v1/models"), _total(edge.admin, "/v1/jobs")
    with raw_connection(edge.port) as abandoned:
        abandoned.send_head(
            "POST", "/v1/models", {**ADMIN, **JSON, **key, "Content-Length": str(len(body))}
        )
        abandoned.send(body)
        deadline = time.monotonic() + 30
        while _total(edge.admin, "/v1/jobs") == jobs:  # its work has started
            assert time.monotonic() < deadline, "the abandoned request started no job"
            time.sleep(0.05)
    # ...and the client went away without reading the answer.
    [job] = edge.admin.get("/v1/jobs", params={"limit": 1}).json()["items"]
    retry = edge.admin.post("/v1/models", content=body, headers={**JSON, **key})
    assert retry.status_code in (201, 202), retry.text
    model_id = wait_job(edge.admin, job["id"])["model_id"]
    # The first request's job while it runs, its model once it is stored.
    assert retry.json()["id"] == (job["id"] if retry.status_code == 202 else model_id)
    done = edge.admin.post("/v1/models", content=body, headers={**JSON, **key})
    assert done.status_code == 201 and done.json()["id"] == model_id, done.text
    assert _total(edge.admin, "/v1/models") == models + 1

    other = edge.admin.post("/v1/models", json=_small_fit(5), headers=key)
    problem = assert_problem(other, 422)
    assert problem["errors"][0]["loc"] == ["header", "Idempotency-Key"], problem
    assert _total(edge.admin, "/v1/models") == models + 1


# -- 5. A `.npy` header with negative dimensions gives 500 on upload, predict and score. ---


def test_npy_headers_with_negative_dimensions_are_422_for_either_key(
    edge: Edge, model_id: str
) -> None:
    """``(-1, -2)`` passed the length check and failed in ``reshape`` (500); ``(2, -1)``
    answered "needs -16 bytes". Predict and score are open to a read-only key."""
    targets = [
        ("/v1/datasets", ADMIN),
        (f"/v1/models/{model_id}/predict", READER),
        (f"/v1/models/{model_id}/score", READER),
    ]
    for shape in [(-1, -2), (2, -1)]:
        body = npy_file(header_text("<f8", False, shape), b"\x00" * 16)
        for path, key in targets:
            with raw_connection(edge.port) as conn:
                r = conn.request("POST", path, body, {**key, **NPY})
            problem = assert_problem(r, 422)
            assert "negative" in problem["detail"], (shape, path, problem)
            assert "-16 bytes" not in problem["detail"], (shape, path, problem)


# -- 6. Uploading and deleting the same dataset at once gives 500. --------------------------


def _hammer(
    base_url: str, method: str, path: str, rounds: int, **kwargs: Any
) -> list[httpx.Response]:
    """``rounds`` requests in a row on a connection of their own."""
    with httpx.Client(base_url=base_url, headers=ADMIN, timeout=60) as client:
        return [client.request(method, path, **kwargs) for _ in range(rounds)]


def test_uploads_racing_deletes_of_one_dataset_are_201_or_200(edge: Edge) -> None:
    """1-2 in 50 POSTs answered 500 (and some 404) while another client deleted the same
    dataset. Three clients upload it 25 times each while two others delete it."""
    body = npy_bytes(np.random.default_rng(6).normal(size=(100, 3)))
    first = edge.admin.post("/v1/datasets", content=body, headers=NPY)
    assert first.status_code in (200, 201), first.text
    url = f"/v1/datasets/{first.json()['id']}"
    with ThreadPoolExecutor(5) as pool:
        uploads = [
            pool.submit(
                _hammer, edge.server.base_url, "POST", "/v1/datasets", 25, content=body, headers=NPY
            )
            for _ in range(3)
        ]
        deletes = [pool.submit(_hammer, edge.server.base_url, "DELETE", url, 25) for _ in range(2)]
        posted = [r for u in uploads for r in u.result()]
        deleted = [r for d in deletes for r in d.result()]
    assert {r.status_code for r in posted} <= {200, 201}, [r.text for r in posted if r.is_error]
    assert {r.status_code for r in deleted} <= {204, 404}, [r.text for r in deleted if r.is_error]


# -- 7. Readiness lies and litters. -------------------------------------------------------


def test_readiness_is_false_when_the_disk_has_less_room_than_the_threshold(
    limits: ServerProcess,
) -> None:
    """``/readyz`` answered 200 with 232 KB left while every write answered 503."""
    problem = assert_problem(limits.client.get("/readyz"), 503)
    assert problem["type"].endswith(":store-unavailable"), problem
    assert "GMM_STORE_MIN_FREE_BYTES" in problem["detail"], problem


def test_readiness_is_false_on_a_full_disk_and_its_probes_leave_nothing(edge: Edge) -> None:
    """Each failing probe left a file in ``store/tmp/`` until the next restart. Readiness
    also comes back by itself once the disk has room."""
    assert edge.server.client.get("/readyz").status_code == 200
    with full_disk(edge):
        for _ in range(3):
            problem = assert_problem(edge.server.client.get("/readyz"), 503)
            assert "No space left on device" in problem["detail"], problem
        assert _leftovers(edge) == []
    assert edge.server.client.get("/readyz").status_code == 200
    assert _leftovers(edge) == []


# "With a Dask cluster and no workers, `/readyz` answers 200": not replayed here, where it
# would cost a scheduler and a fourth server (some 7 s). tests/test_dask_cluster.py's
# test_a_cluster_with_no_worker_left_fails_the_job_with_the_reason runs it against a real
# scheduler with no worker: /readyz answers 503 naming "no workers".


# -- 8. Job records are never deleted, and a list carries every result. --------------------


def test_cancel_keeps_the_record_and_delete_removes_it(limits: ServerProcess) -> None:
    """``DELETE /v1/jobs/{id}`` only cancelled: "deleted resource still available"."""
    c = limits.client
    models = _total(c, "/v1/models")
    cancelled = c.post("/v1/models", json=LONG_FIT).headers["location"]
    wait_for(c, cancelled, {"running"})
    assert c.post(f"{cancelled}/cancel").status_code == 202
    job = wait_for(c, cancelled, {"cancelled"}, timeout=20)  # read after the cancel: kept
    assert job["model_id"] is None

    deleted = c.post("/v1/models", json=LONG_FIT).headers["location"]
    wait_for(c, deleted, {"running"})
    assert c.delete(deleted).status_code == 204
    for _ in range(5):  # and its next progress writes do not bring it back
        assert c.get(deleted).status_code == 404
        time.sleep(0.1)
    assert deleted.rsplit("/", 1)[-1] not in [j["id"] for j in c.get("/v1/jobs").json()["items"]]
    assert _total(c, "/v1/models") == models


def test_listed_jobs_carry_no_results_and_finished_ones_expire(limits: ServerProcess) -> None:
    """A comparison on 200,000 points wrote a 1.2 MB record, and one list page was 834 KB;
    records were kept for ever. Here 2,000 points, and a retention of two seconds."""
    c = limits.client
    body = {
        "data": {"generator": {**SEED_BLOBS, "n_samples": 2000}},
        "algorithms": [{"algorithm": "kmeans", "params": {"n_clusters": 4, "random_state": 0}}],
        "wait": False,
    }
    url = c.post("/v1/comparisons", json=body).headers["location"]
    job = wait_for(c, url, {"succeeded"})
    listing = c.get("/v1/jobs", params={"limit": 1})
    [item] = listing.json()["items"]
    assert item["id"] == job["id"] and "result" not in item
    assert job["result"]["results"] and item["expires_at"] == job["expires_at"]
    assert 4 * len(listing.content) < len(c.get(url).content)
    _gone(c, [url])
    assert job["id"] not in [j["id"] for j in c.get("/v1/jobs").json()["items"]]


# -- 9. Models and datasets never expire. -------------------------------------------------


def test_models_and_datasets_with_a_ttl_are_deleted_when_they_expire(
    limits: ServerProcess,
) -> None:
    """Nothing stored had an end. A model and a dataset made to live one second are
    gone, for GET and for the listing, a sweep later."""
    c = limits.client
    points = np.random.default_rng(9).normal(size=(20, 2)).tolist()
    dataset = c.post("/v1/datasets", json={"points": points, "ttl_seconds": 1})
    model = c.post("/v1/models", json=_small_fit(90, ttl_seconds=1, include=[]))
    assert dataset.status_code == 201 and model.status_code == 201, (dataset.text, model.text)
    assert dataset.json()["expires_at"] and model.json()["expires_at"]
    _gone(c, [f"/v1/datasets/{dataset.json()['id']}", f"/v1/models/{model.json()['id']}"])
    assert model.json()["id"] not in [m["id"] for m in c.get("/v1/models").json()["items"]]


def test_past_the_store_quota_writes_are_507_and_reads_go_on(limits: ServerProcess) -> None:
    """1 MB of points against a quota of 500 KB: 507 naming the setting, nothing
    stored; what is stored is still read and predicted."""
    c = limits.client
    model = c.post("/v1/models", json=_small_fit(91, include=[]))
    assert model.status_code == 201, model.text
    datasets = _total(c, "/v1/datasets")
    too_much = npy_bytes(np.random.default_rng(91).normal(size=(2 * STORE_MAX_BYTES // 16, 2)))
    problem = assert_problem(c.post("/v1/datasets", content=too_much, headers=NPY), 507)
    assert problem["type"].endswith(":insufficient-storage"), problem
    assert "GMM_STORE_MAX_BYTES" in problem["detail"], problem
    assert _total(c, "/v1/datasets") == datasets
    url = f"/v1/models/{model.json()['id']}"
    assert c.get(url).status_code == 200
    assert c.post(f"{url}/predict", json={"points": [[0.0, 0.0]]}).status_code == 200


def test_deleted_bytes_no_longer_count_against_the_quota(limits: ServerProcess) -> None:
    """A client that uploads and deletes 40 KB in turn, twice the quota in all: the
    store never holds more than 40 KB, so no upload may be refused."""
    c = limits.client
    body = npy_bytes(np.random.default_rng(92).normal(size=(2500, 2)))
    for i in range(2 * STORE_MAX_BYTES // 40_000):
        r = c.post("/v1/datasets", content=body, headers=NPY)
        assert r.status_code == 201, (i, r.text)
        assert c.delete(f"/v1/datasets/{r.json()['id']}").status_code == 204


def test_the_points_of_inline_fits_go_with_their_models(edge: Edge) -> None:
    """Every fit of points in its body stored them as a dataset, for good: a client
    fitting and deleting in a loop filled the store. They now go with the last model
    (or unfinished job) that refers to them."""
    datasets = _total(edge.admin, "/v1/datasets")
    for seed in (90, 91, 92):
        fit = edge.admin.post("/v1/models", json=_small_fit(seed))
        assert fit.status_code == 201, fit.text
        assert _total(edge.admin, "/v1/datasets") == datasets + 1
        assert edge.admin.delete(f"/v1/models/{fit.json()['id']}").status_code == 204
        url = f"/v1/datasets/{fit.json()['dataset_id']}"
        assert edge.admin.get(url).status_code == 404
    assert _total(edge.admin, "/v1/datasets") == datasets


# -- 10. A 500 loses its headers. ---------------------------------------------------------


def test_a_500_carries_its_headers_and_keeps_the_connection(edge: Edge) -> None:
    """500s came from Starlette's outermost layer: no request id, no security headers,
    and a connection closed without ``Connection: close``, so that the client's next
    request on it was reset."""
    with raw_connection(edge.port) as conn:
        r = conn.request(
            "GET", f"/v1/models?name={FAULT_NAME}", headers={**ADMIN, "X-Request-ID": "trace-500"}
        )
        assert r.status == 500, r.body
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["x-request-id"] == "trace-500"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.json()["type"] == "urn:gmm-service:problem:internal-error"
        assert r.headers.get("connection") != "close"
        # The same connection serves the next request.
        assert conn.request("GET", "/healthz").status == 200
    assert "RuntimeError: an unexpected failure" in edge.server.log()


# -- 11. Some bad bodies get `about:blank`. -----------------------------------------------


def test_bodies_that_break_the_json_decoder_are_malformed_json(edge: Edge, model_id: str) -> None:
    """Arrays nested 10,000 deep, invalid UTF-8 in a string, a 4,301-digit integer and a
    ``.npy`` body sent as JSON each answered a generic ``about:blank`` 400."""
    for name, (body, says) in NOT_JSON.items():
        for path, key in [("/v1/models", ADMIN), (f"/v1/models/{model_id}/predict", READER)]:
            with raw_connection(edge.port) as conn:
                r = conn.request("POST", path, body, {**key, **JSON})
            problem = assert_problem(r, 400)
            assert problem["type"] == "urn:gmm-service:problem:malformed-json", (name, problem)
            assert says in problem["detail"], (name, path, problem)


# -- 12. 503 details leak the S3 endpoint URL and object keys. ----------------------------


def test_an_unreachable_s3_store_is_a_503_naming_no_endpoint_nor_key(tmp_path: Path) -> None:
    """The endpoint, the bucket and the object keys go to the log; the client is told
    the store is unavailable."""
    require("boto3", "pip install -e '.[s3]'")
    endpoint, bucket, prefix = "http://127.0.0.1:9", "hostile-secret-bucket", "hostile-prefix"
    env = {
        "GMM_STORE_DIR": str(tmp_path / "local"),
        "GMM_STORE_URL": f"s3://{bucket}/{prefix}",
        "GMM_S3_ENDPOINT_URL": endpoint,  # nothing listens on the discard port
        "GMM_SECRET_KEY": "hostile-s3-key",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with running_server(env, cwd=tmp_path) as srv:
        answers = [
            srv.client.post("/v1/datasets", json={"points": [[0.0, 1.0], [2.0, 3.0]]}),
            srv.client.post("/v1/models", json=_small_fit(12)),
            srv.client.get("/readyz"),
        ]
        for r in answers:
            problem = assert_problem(r, 503)
            assert problem["type"].endswith(":store-unavailable"), problem
            for secret in ("127.0.0.1", ":9", bucket, prefix, "datasets/", "models/"):
                assert secret not in r.text, (secret, r.text)
        assert bucket in srv.log() or endpoint in srv.log(), "the cause was not logged"


# -- 13. No time limit on reading a request. ----------------------------------------------


def test_a_body_sent_too_slowly_is_408(edge: Edge) -> None:
    """A body a byte every 0.2 s: a 408 naming the setting within a few timeouts, and
    the connection closed."""
    headers = {**ADMIN, **JSON, "Content-Length": "1000"}
    r = slow_body(edge.port, "/v1/models", headers, b"{" + b" " * 999, READ_TIMEOUT)
    body = assert_problem(r, 408)
    assert "GMM_REQUEST_READ_TIMEOUT_SECONDS" in str(body["detail"])
    assert body["type"] == "urn:gmm-service:problem:request-timeout"
    assert r.headers["connection"] == "close"


def test_headers_sent_too_slowly_close_every_connection(edge: Edge) -> None:
    """300 connections each sending a byte every 2 s were all held open. Ten, a byte
    every 0.2 s against a one-second timeout: each is closed within a few timeouts."""
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 100 + b"\r\n\r\n"
    with contextlib.ExitStack() as stack:
        conns = [
            stack.enter_context(raw_connection(edge.port, timeout=8 * READ_TIMEOUT))
            for _ in range(10)
        ]
        start = min(stack.enter_context(trickling(conn, head, READ_TIMEOUT)) for conn in conns)
        for conn in conns:
            assert conn.closed_by_server()
        took = time.monotonic() - start
    assert took < 4 * READ_TIMEOUT, f"the last was closed after {took:.1f} s"


def test_connections_past_the_cap_are_answered_503(limits: ServerProcess) -> None:
    """Connections held open count against ``GMM_MAX_CONNECTIONS`` (the fixture's own
    client may hold some too): one past the cap is answered 503 and closed."""
    held: list[RawConnection] = []
    try:
        for _ in range(MAX_CONNECTIONS + 1):
            held.append(RawConnection(limits.port))
            r = held[-1].request("GET", "/healthz")
            if r.status != 200:
                break
        body = assert_problem(r, 503)
        assert "GMM_MAX_CONNECTIONS" in str(body["detail"])
        assert r.headers["connection"] == "close"
        assert "retry-after" in r.headers
        assert held[-1].closed_by_server()
    finally:
        for conn in held:
            conn.close()
    deadline = time.monotonic() + 10
    while True:  # the server sees the held connections go
        with raw_connection(limits.port) as conn:
            if conn.request("GET", "/healthz").status == 200:
                break
        assert time.monotonic() < deadline, "still refused after the others closed"
        time.sleep(0.1)


# -- 14. The CSV header rule silently drops a data row. -----------------------------------


@pytest.mark.parametrize(("first_line", "column"), [('"1,5",2', 0), ("0x1p3,2", 0), ('1,2"3', 1)])
def test_a_first_csv_line_with_a_number_in_it_is_never_dropped(
    edge: Edge, first_line: str, column: int
) -> None:
    """Each of the reviewer's first lines was taken for a header and dropped, with a
    201. A line with a number in it is data: this one does not parse, a 422 naming it."""
    datasets = _total(edge.admin, "/v1/datasets")
    with raw_connection(edge.port) as conn:
        r = conn.request("POST", "/v1/datasets", f"{first_line}\n3,4\n".encode(), {**ADMIN, **CSV})
    problem = assert_problem(r, 422)
    assert ["body", 0, column] in [e["loc"] for e in problem["errors"]], problem
    assert _total(edge.admin, "/v1/datasets") == datasets


# -- 15. ENOSPC while writing a dataset says "Could not write the dataset: None." ----------


def test_a_full_disk_while_writing_a_dataset_names_the_cause(edge: Edge) -> None:
    """ENOSPC without a strerror answered "Could not write the dataset: None." The 503
    names the cause and no path of the server's disk, nothing is half-written, and the
    same upload is stored once the disk has room, without a restart."""
    datasets = _total(edge.admin, "/v1/datasets")
    upload = b"15,1\n16,2\n17,3\n"
    with full_disk(edge), raw_connection(edge.port) as conn:
        r = conn.request("POST", "/v1/datasets", upload, {**ADMIN, **CSV})
    problem = assert_problem(r, 503)
    assert problem["type"].endswith(":store-unavailable"), problem
    assert "No space left on device" in problem["detail"], problem
    assert "None" not in problem["detail"] and str(edge.store) not in r.body.decode(), problem
    assert _total(edge.admin, "/v1/datasets") == datasets
    assert _leftovers(edge) == []
    assert edge.admin.post("/v1/datasets", content=upload, headers=CSV).status_code == 201


# -- 16. An edited job file is served as it is. -------------------------------------------


def test_an_edited_job_record_is_refused_as_damage(edge: Edge) -> None:
    """``"progress": "x"`` written into a job's record was served as it was."""
    accepted = edge.admin.post("/v1/models", json=_small_fit(16, wait=False))
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    assert wait_job(edge.admin, job_id)["status"] == "succeeded"
    record = json.loads(read_row(edge.store, "job", job_id))
    write_row(edge.store, "job", job_id, json.dumps({**record, "progress": "x"}).encode())
    with raw_connection(edge.port) as conn:
        r = conn.request("GET", f"/v1/jobs/{job_id}", headers=READER)
    problem = assert_problem(r, 500)
    assert problem["type"].endswith(":artifact-integrity"), problem
    assert job_id not in [j["id"] for j in edge.reader.get("/v1/jobs").json()["items"]]
