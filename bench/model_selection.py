"""Model selection: a 6 x 4 grid over HTTP against the same grid fitted one by one in-process.

The grid is n_components 1..6 x the four covariance types on ``make_blobs`` points
(10,000 x 4 by default). The reference is what a notebook does: a loop of
``GaussianMixture(...).fit(X)`` with ``bic(X)`` and ``aic(X)``. The service side is
``POST /v1/model-selection`` through an in-process ``TestClient`` (the rows are sent
as JSON, so parsing and validation are paid), once per joblib backend. Every cell's
BIC and AIC are checked against the reference, so the ratio compares equal work.

The same loop is also timed with BLAS and OpenMP held to one thread, for context:
on a shared machine their spinning threads can make the default loop slower.

Repeats are interleaved (reference, each backend, again...) so background load on a
shared machine falls on every variant alike; medians are reported. The goal on two
cores is a ratio of at most 0.65.

    python bench/model_selection.py [--n-samples 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make ``service`` importable from a checkout
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sklearn.datasets import make_blobs  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from service.config import Settings  # noqa: E402
from service.domain import selection  # noqa: E402
from service.main import create_app  # noqa: E402

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
GOAL = 0.65


def make_data(n_samples: int, n_features: int, random_state: int = 0) -> np.ndarray:
    """Four blobs, (n_samples, n_features)."""
    X, _ = make_blobs(
        n_samples=n_samples, n_features=n_features, centers=4, random_state=random_state
    )
    return np.ascontiguousarray(X, dtype=np.float64)


def sequential(X: np.ndarray, max_k: int, params: dict[str, Any]) -> tuple[float, list[tuple]]:
    """Seconds for the in-process loop, and ``(k, covariance_type, bic, aic)`` per cell."""
    t0 = time.perf_counter()
    cells = []
    for cov in COVARIANCE_TYPES:
        for k in range(1, max_k + 1):
            gm = GaussianMixture(n_components=k, covariance_type=cov, **params).fit(X)
            cells.append((k, cov, gm.bic(X), gm.aic(X)))
    return time.perf_counter() - t0, cells


def service_grid(
    client: TestClient, X: np.ndarray, max_k: int, params: dict[str, Any], backend: str
) -> tuple[float, list[tuple]]:
    """Seconds for one ``POST /v1/model-selection`` (JSON encoding included), and its cells."""
    selection.BACKEND = backend  # type: ignore[assignment]
    t0 = time.perf_counter()
    body = {
        "data": {"points": X.tolist()},
        "grid": {"n_components": {"min": 1, "max": max_k}, "covariance_type": COVARIANCE_TYPES},
        "params": params,
    }
    response = client.post("/v1/model-selection", json=body)
    answer = response.json()
    seconds = time.perf_counter() - t0
    if response.status_code != 200:
        raise RuntimeError(f"model selection answered {response.status_code}: {answer}")
    cells = [
        (c["n_components"], c["covariance_type"], c["bic"], c["aic"]) for c in answer["scores"]
    ]
    return seconds, cells


def same_cells(a: list[tuple], b: list[tuple]) -> bool:
    return all(
        x[:2] == y[:2] and np.allclose(x[2:], y[2:], rtol=1e-10, atol=0)
        for x, y in zip(a, b, strict=True)
    )


def run(
    *, n_samples: int, n_features: int, max_k: int, repeats: int, backends: Sequence[str]
) -> dict[str, Any]:
    X = make_data(n_samples, n_features)
    params = {"random_state": 0}
    chosen = selection.BACKEND
    try:
        with tempfile.TemporaryDirectory(prefix="gmm-bench-sel-") as tmp:
            settings = Settings(store_dir=Path(tmp) / "store", secret_key="bench")
            with TestClient(create_app(settings)) as client:
                # Untimed first request per backend: worker processes start and import
                # sklearn once per server process, which a steady server has long paid.
                cold: dict[str, float] = {}
                for backend in backends:
                    cold[backend], _ = service_grid(client, X[:500], 2, params, backend)
                reference: list[float] = []
                single: list[float] = []
                timings: dict[str, list[float]] = {b: [] for b in backends}
                matches = True
                for _ in range(repeats):
                    seconds, expected = sequential(X, max_k, params)
                    reference.append(seconds)
                    # The same loop with BLAS and OpenMP at one thread: on a busy machine
                    # their spinning threads can slow the default loop more than they help.
                    with threadpool_limits(1):
                        seconds, cells = sequential(X, max_k, params)
                    single.append(seconds)
                    matches = matches and same_cells(cells, expected)
                    for backend in backends:
                        seconds, cells = service_grid(client, X, max_k, params, backend)
                        timings[backend].append(seconds)
                        matches = matches and same_cells(cells, expected)
    finally:
        selection.BACKEND = chosen  # the service's own choice, for whoever runs next
    ref = statistics.median(reference)
    return {
        "n_samples": n_samples,
        "n_features": n_features,
        "grid": f"{max_k} x {len(COVARIANCE_TYPES)}",
        "max_parallel_fits": settings.max_parallel_fits,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "matches_sklearn": matches,
        "sequential_seconds": reference,
        "sequential_one_thread_seconds": single,
        "first_request_seconds": cold,
        "service_seconds": timings,
        "ratio": {b: statistics.median(t) / ref for b, t in timings.items()},
        "ratio_to_one_thread": {
            b: statistics.median(t) / statistics.median(single) for b, t in timings.items()
        },
        "goal": GOAL,
    }


def format_table(result: dict[str, Any]) -> str:
    ref = statistics.median(result["sequential_seconds"])
    lines = [
        f"model selection, grid {result['grid']} on {result['n_samples']} x "
        f"{result['n_features']} points, {result['cpu_count']} cpus, "
        f"max_parallel_fits={result['max_parallel_fits']}, "
        f"load average {result['load_average'][0]:.2f}",
        f"  sklearn sequential in-process   median {ref:7.3f} s   (the reference)",
        f"  same, BLAS/OpenMP at 1 thread   median "
        f"{statistics.median(result['sequential_one_thread_seconds']):7.3f} s",
    ]
    for backend, seconds in result["service_seconds"].items():
        lines.append(
            f"  service, joblib {backend:<10}     median {statistics.median(seconds):7.3f} s"
            f"   ratio {result['ratio'][backend]:.3f} (goal <= {GOAL}),"
            f" {result['ratio_to_one_thread'][backend]:.3f} to the 1-thread loop"
        )
    lines.append(f"  every cell's bic/aic equal to sklearn's: {result['matches_sklearn']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-samples", type=int, default=10_000)
    p.add_argument("--n-features", type=int, default=4)
    p.add_argument("--max-k", type=int, default=6, help="n_components runs 1..max-k.")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--backends",
        nargs="+",
        default=[selection.BACKEND],
        choices=("loky", "threading"),
        help="joblib backends to measure (default: the service's).",
    )
    p.add_argument("--output", type=Path, help="Also write the results as JSON here.")
    args = p.parse_args(argv)
    result = run(
        n_samples=args.n_samples,
        n_features=args.n_features,
        max_k=args.max_k,
        repeats=args.repeats,
        backends=args.backends,
    )
    print(format_table(result))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
