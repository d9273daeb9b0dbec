"""Load and soak: 32 clients mixing every kind of request against one server.

A service other services call must stay correct under sustained mixed load, not just
fast on one route: this run counts every answer, and checks that nothing is lost
(a model, dataset or job created and never deleted must never answer 404) and that
the server's memory does not creep (RSS after a warm-up against RSS at the end;
goal < 10 %).

    .venv/bin/python bench/soak.py                       # 60 s, 32 clients
    .venv/bin/python bench/soak.py --duration 10 --warmup 3

Each client draws its next request from ``MIX``: predictions (most of the load) on a
pool of ``--pool-size`` models (24) larger than the server's model cache
(``--cache-size``, 8, given to the server as ``GMM_CACHE_SIZE``), so that most of
them load a model from the store; reads; fits (synchronous, and on an uploaded
dataset); renames and tag changes (``PATCH`` with a JSON merge patch); deletes of
the client's own models; dataset uploads (``.npy`` or JSON, fresh arrays, arrays the
client deleted before, and arrays still stored, which must answer 200); dataset
deletes; and fits submitted with ``"wait": false`` that are then cancelled, and
half of the time deleted. Only the client that created a model, dataset or job ever
deletes it, and every client's arrays are its own, so a 404 for one of them is lost.

Errors are 5xx answers and connection errors. A 429 is the service shedding fit
load on purpose (GMM_MAX_CONCURRENT_FITS, GMM_JOB_QUEUE_LENGTH) and is counted
apart. Any other 4xx to these well-formed requests is ``unexpected``. A 2xx that
contradicts the contract (a dataset id that is not its sha256, a fresh array
answered 200, a stored one 201, a client's own rename not kept) is a ``wrong``
answer. Predict latency is measured from the client, over the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "soak.json"
RSS_GOAL_PERCENT = 10.0
N_FEATURES = 2
#: Models every client predicts with, never deleted: more than the server's cache holds.
POOL_SIZE = 24
#: The ``GMM_CACHE_SIZE`` this bench gives the server it starts.
CACHE_SIZE = 8
#: How often each operation is drawn; predict dominates, as it does for a model server.
#: Fits (create, fit-dataset) and deletes balance, so the store does not keep growing.
MIX = {
    "predict": 0.60,
    "get": 0.05,
    "create": 0.05,
    "fit-dataset": 0.03,
    "delete": 0.08,
    "patch": 0.07,
    "upload": 0.04,
    "dataset-delete": 0.03,
    "fit-async": 0.05,
}
MERGE_PATCH = "application/merge-patch+json"
NPY = "application/x-npy"
#: Arrays a client deleted and may upload again; older ones are forgotten.
KEEP_DELETED = 8
KINDS = ("model", "dataset", "job")


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in kB, from ``/proc/<pid>/status`` (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _estimator(rng: random.Random) -> tuple[str, dict[str, Any]]:
    if rng.random() < 0.5:
        return "gaussian_mixture", {"n_components": 3, "random_state": 0}
    return "kmeans", {"n_clusters": 3, "n_init": 1, "random_state": 0}


def fit_body(rng: random.Random) -> dict[str, Any]:
    """A small fit (a few hundred 2-d points), mixture or k-means at random."""
    data = {
        "generator": {
            "kind": "blobs",
            "n_samples": rng.randint(100, 400),
            "n_features": N_FEATURES,
            "centers": 3,
            "random_state": rng.randrange(1_000_000),
        }
    }
    algorithm, params = _estimator(rng)
    return {"algorithm": algorithm, "params": params, "data": data, "include": []}


def dataset_fit_body(rng: random.Random, dataset_id: str) -> dict[str, Any]:
    algorithm, params = _estimator(rng)
    return {
        "algorithm": algorithm,
        "params": params,
        "data": {"dataset_id": dataset_id},
        "include": [],
    }


def async_fit_body(rng: random.Random) -> dict[str, Any]:
    """A fit long enough (thousands of points, tight ``tol``, several inits) that the
    cancel sent right after its 202 usually finds it queued or running."""
    data = {
        "generator": {
            "kind": "blobs",
            "n_samples": rng.randint(2000, 4000),
            "n_features": N_FEATURES,
            "centers": 5,
            "cluster_std": 2.5,
            "random_state": rng.randrange(1_000_000),
        }
    }
    params = {"n_components": 5, "n_init": 3, "tol": 1e-6, "max_iter": 500, "random_state": 0}
    return {
        "algorithm": "gaussian_mixture",
        "params": params,
        "data": data,
        "include": [],
        "wait": False,
    }


def client_array(seed: int, number: int) -> np.ndarray:
    """The ``number``-th array of client ``seed``: its own random stream, so that no two
    clients ever upload the same array (a dataset's id is its content)."""
    gen = np.random.default_rng([seed, number])
    centers = gen.uniform(-10, 10, size=(3, N_FEATURES))
    rows = gen.integers(60, 200)
    points = centers[gen.integers(0, 3, size=rows)] + gen.normal(size=(rows, N_FEATURES))
    return np.ascontiguousarray(points, dtype=np.float64)


def dataset_sha256(points: np.ndarray) -> str:
    """The id the service must give ``points`` (API.md: the sha256 of shape and values)."""
    shape = np.array(points.shape, dtype="<u8").tobytes()
    return hashlib.sha256(shape + np.ascontiguousarray(points, dtype="<f8").tobytes()).hexdigest()


def npy_bytes(points: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, points, allow_pickle=False)
    return buffer.getvalue()


@dataclass
class Tally:
    """Everything the clients saw; one event loop, so no locks."""

    statuses: Counter[str] = field(default_factory=Counter)  # "<op> <status>"
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    shed_429: int = 0
    unexpected: int = 0
    unexpected_samples: list[str] = field(default_factory=list)
    wrong: int = 0
    wrong_samples: list[str] = field(default_factory=list)
    lost: dict[str, set[str]] = field(default_factory=lambda: {kind: set() for kind in KINDS})
    predict_seconds: list[float] = field(default_factory=list)
    predicted: set[str] = field(default_factory=set)  # models predicted with
    alive: set[str] = field(default_factory=set)  # models created, no delete sent
    alive_datasets: set[str] = field(default_factory=set)  # uploaded, no delete sent
    deleted: set[str] = field(default_factory=set)  # models their owner deleted
    #: Jobs cancelled and never deleted, with the status their cancel answered.
    kept_jobs: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # last name a model's owner set

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def error(self, op: str, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{op}: {what}")

    def wrong_answer(self, op: str, what: str) -> None:
        self.wrong += 1
        if len(self.wrong_samples) < 10:
            self.wrong_samples.append(f"{op}: {what}")

    def answer(self, op: str, response: httpx.Response, alive: tuple[str, str] | None) -> None:
        """Count ``response``; ``alive`` is the ``(kind, id)`` the request names that
        this client knows to exist, so that a 404 for it is a lost resource."""
        status = response.status_code
        self.statuses[f"{op} {status}"] += 1
        if status >= 500:
            self.error(op, f"{status} {response.text[:300]}")
        elif status == 429:
            self.shed_429 += 1
        elif status == 404 and alive is not None:
            kind, resource_id = alive
            self.lost[kind].add(resource_id)
        elif status >= 400:
            self.unexpected += 1
            if len(self.unexpected_samples) < 10:
                self.unexpected_samples.append(f"{op}: {status} {response.text[:300]}")


async def _send(
    http: httpx.AsyncClient,
    tally: Tally,
    op: str,
    method: str,
    url: str,
    *,
    alive: tuple[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response | None:
    """The answer, counted; None after a connection error (counted as an error)."""
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        tally.statuses[f"{op} connection-error"] += 1
        tally.error(op, repr(exc))
        return None
    tally.answer(op, response, alive)
    return response


async def _create(
    http: httpx.AsyncClient,
    tally: Tally,
    op: str,
    body: dict[str, Any],
    alive: tuple[str, str] | None = None,
) -> str | None:
    r = await _send(http, tally, op, "POST", "/v1/models", json=body, alive=alive)
    if r is None or r.status_code != 201:
        return None
    model_id: str = r.json()["id"]
    tally.alive.add(model_id)
    return model_id


@dataclass
class Client:
    """One client's own resources: only it deletes them, so it knows they exist."""

    seed: int
    rng: random.Random
    models: list[str] = field(default_factory=list)
    datasets: dict[str, np.ndarray] = field(default_factory=dict)
    deleted: list[np.ndarray] = field(default_factory=list)  # datasets it deleted
    arrays: int = 0
    patches: int = 0

    def own_model(self, model_id: str, tally: Tally) -> None:
        self.models.append(model_id)
        tally.alive.add(model_id)


Op = Callable[[httpx.AsyncClient, Client, list[str], Tally], Awaitable[None]]


async def _predict(http: httpx.AsyncClient, c: Client, pool: list[str], tally: Tally) -> None:
    model_id = c.rng.choice(pool + c.models)
    points = [[c.rng.uniform(-10, 10) for _ in range(N_FEATURES)] for _ in range(16)]
    start = time.perf_counter()
    r = await _send(
        http,
        tally,
        "predict",
        "POST",
        f"/v1/models/{model_id}/predict",
        json={"points": points},
        alive=("model", model_id),
    )
    if r is not None and r.status_code == 200:
        tally.predict_seconds.append(time.perf_counter() - start)
    tally.predicted.add(model_id)


async def _get(http: httpx.AsyncClient, c: Client, pool: list[str], tally: Tally) -> None:
    model_id = c.rng.choice(pool + c.models)
    await _send(http, tally, "get", "GET", f"/v1/models/{model_id}", alive=("model", model_id))


async def _create_op(http: httpx.AsyncClient, c: Client, pool: list[str], tally: Tally) -> None:
    model_id = await _create(http, tally, "create", fit_body(c.rng))
    if model_id is not None:
        c.own_model(model_id, tally)


async def _fit_dataset(http: httpx.AsyncClient, c: Client, pool: list[str], tally: Tally) -> None:
    if not c.datasets:
        await _upload(http, c, pool, tally)
        return
    dataset_id = c.rng.choice(list(c.datasets))
    body = dataset_fit_body(c.rng, dataset_id)
    model_id = await _create(http, tally, "fit-dataset", body, alive=("dataset", dataset_id))
    if model_id is not None:
        c.own_model(model_id, tally)


async def _delete(http: httpx.AsyncClient, c: Client, pool: list[str], tally: Tally) -> None:
    if not c.models:
        await _create_op(http, c, pool, tally)
        return
    model_id = c.models.pop(c.rng.randrange(len(c.models)))
    tally.alive.discard(model_id)  # from here on a 404 for it is expected
    tally.deleted.add(model_id)
    tally.names.pop(model_id, None)
    await _send(
        http, tally, "delete", "DELETE", f"/v1/models/{model_id}", alive=("model", model_id)
    )


async def _patch(http: httpx.AsyncClient, c: Client, pool: list[str], tally: Tally) -> None:
    """Rename and retag: the pool's models are patched by every client at once, a
    client's own models only by it, so their answer must carry exactly its change."""
    model_id = c.rng.choice(pool + c.models)
    c.patches += 1
    name = f"soak-{c.seed}-{c.patches}"
    tags: dict[str, str | None] = {
        "stage": c.rng.choice(["dev", "staging", "prod"]),
        "owner": f"client-{c.seed}",
    }
    tags["round"] = None if c.rng.random() < 0.2 else str(c.patches)
    r = await _send(
        http,
        tally,
        "patch",
        "PATCH",
        f"/v1/models/{model_id}",
        content=json.dumps({"name": name, "tags": tags}),
        headers={"Content-Type": MERGE_PATCH},
        alive=("model", model_id),
    )
    if r is None or r.status_code != 200 or model_id not in c.models:
        return
    tally.names[model_id] = name
    resource = r.json()
    want = {k: v for k, v in tags.items() if v is not None}
    if resource.get("name") != name or resource.get("tags") != want:
        tally.wrong_answer(
            "patch",
            f"{model_id}: sent {name!r} {want}, answered {resource.get('name')!r} "
            f"{resource.get('tags')}",
        )


async def _upload(http: httpx.AsyncClient, c: Client, pool: list[str], tally: Tally) -> None:
    """A fresh array (201), one this client deleted before (stored afresh: 201, or
    200 if its bytes were still kept), or one it has stored (200, the same resource)."""
    draw = c.rng.random()
    if c.datasets and draw < 0.25:
        op, expected = "upload-again", {200}
        points = c.datasets[c.rng.choice(list(c.datasets))]
    elif c.deleted and draw < 0.45:
        op, expected = "upload", {200, 201}
        points = c.deleted.pop(c.rng.randrange(len(c.deleted)))
    else:
        op, expected = "upload", {201}
        c.arrays += 1
        points = client_array(c.seed, c.arrays)
    name = f"soak-client-{c.seed}"
    if c.rng.random() < 0.5:
        r = await _send(
            http,
            tally,
            op,
            "POST",
            "/v1/datasets",
            content=npy_bytes(points),
            params={"name": name},
            headers={"Content-Type": NPY},
        )
    else:
        body = {"points": points.tolist(), "name": name}
        r = await _send(http, tally, op, "POST", "/v1/datasets", json=body)
    if r is None or r.status_code not in (200, 201):
        return
    dataset_id: str = r.json()["id"]
    if r.status_code not in expected or dataset_id != dataset_sha256(points):
        tally.wrong_answer(op, f"{r.status_code} id {dataset_id} (sha256 {dataset_sha256(points)})")
    c.datasets[dataset_id] = points
    tally.alive_datasets.add(dataset_id)


async def _dataset_delete(
    http: httpx.AsyncClient, c: Client, pool: list[str], tally: Tally
) -> None:
    if not c.datasets:
        await _upload(http, c, pool, tally)
        return
    dataset_id = c.rng.choice(list(c.datasets))
    points = c.datasets.pop(dataset_id)
    tally.alive_datasets.discard(dataset_id)
    c.deleted = [*c.deleted, points][-KEEP_DELETED:]
    url = f"/v1/datasets/{dataset_id}"
    await _send(http, tally, "dataset-delete", "DELETE", url, alive=("dataset", dataset_id))


async def _fit_async(http: httpx.AsyncClient, c: Client, pool: list[str], tally: Tally) -> None:
    """Submit a fit as a job (202), cancel it at once, and delete its record half the
    time. A job already done when the cancel came has stored its model: the client
    owns it from then on."""
    r = await _send(http, tally, "fit-async", "POST", "/v1/models", json=async_fit_body(c.rng))
    if r is None or r.status_code != 202:
        return
    job_id: str = r.json()["id"]
    url = f"/v1/jobs/{job_id}"
    r = await _send(http, tally, "cancel", "POST", f"{url}/cancel", alive=("job", job_id))
    answered = "?"
    if r is not None and r.status_code in (200, 202):
        job = r.json()
        answered = job.get("status", "?")
        if answered == "succeeded" and job.get("model_id"):
            c.own_model(job["model_id"], tally)
    if c.rng.random() < 0.5:
        await _send(http, tally, "job-delete", "DELETE", url, alive=("job", job_id))
    else:
        tally.kept_jobs[job_id] = answered


OPS: dict[str, Op] = {
    "predict": _predict,
    "get": _get,
    "create": _create_op,
    "fit-dataset": _fit_dataset,
    "delete": _delete,
    "patch": _patch,
    "upload": _upload,
    "dataset-delete": _dataset_delete,
    "fit-async": _fit_async,
}
assert set(OPS) == set(MIX)


async def _client(
    http: httpx.AsyncClient,
    seed: int,
    pool: list[str],
    deadline: float,
    tally: Tally,
) -> None:
    c = Client(seed=seed, rng=random.Random(seed))
    ops, weights = list(MIX), list(MIX.values())
    while time.monotonic() < deadline:
        await OPS[c.rng.choices(ops, weights)[0]](http, c, pool, tally)


async def _sample_rss(pid: int, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(rss_kb(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)


async def _create_pool(
    http: httpx.AsyncClient, rng: random.Random, tally: Tally, size: int
) -> list[str]:
    """``size`` models, four fits at a time (the server's default fit slots)."""
    bodies = [fit_body(rng) for _ in range(size)]
    slots = asyncio.Semaphore(4)

    async def one(body: dict[str, Any]) -> str:
        async with slots:
            model_id = await _create(http, tally, "create", body)
        if model_id is None:
            raise RuntimeError(f"could not create the predict pool: {tally.error_samples}")
        return model_id

    return list(await asyncio.gather(*(one(body) for body in bodies)))


_CACHE_METRIC = re.compile(r"^gmm_model_cache_(hits|misses)(?:\{[^}]*\})?\s+(\S+)$", re.M)


async def _cache_counts(http: httpx.AsyncClient) -> dict[str, int]:
    """The server's model cache hits and misses from ``/metrics`` (summed over workers)."""
    counts = {"hits": 0, "misses": 0}
    r = await http.get("/metrics")
    for kind, value in _CACHE_METRIC.findall(r.text):
        counts[kind] += int(float(value))
    return counts


async def _final_checks(http: httpx.AsyncClient, tally: Tally, clients: int) -> Counter[str]:
    """Every model and dataset never deleted must still be there (a model with the last
    name its owner gave it), and every job never deleted must still answer; counted
    as ``<status its cancel answered>-><status now>``. A job that succeeded although
    its cancel found it running (its fit had done its last step) must have stored its
    model."""
    check = asyncio.Semaphore(clients)
    jobs_final: Counter[str] = Counter()

    async def read(url: str) -> httpx.Response:
        async with check:
            return await http.get(url)

    async def model(model_id: str) -> None:
        r = await read(f"/v1/models/{model_id}")
        if r.status_code == 404:
            tally.lost["model"].add(model_id)
        elif r.status_code != 200:
            tally.error("final get", f"{r.status_code} {r.text[:300]}")
        elif model_id in tally.names and r.json().get("name") != tally.names[model_id]:
            tally.wrong_answer(
                "final get",
                f"{model_id} named {r.json().get('name')!r}, "
                f"last renamed {tally.names[model_id]!r}",
            )

    async def dataset(dataset_id: str) -> None:
        r = await read(f"/v1/datasets/{dataset_id}")
        if r.status_code == 404:
            tally.lost["dataset"].add(dataset_id)
        elif r.status_code != 200:
            tally.error("final dataset get", f"{r.status_code} {r.text[:300]}")

    async def job(job_id: str) -> None:
        r = await read(f"/v1/jobs/{job_id}")
        if r.status_code == 404:
            tally.lost["job"].add(job_id)
        elif r.status_code != 200:
            tally.error("final job get", f"{r.status_code} {r.text[:300]}")
        else:
            job = r.json()
            jobs_final[f"{tally.kept_jobs[job_id]}->{job['status']}"] += 1
            model_id = job.get("model_id")
            if model_id and model_id not in tally.alive and model_id not in tally.deleted:
                await model(model_id)

    await asyncio.gather(
        *(model(m) for m in sorted(tally.alive)),
        *(dataset(d) for d in sorted(tally.alive_datasets)),
        *(job(j) for j in tally.kept_jobs),
    )
    return jobs_final


async def run_soak(
    base_url: str,
    *,
    pid: int,
    duration: float = 60.0,
    clients: int = 32,
    warmup: float = 10.0,
    seed: int = 0,
    pool_size: int = POOL_SIZE,
    cache_size: int | None = None,
) -> dict[str, Any]:
    """Drive ``clients`` concurrent clients for ``duration`` seconds; the figures as a dict.

    ``pid`` is the server process whose RSS is read (one uvicorn worker). RSS is
    taken ``warmup`` seconds into the load (caches, pools and allocator arenas have
    grown by then) and again when the load stops. ``cache_size`` is the server's
    ``GMM_CACHE_SIZE``, for the report only: the server was started with it.
    """
    tally = Tally()
    # One connection per client, dropped after 2 s idle: uvicorn closes idle connections
    # after 5 s (timeout_keep_alive), and a client reusing one at that very moment gets a
    # ReadError that says nothing about the service (the keep-alive race).
    limits = httpx.Limits(
        max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(base_url=base_url, timeout=120.0, limits=limits) as http:
        pool = await _create_pool(http, random.Random(seed), tally, pool_size)
        cache_before = await _cache_counts(http)

        samples: list[int] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample_rss(pid, samples, stop))
        load_start = time.monotonic()
        deadline = load_start + duration
        tasks = [
            asyncio.create_task(_client(http, seed * 1000 + i + 1, pool, deadline, tally))
            for i in range(clients)
        ]
        await asyncio.sleep(min(warmup, duration))
        rss_warm = rss_kb(pid)
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - load_start
        rss_end = rss_kb(pid)
        stop.set()
        await sampler
        cache_after = await _cache_counts(http)
        jobs_final = await _final_checks(http, tally, clients)

    latencies_ms = np.asarray(tally.predict_seconds) * 1000.0
    hits = cache_after["hits"] - cache_before["hits"]
    misses = cache_after["misses"] - cache_before["misses"]
    return {
        "duration_seconds": round(elapsed, 2),
        "clients": clients,
        "warmup_seconds": warmup,
        "requests": tally.requests,
        "requests_per_second": round(tally.requests / elapsed, 1),
        "errors": tally.errors,
        "error_samples": tally.error_samples,
        "shed_429": tally.shed_429,
        "unexpected_4xx": tally.unexpected,
        "unexpected_samples": tally.unexpected_samples,
        "wrong_answers": tally.wrong,
        "wrong_samples": tally.wrong_samples,
        "lost_models": sorted(tally.lost["model"]),
        "lost_datasets": sorted(tally.lost["dataset"]),
        "lost_jobs": sorted(tally.lost["job"]),
        "models_alive_checked": len(tally.alive),
        "datasets_alive_checked": len(tally.alive_datasets),
        "jobs_kept_checked": len(tally.kept_jobs),
        "jobs_final": dict(sorted(jobs_final.items())),
        "statuses": dict(sorted(tally.statuses.items())),
        "predict": {
            "count": int(latencies_ms.size),
            "p50_ms": float(np.percentile(latencies_ms, 50)) if latencies_ms.size else None,
            "p99_ms": float(np.percentile(latencies_ms, 99)) if latencies_ms.size else None,
            "max_ms": float(latencies_ms.max()) if latencies_ms.size else None,
        },
        "cache": {
            "size": cache_size,
            "pool_size": pool_size,
            "models_predicted": len(tally.predicted),
            "hits": hits,
            "misses": misses,
            "hit_ratio": round(hits / (hits + misses), 3) if hits + misses else None,
        },
        "rss_kb": {
            "after_warmup": rss_warm,
            "end": rss_end,
            "max": max(samples, default=rss_end),
            "growth_percent": round(100.0 * (rss_end - rss_warm) / rss_warm, 2),
            "goal_percent": RSS_GOAL_PERCENT,
        },
    }


def format_report(result: dict[str, Any]) -> str:
    pred, rss, cache = result["predict"], result["rss_kb"], result["cache"]
    goal = "met" if rss["growth_percent"] < rss["goal_percent"] else "NOT met"
    lines = [
        f"soak: {result['clients']} clients for {result['duration_seconds']} s "
        f"(warm-up {result['warmup_seconds']} s)",
        f"  requests      {result['requests']} ({result['requests_per_second']}/s)",
        f"  errors        {result['errors']} (5xx and connection errors)",
        f"  429 (shed)    {result['shed_429']}",
        f"  other 4xx     {result['unexpected_4xx']}",
        f"  wrong 2xx     {result['wrong_answers']}",
        f"  lost          {len(result['lost_models'])} models "
        f"(of {result['models_alive_checked']} alive at the end), "
        f"{len(result['lost_datasets'])} datasets (of {result['datasets_alive_checked']}), "
        f"{len(result['lost_jobs'])} jobs (of {result['jobs_kept_checked']} kept: "
        f"{result['jobs_final']})",
        f"  predict       n={pred['count']} p50={_ms(pred['p50_ms'])} p99={_ms(pred['p99_ms'])} "
        f"max={_ms(pred['max_ms'])}",
        f"  model cache   size {cache['size']}, pool {cache['pool_size']}, "
        f"{cache['models_predicted']} models predicted: {cache['hits']} hits, "
        f"{cache['misses']} misses (hit ratio {cache['hit_ratio']})",
        f"  server RSS    {rss['after_warmup'] / 1024:.1f} MiB after warm-up -> "
        f"{rss['end'] / 1024:.1f} MiB at the end (max {rss['max'] / 1024:.1f}): "
        f"{rss['growth_percent']:+.2f} % (goal < {rss['goal_percent']:.0f} %: {goal})",
        f"  statuses      {result['statuses']}",
    ]
    for key in ("error_samples", "unexpected_samples", "wrong_samples"):
        lines.extend(f"  {key[:-8]}: {sample}" for sample in result[key])
    if "load_average" in result:
        lines.append(
            f"  load average  start {result['load_average']['start']} end "
            f"{result['load_average']['end']} on {os.cpu_count()} CPUs"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before RSS is taken")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pool-size", type=int, default=POOL_SIZE, help="models predicted with, never deleted"
    )
    parser.add_argument(
        "--cache-size", type=int, default=CACHE_SIZE, help="the server's GMM_CACHE_SIZE"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Start ``python -m service`` (one worker, temporary store), soak it, stop it."""
    from bench.run import Server, service_server

    args = parse_args(argv)
    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="gmm-soak-") as tmp:
        server_argv, env, port, ready_path = service_server(Path(tmp) / "store")
        env["GMM_CACHE_SIZE"] = str(args.cache_size)
        server = Server(server_argv, env, port, ready_path)
        try:
            base = server.wait_ready()
            result = asyncio.run(
                run_soak(
                    base,
                    pid=server.proc.pid,
                    duration=args.duration,
                    clients=args.clients,
                    warmup=args.warmup,
                    seed=args.seed,
                    pool_size=args.pool_size,
                    cache_size=args.cache_size,
                )
            )
            if result["errors"]:  # the tracebacks behind the 5xx, before the log goes
                result["server_log_tail"] = server.log_text()[-20_000:]
        finally:
            server.stop()
    result["load_average"] = {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}
    result["cpu_count"] = os.cpu_count()
    print(format_report(result))
    if "server_log_tail" in result:
        print("server log (tail):\n" + result["server_log_tail"][-4000:])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
