"""Out-of-core EM: seconds per iteration on a 2-worker LocalCluster, and peak memory.

    .venv/bin/python bench/dask_em.py                       # 2,000,000 x 8, 1GB/worker
    .venv/bin/python bench/dask_em.py --rows 200000 --chunk-rows 25000

The data are a k-blob mixture generated chunk by chunk with ``dask.array.random``, so
the array never exists in one piece, not even here. By default it is persisted on
the workers (spread over them; ``--no-persist`` regenerates it every iteration, as
data read from files would be). Each EM iteration's wall time comes from the
``FitProgress`` hook, so it excludes start-up; workers' RSS is sampled with
``client.run`` every 0.2 s during the fit. The reference is sklearn's
``GaussianMixture`` on an in-memory slice (``--sklearn-rows``) from the same start,
its time per iteration scaled linearly to ``--rows``; it runs in this process with
every BLAS thread, while the cluster has 2 single-threaded workers.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import psutil
from distributed import Client, LocalCluster
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from service.domain.outofcore.em import fit_gaussian_mixture_dask
from service.domain.training.progress import FitProgress


def _add_centers(z: np.ndarray, labels: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return z + centers[labels[:, 0]]


def make_data(rows: int, features: int, k: int, chunk_rows: int, seed: int = 0) -> da.Array:
    """A (rows, features) mixture of ``k`` unit blobs, chunks of ``chunk_rows`` rows."""
    rng = da.random.default_rng(seed)
    z = rng.standard_normal((rows, features), chunks=(chunk_rows, features))
    labels = rng.integers(0, k, size=(rows, 1), chunks=(chunk_rows, 1))
    centers = np.random.default_rng(seed + 1).normal(0.0, 4.0, (k, features))
    return da.map_blocks(_add_centers, z, labels, centers=centers, dtype=np.float64)


def stored(X: da.Array, store_dir: Path | None, chunk_rows: int) -> tuple[da.Array, np.ndarray]:
    """``X`` written chunk by chunk to a ``.npy`` and stored as a dataset of a local model
    store, as ``POST /v1/datasets`` stores one; answers the dataset as the engine=dask
    fit reads it (``chunked.rows_array`` over the store's ``dataset_rows``) and a
    read-only memory map of it (for the sklearn slice)."""
    from service.domain.outofcore import chunked
    from service.store.local import LocalModelStore

    root = Path(store_dir or tempfile.mkdtemp(prefix="gmm-bench-store-"))
    staging = root / "staging.npy"
    out = np.lib.format.open_memmap(staging, mode="w+", dtype=np.float64, shape=X.shape)
    for start in range(0, X.shape[0], chunk_rows):
        out[start : start + chunk_rows] = X[start : start + chunk_rows].compute()
    out.flush()
    del out
    points = np.load(staging, mmap_mode="r")
    t0 = time.perf_counter()
    store = LocalModelStore(root / "store", secret_key="bench")
    meta, _ = store.put_dataset(points, {"name": "bench"})
    print(
        f"stored {X.shape[0]:,} x {X.shape[1]} as dataset {meta['id'][:12]}... in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    staging.unlink()
    rows = store.dataset_rows(meta["id"])
    return chunked.rows_array(rows, chunk_rows), store.load_dataset(meta["id"])


def _rss() -> int:
    return psutil.Process().memory_info().rss


class RssSampler:
    """Peak RSS per worker, sampled every ``interval`` seconds in a thread."""

    def __init__(self, client: Client, interval: float = 0.2) -> None:
        self.client, self.interval = client, interval
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for worker, rss in self.client.run(_rss).items():
                self.peak[worker] = max(self.peak.get(worker, 0), rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--chunk-rows", type=int, default=250_000)
    parser.add_argument("--memory-limit", default="1GB", help="per worker")
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--covariance-type", default="full")
    parser.add_argument("--sklearn-rows", type=int, default=200_000)
    parser.add_argument("--no-persist", action="store_true")
    parser.add_argument(
        "--source",
        choices=("generated", "store"),
        default="generated",
        help="generated: dask.array.random chunks; store: a dataset written to a local "
        "model store, read by the workers in byte ranges (the engine=dask path)",
    )
    parser.add_argument("--store-dir", type=Path, default=None, help="with --source store")
    args = parser.parse_args(argv)
    k, d = args.components, args.features
    rng = np.random.default_rng(2)
    start = {
        "weights_init": np.full(k, 1.0 / k),
        "means_init": rng.normal(0.0, 4.0, (k, d)),
        "precisions_init": {
            "full": np.stack([np.eye(d)] * k),
            "tied": np.eye(d),
            "diag": np.ones((k, d)),
            "spherical": np.ones(k),
        }[args.covariance_type],
    }
    params = dict(
        n_components=k,
        covariance_type=args.covariance_type,
        max_iter=args.iterations,
        tol=0.0,  # run every iteration
        **start,
    )
    warnings.simplefilter("ignore", ConvergenceWarning)

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=args.memory_limit,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        X = make_data(args.rows, d, k, args.chunk_rows)
        if args.source == "store":
            X, local = stored(X, args.store_dir, args.chunk_rows)
        if args.source == "generated" and not args.no_persist:
            X = X.persist()
            client.wait_for_workers(2)
            from distributed import wait

            wait(X)
        baseline = client.run(_rss)
        stamps: list[float] = []
        progress = FitProgress(
            1, "iterations", on_change=lambda p: stamps.append(time.perf_counter()), interval=0
        )
        t0 = time.perf_counter()
        with RssSampler(client) as sampler:
            fit_gaussian_mixture_dask(X, **params, progress=progress)
        total = time.perf_counter() - t0
        per_iter = (stamps[-2] - stamps[0]) / args.iterations  # advance_to(0) .. (n)
        if args.source == "store":
            sample = np.array(local[: args.sklearn_rows])
        else:
            sample = X[: args.sklearn_rows].compute()

    t1 = time.perf_counter()
    GaussianMixture(n_init=1, **params).fit(sample)
    sk_per_iter = (time.perf_counter() - t1) / args.iterations
    sk_scaled = sk_per_iter * args.rows / len(sample)
    mb = 1024**2
    out = {
        "rows": args.rows,
        "features": d,
        "components": k,
        "chunk_rows": args.chunk_rows,
        "source": args.source,
        "persisted": args.source == "generated" and not args.no_persist,
        "data_mb": args.rows * d * 8 / mb,
        "dask_seconds_per_iteration": per_iter,
        "dask_fit_seconds": total,
        "sklearn_seconds_per_iteration_scaled": sk_scaled,
        "sklearn_rows": len(sample),
        "ratio_dask_to_sklearn": per_iter / sk_scaled,
        "worker_rss_baseline_mb": {w: v / mb for w, v in baseline.items()},
        "worker_rss_peak_mb": {w: v / mb for w, v in sampler.peak.items()},
    }
    how = "read from the store" if args.source == "store" else "regenerated"
    how = "persisted" if out["persisted"] else how
    print(
        f"{args.rows:,} x {d}, k={k} {args.covariance_type}, chunks of {args.chunk_rows:,} "
        f"rows ({out['data_mb']:.0f} MB, {how})"
    )
    print(f"dask, 2 workers x 1 thread: {per_iter:.3f} s/iteration ({total:.1f} s fit)")
    print(
        f"sklearn on {len(sample):,} rows, scaled to {args.rows:,}: {sk_scaled:.3f} s/iteration"
        f" -> ratio dask/sklearn {out['ratio_dask_to_sklearn']:.2f}"
    )
    for worker, peak in out["worker_rss_peak_mb"].items():
        base = out["worker_rss_baseline_mb"].get(worker, 0.0)
        print(f"  {worker}: peak RSS {peak:.0f} MB (before the fit {base:.0f} MB)")
    return out


if __name__ == "__main__":
    main()
