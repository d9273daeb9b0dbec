"""Predict throughput driven by wrk: the service against the shared reference app.

A Python load generator tops out near 200 requests/s on a small machine and then
measures itself; wrk (C, event-driven) does not. The reference is
``../shared/bench/minimal_app.py`` (an ``async`` FastAPI route, the raw body parsed
by orjson, ``predict_proba``, an orjson answer), started as its docstring says with
the uvicorn options ``python -m service`` uses. Every endpoint gets the same body at
the same concurrency, in alternating slices so that background load falls on all of
them, after a 1 s warm-up each that is thrown away:

- the reference;
- the service with default settings (the JSON access line and metrics on), one worker;
- the same with ``GMM_API_KEYS`` set, each request sending its key;
- the same service with ``GMM_WORKERS=2``.

The reference's own rate is printed beside every ratio: a reference far below the
thousands of requests/s such an app reaches means the machine (or wrk) was the
bottleneck, not the service.

Where the machine has two CPUs or more, each one-worker server is pinned to CPU 0 and
wrk (``--threads``, 4) to CPU 1 (``taskset``), so that the load generator never takes
the server's CPU: unpinned on two cores, wrk's thread and the server's event loop took
turns on one core now and then, and the p99 of both apps moved between 8 and 140 ms
from run to run. Two workers need both CPUs; they are compared with one worker
measured the same way, unpinned, beside wrk (the "one worker, unpinned" row).

    python bench/predict_wrk.py [--duration 9] [--rounds 3] [--concurrency 16]
                                [--threads 4] [--points 1 100] [--reference PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench import predict_throughput  # noqa: E402
from bench.run import (  # noqa: E402
    SHARED_REFERENCE,
    Server,
    machine_info,
    reference_server,
    service_server,
)

#: The body is read from a file, so that any bytes (a binary tensor) go as they are.
_LUA = """
wrk.method = "POST"
local f = io.open({path}, "rb")
wrk.body = f:read("*all")
f:close()
{headers}
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
API_KEY = "bench-key"
#: Goals of issue 17, printed beside the figures.
GOALS = {1: 2.0, 100: 1.5}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


class Endpoint:
    """A URL, a body and its headers, as a wrk script in a temporary folder."""

    def __init__(self, url: str, body: bytes, headers: dict[str, str], folder: Path) -> None:
        self.url = url
        fd, body_path = tempfile.mkstemp(dir=folder, suffix=".body")
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
        lines = "\n".join(
            f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()
        )
        fd, self.script = tempfile.mkstemp(dir=folder, suffix=".lua")
        with os.fdopen(fd, "w") as fh:
            fh.write(_LUA.format(path=json.dumps(body_path), headers=lines))


def pinned(cpu: int | None) -> list[str]:
    """The ``taskset`` prefix that runs a command on ``cpu`` alone; none for None."""
    return [] if cpu is None else ["taskset", "-c", str(cpu)]


def cpus_to_pin() -> tuple[int | None, int | None]:
    """(the one-worker servers' CPU, wrk's CPU): 0 and 1 where there are two CPUs and
    ``taskset``, else (None, None): nothing pinned."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return 0, 1
    return None, None


def wrk(
    endpoint: Endpoint,
    *,
    concurrency: int,
    duration: float,
    threads: int = 4,
    cpu: int | None = None,
) -> dict:
    """Requests/s, p50 and p99 (ms) and non-2xx count of one wrk run of ``duration``
    seconds (whole seconds: wrk takes no fraction; at least 1), on ``cpu`` if given."""
    out = subprocess.run(
        [
            *pinned(cpu),
            "wrk",
            f"-t{min(threads, concurrency)}",  # wrk needs a connection per thread
            f"-c{concurrency}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-s",
            endpoint.script,
            endpoint.url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(0) if errors else "",
    }


def measure(
    cases: dict[str, Endpoint],
    *,
    concurrency: int,
    duration: float,
    rounds: int,
    threads: int = 4,
    cpus: dict[str, int | None] | None = None,
) -> dict[str, dict[str, float]]:
    """Alternate the endpoints ``rounds`` times, ``duration / rounds`` seconds each, after
    a 1 s warm-up each that is thrown away: mean req/s, median p50 and p99, summed
    non-2xx. wrk runs on ``cpus[name]`` for each endpoint so named."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    where = cpus or {}

    def run(name: str, seconds: float) -> dict[str, Any]:
        return wrk(
            cases[name],
            concurrency=concurrency,
            duration=seconds,
            threads=threads,
            cpu=where.get(name),
        )

    for name in cases:
        run(name, 1)
    for _ in range(rounds):
        for name in cases:
            runs[name].append(run(name, duration / rounds))
    return {
        name: {
            "rps": float(np.mean([r["rps"] for r in rs])),
            "p50_ms": float(np.median([r["p50_ms"] for r in rs])),
            "p99_ms": float(np.median([r["p99_ms"] for r in rs])),
            "non_2xx": float(sum(r["non_2xx"] for r in rs)),
        }
        for name, rs in runs.items()
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=9.0, help="seconds per endpoint")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=4, help="wrk's threads")
    parser.add_argument("--points", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--reference", type=Path, default=SHARED_REFERENCE)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    server_cpu, wrk_cpu = cpus_to_pin()

    results: dict[str, Any] = {
        "concurrency": args.concurrency,
        "threads": args.threads,
        "pinned": server_cpu is not None,
        "machine": machine_info(),
        "cases": [],
    }
    with tempfile.TemporaryDirectory(prefix="gmm-bench-") as tmp:
        folder = Path(tmp)
        gm, X = predict_throughput.fit_reference(folder / "seed.joblib")
        store = folder / "store"
        on_cpu = pinned(server_cpu)
        servers = {
            "reference": _pinned_server(
                reference_server(folder / "seed.joblib", args.reference), on_cpu
            ),
            "service": _pinned_server(service_server(store), on_cpu),
            "service, API keys": _pinned_server(
                service_server(store, {"GMM_API_KEYS": API_KEY}), on_cpu
            ),
            "service, unpinned": Server(*service_server(store)),
            "service, 2 workers": Server(*service_server(store, {"GMM_WORKERS": "2"})),
        }
        unpinned = ("service, unpinned", "service, 2 workers")
        wrk_cpus = {name: (None if name in unpinned else wrk_cpu) for name in servers}
        try:
            bases = {name: server.wait_ready() for name, server in servers.items()}
            model_id = predict_throughput.register_model(bases["service"])
            paths = {name: f"/v1/models/{model_id}/predict" for name in servers}
            paths["reference"] = "/predict"
            headers = {name: {"Content-Type": "application/json"} for name in servers}
            headers["service, API keys"]["X-API-Key"] = API_KEY
            results["same_answers"] = all(
                predict_throughput.check_same_answers(
                    bases[name] + paths[name],
                    bases["reference"] + paths["reference"],
                    X,
                    gm,
                    headers=headers[name],
                )
                for name in servers
                if name != "reference"
            )
            for n in args.points:
                rows = np.vstack([X] * (n // len(X) + 1))[:n]
                body = json.dumps({"points": rows.tolist()}).encode()
                cases = {
                    name: Endpoint(bases[name] + paths[name], body, headers[name], folder)
                    for name in servers
                }
                case = measure(
                    cases,
                    concurrency=args.concurrency,
                    duration=args.duration,
                    rounds=args.rounds,
                    threads=args.threads,
                    cpus=wrk_cpus,
                )
                results["cases"].append({"points": n, **case})
        finally:
            for server in servers.values():
                server.stop()
    results["load_average_end"] = list(os.getloadavg())
    _report(results)
    return results


def _pinned_server(spec: tuple[list[str], dict[str, str], int, str], prefix: list[str]) -> Server:
    """A server started under ``prefix`` (``taskset`` execs the command: same pid)."""
    argv, env, port, ready = spec
    return Server([*prefix, *argv], env, port, ready)


def _report(results: dict[str, Any]) -> None:
    load = results["machine"]["load_average"][0], results["load_average_end"][0]
    where = (
        "one-worker servers on CPU 0, wrk on CPU 1"
        if results["pinned"]
        else "nothing pinned (one CPU, or no taskset)"
    )
    print(
        f"predict throughput, wrk -t{results['threads']} -c{results['concurrency']}, {where}, "
        f"load average {load[0]:.2f} -> {load[1]:.2f} (every server answers sklearn's "
        f"predict_proba: {results['same_answers']})"
    )
    for case in results["cases"]:
        n, ref, one = case["points"], case["reference"], case["service"]
        keys, two = case["service, API keys"], case["service, 2 workers"]
        loose = case["service, unpinned"]
        ratio = one["rps"] / ref["rps"]
        print(f"  {n:>4} point(s): reference {ref['rps']:8.0f} req/s p99 {ref['p99_ms']:6.2f} ms")
        print(
            f"        service            {one['rps']:8.0f} req/s p99 {one['p99_ms']:6.2f} ms"
            f"  {ratio:.2f}x the reference (goal >= {GOALS.get(n, 1.0)}x)"
            + (
                f"; p99 {one['p99_ms'] / ref['p99_ms']:.2f}x the reference's (goal <= 1.0x)"
                if n == 1
                else ""
            )
        )
        print(
            f"        with API keys      {keys['rps']:8.0f} req/s p99 {keys['p99_ms']:6.2f} ms"
            f"  {keys['rps'] / ref['rps']:.2f}x the reference"
        )
        print(
            f"        one worker, unpinned {loose['rps']:6.0f} req/s p99 {loose['p99_ms']:6.2f} ms"
        )
        print(
            f"        2 workers, unpinned {two['rps']:7.0f} req/s p99 {two['p99_ms']:6.2f} ms"
            f"  {two['rps'] / loose['rps']:.2f}x one worker unpinned (goal >= 1.5x)"
        )
        errors = sum(int(c["non_2xx"]) for c in (ref, one, keys, loose, two))
        if errors:
            print(f"        non-2xx answers: {errors}")


if __name__ == "__main__":
    main()
