"""Predict throughput driven by wrk: the service against the minimal FastAPI app.

A Python load generator tops out near 200 requests/s on a small machine and then
measures itself; wrk (C, event-driven) does not. Both servers get the same bodies at
the same concurrency, in alternating slices so that background load falls on both.
The minimal app's rate is printed too: if it is far below the thousands of requests/s
such an app reaches, the figures say more about the machine than about the service.

    python bench/predict_wrk.py [--duration 10] [--concurrency 16] [--points 1 100]
                                [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
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
from bench.run import Server, minimal_server, service_server  # noqa: E402

_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def wrk(url: str, body: bytes, *, concurrency: int, duration: float, threads: int = 2) -> dict:
    """Requests/s, p50 and p99 (ms) and non-2xx count of one wrk run."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(_LUA.format(body=json.dumps(body.decode())))
        script = fh.name
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{duration:g}s",
            "--latency",
            "-s",
            script,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    Path(script).unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non_2xx": int(bad.group(1)) if bad else 0}


def measure(
    cases: dict[str, tuple[str, bytes]], *, concurrency: int, duration: float, rounds: int
) -> dict[str, dict[str, float]]:
    """Alternate the endpoints (name -> url and body) ``rounds`` times, after a 1 s
    warm-up each that is thrown away: mean req/s, median p50 and p99, summed non-2xx."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    for url, body in cases.values():
        wrk(url, body, concurrency=concurrency, duration=1)
    for _ in range(rounds):
        for name, (url, body) in cases.items():
            runs[name].append(wrk(url, body, concurrency=concurrency, duration=duration / rounds))
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per server")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--points", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")

    results: dict[str, Any] = {"concurrency": args.concurrency, "cases": []}
    with tempfile.TemporaryDirectory(prefix="gmm-bench-") as tmp:
        model_path = Path(tmp) / "seed.joblib"
        gm, X = predict_throughput.fit_reference(model_path)
        minimal = Server(*minimal_server(model_path))
        services = {}
        try:
            for workers in args.workers:
                argv_, env, port, ready = service_server(Path(tmp) / "store")
                env["GMM_WORKERS"] = str(workers)
                services[workers] = Server(argv_, env, port, ready)
            minimal_base = minimal.wait_ready()
            bases = {w: s.wait_ready() for w, s in services.items()}
            model_id = predict_throughput.register_model(bases[args.workers[0]])
            results["same_answers"] = predict_throughput.check_same_answers(
                f"{bases[args.workers[0]]}/v1/models/{model_id}/predict",
                f"{minimal_base}/predict",
                X,
                gm,
            )
            for n in args.points:
                rows = np.vstack([X] * (n // len(X) + 1))[:n]
                body = json.dumps({"points": rows.tolist()}).encode()
                for workers, base in bases.items():
                    urls = {
                        "minimal": f"{minimal_base}/predict",
                        "service": f"{base}/v1/models/{model_id}/predict",
                    }
                    if workers != args.workers[0]:
                        urls.pop("minimal")
                    case = measure(
                        {name: (url, body) for name, url in urls.items()},
                        concurrency=args.concurrency,
                        duration=args.duration,
                        rounds=args.rounds,
                    )
                    results["cases"].append({"points": n, "workers": workers, **case})
        finally:
            minimal.stop()
            for server in services.values():
                server.stop()
    _report(results)
    return results


def _report(results: dict[str, Any]) -> None:
    by_points: dict[int, dict[int, Any]] = {}
    for case in results["cases"]:
        by_points.setdefault(case["points"], {})[case["workers"]] = case
    print(
        f"predict throughput, wrk -c{results['concurrency']} "
        f"(both servers answer sklearn's predict_proba: {results['same_answers']})"
    )
    for n, cases in by_points.items():
        first = min(cases)
        ref = cases[first]["minimal"]
        one = cases[first]["service"]
        print(
            f"  {n:>4} point(s): minimal {ref['rps']:8.0f} req/s p99 {ref['p99_ms']:6.2f} ms | "
            f"service {one['rps']:8.0f} req/s p99 {one['p99_ms']:6.2f} ms | "
            f"ratio {one['rps'] / ref['rps']:.2f}x (goal >= {1.2 if n == 1 else 1.0}x)"
        )
        for workers, case in sorted(cases.items()):
            if workers == first:
                continue
            rps = case["service"]["rps"]
            print(
                f"        {workers} workers: {rps:8.0f} req/s = {rps / one['rps']:.2f}x "
                f"one worker (goal >= 1.5x)"
            )


if __name__ == "__main__":
    main()
