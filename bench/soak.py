"""Load and soak: 32 clients mixing predict, create, get and delete against one server.

A service other services call must stay correct under sustained mixed load, not just
fast on one route: this run counts every answer, and checks that nothing is lost
(a model created and never deleted must never answer 404) and that the server's
memory does not creep (RSS after a warm-up against RSS at the end; goal < 10 %).

    .venv/bin/python bench/soak.py                       # 60 s, 32 clients
    .venv/bin/python bench/soak.py --duration 10 --warmup 3

Errors are 5xx answers and connection errors. A 429 is the service shedding fit
load on purpose (GMM_MAX_CONCURRENT_FITS) and is counted apart. Any other 4xx to
these well-formed requests is ``unexpected``. Predict latency is measured from the
client, over the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
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
POOL_SIZE = 4  # models every client predicts with; never deleted
#: How often each operation is drawn; predict dominates, as it does for a model server.
MIX = {"predict": 0.75, "get": 0.09, "create": 0.08, "delete": 0.08}


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in kB, from ``/proc/<pid>/status`` (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


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
    if rng.random() < 0.5:
        params: dict[str, Any] = {"n_components": 3, "random_state": 0}
        return {"algorithm": "gaussian_mixture", "params": params, "data": data, "include": []}
    params = {"n_clusters": 3, "n_init": 1, "random_state": 0}
    return {"algorithm": "kmeans", "params": params, "data": data, "include": []}


@dataclass
class Tally:
    """Everything the clients saw; one event loop, so no locks."""

    statuses: Counter[str] = field(default_factory=Counter)  # "<op> <status>"
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    shed_429: int = 0
    unexpected: int = 0
    unexpected_samples: list[str] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)
    predict_seconds: list[float] = field(default_factory=list)
    alive: set[str] = field(default_factory=set)  # created, no delete sent

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def error(self, op: str, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{op}: {what}")

    def answer(self, op: str, model_id: str | None, response: httpx.Response) -> None:
        status = response.status_code
        self.statuses[f"{op} {status}"] += 1
        if status >= 500:
            self.error(op, f"{status} {response.text[:300]}")
        elif status == 429:
            self.shed_429 += 1
        elif status == 404 and model_id is not None:
            self.lost.add(model_id)  # only ids still alive are ever asked for
        elif status >= 400:
            self.unexpected += 1
            if len(self.unexpected_samples) < 10:
                self.unexpected_samples.append(f"{op}: {status} {response.text[:300]}")


async def _create(http: httpx.AsyncClient, rng: random.Random, tally: Tally) -> str | None:
    try:
        r = await http.post("/v1/models", json=fit_body(rng))
    except httpx.TransportError as exc:
        tally.statuses["create connection-error"] += 1
        tally.error("create", repr(exc))
        return None
    tally.answer("create", None, r)
    if r.status_code != 201:
        return None
    model_id: str = r.json()["id"]
    tally.alive.add(model_id)
    return model_id


async def _client(
    http: httpx.AsyncClient,
    seed: int,
    pool: list[str],
    deadline: float,
    tally: Tally,
) -> None:
    rng = random.Random(seed)
    mine: list[str] = []  # created by this client: only it ever deletes them
    ops, weights = list(MIX), list(MIX.values())
    while time.monotonic() < deadline:
        op = rng.choices(ops, weights)[0]
        if op == "delete" and not mine:
            op = "create"
        if op == "create":
            model_id = await _create(http, rng, tally)
            if model_id is not None:
                mine.append(model_id)
            continue
        if op == "delete":
            model_id = mine.pop(rng.randrange(len(mine)))
            tally.alive.discard(model_id)  # from here on a 404 for it is expected
            try:
                r = await http.delete(f"/v1/models/{model_id}")
            except httpx.TransportError as exc:
                tally.statuses["delete connection-error"] += 1
                tally.error("delete", repr(exc))
                continue
            tally.answer("delete", model_id, r)
            continue
        model_id = rng.choice(pool + mine)
        try:
            if op == "get":
                r = await http.get(f"/v1/models/{model_id}")
            else:
                points = [[rng.uniform(-10, 10) for _ in range(N_FEATURES)] for _ in range(16)]
                start = time.perf_counter()
                r = await http.post(f"/v1/models/{model_id}/predict", json={"points": points})
                if r.status_code == 200:
                    tally.predict_seconds.append(time.perf_counter() - start)
        except httpx.TransportError as exc:
            tally.statuses[f"{op} connection-error"] += 1
            tally.error(op, repr(exc))
            continue
        tally.answer(op, model_id, r)


async def _sample_rss(pid: int, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(rss_kb(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)


async def run_soak(
    base_url: str,
    *,
    pid: int,
    duration: float = 60.0,
    clients: int = 32,
    warmup: float = 10.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Drive ``clients`` concurrent clients for ``duration`` seconds; the figures as a dict.

    ``pid`` is the server process whose RSS is read (one uvicorn worker). RSS is
    taken ``warmup`` seconds into the load (caches, pools and allocator arenas have
    grown by then) and again when the load stops.
    """
    tally = Tally()
    # One connection per client, dropped after 2 s idle: uvicorn closes idle connections
    # after 5 s (timeout_keep_alive), and a client reusing one at that very moment gets a
    # ReadError that says nothing about the service (the keep-alive race).
    limits = httpx.Limits(
        max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(base_url=base_url, timeout=120.0, limits=limits) as http:
        rng = random.Random(seed)
        pool: list[str] = []
        while len(pool) < POOL_SIZE:
            model_id = await _create(http, rng, tally)
            if model_id is None:
                raise RuntimeError(f"could not create the predict pool: {tally.error_samples}")
            pool.append(model_id)

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

        # Every model created and never deleted must still be there, whole.
        survivors = sorted(tally.alive)
        check = asyncio.Semaphore(clients)

        async def still_there(model_id: str) -> None:
            async with check:
                r = await http.get(f"/v1/models/{model_id}")
            if r.status_code == 404:
                tally.lost.add(model_id)
            elif r.status_code != 200:
                tally.error("final get", f"{r.status_code} {r.text[:300]}")

        await asyncio.gather(*(still_there(m) for m in survivors))

    latencies_ms = np.asarray(tally.predict_seconds) * 1000.0
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
        "lost_models": sorted(tally.lost),
        "models_alive_checked": len(survivors),
        "statuses": dict(sorted(tally.statuses.items())),
        "predict": {
            "count": int(latencies_ms.size),
            "p50_ms": float(np.percentile(latencies_ms, 50)) if latencies_ms.size else None,
            "p99_ms": float(np.percentile(latencies_ms, 99)) if latencies_ms.size else None,
            "max_ms": float(latencies_ms.max()) if latencies_ms.size else None,
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
    pred, rss = result["predict"], result["rss_kb"]
    goal = "met" if rss["growth_percent"] < rss["goal_percent"] else "NOT met"
    lines = [
        f"soak: {result['clients']} clients for {result['duration_seconds']} s "
        f"(warm-up {result['warmup_seconds']} s)",
        f"  requests      {result['requests']} ({result['requests_per_second']}/s)",
        f"  errors        {result['errors']} (5xx and connection errors)",
        f"  429 (shed)    {result['shed_429']}",
        f"  other 4xx     {result['unexpected_4xx']}",
        f"  lost models   {len(result['lost_models'])} "
        f"(of {result['models_alive_checked']} alive at the end)",
        f"  predict       n={pred['count']} p50={_ms(pred['p50_ms'])} p99={_ms(pred['p99_ms'])} "
        f"max={_ms(pred['max_ms'])}",
        f"  server RSS    {rss['after_warmup'] / 1024:.1f} MiB after warm-up -> "
        f"{rss['end'] / 1024:.1f} MiB at the end (max {rss['max'] / 1024:.1f}): "
        f"{rss['growth_percent']:+.2f} % (goal < {rss['goal_percent']:.0f} %: {goal})",
        f"  statuses      {result['statuses']}",
    ]
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
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Start ``python -m service`` (one worker, temporary store), soak it, stop it."""
    from bench.run import Server, service_server

    args = parse_args(argv)
    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="gmm-soak-") as tmp:
        server = Server(*service_server(Path(tmp) / "store"))
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
                )
            )
        finally:
            server.stop()
    result["load_average"] = {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}
    result["cpu_count"] = os.cpu_count()
    print(format_report(result))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
