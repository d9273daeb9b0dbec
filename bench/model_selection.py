"""Model selection: a 6 x 4 grid over HTTP against the same grid fitted one by one in-process.

The grid is n_components 1..6 x the four covariance types on ``make_blobs`` points
(10,000 x 4 by default). The reference is what a notebook does: a loop of
``GaussianMixture(...).fit(X)`` with ``bic(X)`` and ``aic(X)``. The service side is
``POST /v1/model-selection`` through an in-process ``TestClient`` (the rows are sent
as JSON, so parsing and validation are paid), once per joblib backend. Every cell's
BIC and AIC are checked against the reference, so the ratio compares equal work.

The same loop is also timed with BLAS and OpenMP held to one thread, for context:
on a shared machine their spinning threads can make the default loop slower.

With ``--dask`` (needs ``distributed``, the ``dask`` extra) the same request is also
sent to a second app built with ``dask_scheduler`` set to a ``LocalCluster`` started
once here (``--dask-workers`` worker processes, one thread each, on loopback): every
grid cell is then one task on the cluster. It gets one untimed small request first
(the workers import scikit-learn on their first task), joins the same interleaved
loop and the same BIC/AIC check, and is reported as ``dask``.

Repeats are interleaved (reference, each backend, again...) so background load on a
shared machine falls on every variant alike; medians are reported. The goal on two
cores is a ratio of at most 0.65.

    python bench/model_selection.py [--n-samples 10000] [--n-features 4] [--repeats 3]
                                    [--dask [--dask-workers 2]]
"""

from __future__ import annotations

import argparse
import contextlib
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
from service.domain.analysis import selection  # noqa: E402
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


#: The key of the Dask variant in ``service_seconds``, ``ratio``, ...
DASK = "dask"


def local_cluster(n_workers: int) -> Any:
    """A ``distributed.LocalCluster`` of ``n_workers`` processes with one thread each,
    on loopback, as tests/test_dask_cluster.py starts it."""
    import distributed

    return distributed.LocalCluster(
        n_workers=n_workers,
        processes=True,
        threads_per_worker=1,
        dashboard_address=":0",
        host="127.0.0.1",
    )


def run(
    *,
    n_samples: int,
    n_features: int,
    max_k: int,
    repeats: int,
    backends: Sequence[str],
    dask_workers: int = 0,
) -> dict[str, Any]:
    """Time the grid; ``dask_workers`` > 0 adds the service on a LocalCluster of that
    many single-thread worker processes (``DASK``), started once for the whole run."""
    X = make_data(n_samples, n_features)
    params = {"random_state": 0}
    chosen = selection.BACKEND
    cluster_info: dict[str, Any] | None = None
    try:
        with (
            tempfile.TemporaryDirectory(prefix="gmm-bench-sel-") as tmp,
            contextlib.ExitStack() as stack,
        ):
            settings = Settings(store_dir=Path(tmp) / "store", secret_key="bench")
            client = stack.enter_context(TestClient(create_app(settings)))
            # label -> (app, joblib backend): the backend is ignored on the cluster,
            # where every cell is a task and the request's pool is threads.
            variants: dict[str, tuple[TestClient, str]] = {b: (client, b) for b in backends}
            if dask_workers > 0:
                t0 = time.perf_counter()
                cluster = stack.enter_context(local_cluster(dask_workers))
                started = time.perf_counter() - t0
                dask_settings = Settings(
                    store_dir=Path(tmp) / "store-dask",
                    secret_key="bench",
                    dask_scheduler=cluster.scheduler_address,
                )
                dask_client = stack.enter_context(TestClient(create_app(dask_settings)))
                variants[DASK] = (dask_client, "threading")
                cluster_info = {
                    "workers": dask_workers,
                    "threads_per_worker": 1,
                    "start_seconds": started,
                }
            # Untimed first request per variant: worker processes start and import
            # sklearn once per server process (loky) or worker (dask), which a steady
            # server has long paid.
            cold: dict[str, float] = {}
            for label, (app, backend) in variants.items():
                cold[label], _ = service_grid(app, X[:500], 2, params, backend)
            if cluster_info is not None:
                cluster_info["status"] = dask_client.get("/readyz").json().get("dask")
            reference: list[float] = []
            single: list[float] = []
            timings: dict[str, list[float]] = {label: [] for label in variants}
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
                for label, (app, backend) in variants.items():
                    seconds, cells = service_grid(app, X, max_k, params, backend)
                    timings[label].append(seconds)
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
        "dask_cluster": cluster_info,
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
    cluster = result.get("dask_cluster")
    for label, seconds in result["service_seconds"].items():
        if label == DASK and cluster is not None:
            name = f"service, LocalCluster {cluster['workers']}x1"
        else:
            name = f"service, joblib {label}"
        goal = "" if label == DASK else f" (goal <= {GOAL})"  # the goal is the local pool's
        lines.append(
            f"  {name:<31}median {statistics.median(seconds):7.3f} s"
            f"   ratio {result['ratio'][label]:.3f}{goal},"
            f" {result['ratio_to_one_thread'][label]:.3f} to the 1-thread loop"
        )
    if cluster is not None:
        pools = [b for b in result["service_seconds"] if b != DASK]
        against = ", ".join(
            f"{result['ratio'][DASK] / result['ratio'][b]:.3f}x the {b} pool" for b in pools
        )
        lines.append(
            f"  cluster: {against}; started in {cluster['start_seconds']:.1f} s, first "
            f"(untimed) request {result['first_request_seconds'][DASK]:.1f} s, "
            f"scheduler says {cluster['status']}"
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
    p.add_argument(
        "--dask",
        action="store_true",
        help="Also time the service on a distributed.LocalCluster (needs the dask extra).",
    )
    p.add_argument(
        "--dask-workers",
        type=int,
        default=2,
        help="Worker processes (one thread each) of that cluster (default 2).",
    )
    p.add_argument("--output", type=Path, help="Also write the results as JSON here.")
    args = p.parse_args(argv)
    if args.dask and args.dask_workers < 1:
        p.error("--dask-workers must be at least 1")
    result = run(
        n_samples=args.n_samples,
        n_features=args.n_features,
        max_k=args.max_k,
        repeats=args.repeats,
        backends=args.backends,
        dask_workers=args.dask_workers if args.dask else 0,
    )
    print(format_table(result))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
