"""The killable fit pool (service/domain/runtime/executor.py) against pebble's ProcessPool.

    pip install pebble  # not a dependency of the service: only this comparison needs it
    .venv/bin/python bench/fit_pool.py
    .venv/bin/python bench/fit_pool.py --repeats 500 --size 6

``PebbleFitRunner`` below is the smallest replacement of ``ProcessFitRunner`` over
pebble that keeps its behaviours (swapped in, it passed tests/domain/test_executor.py
and the worker-process case of tests/test_jobs_server.py): pebble's ``timeout`` kills
a fit's worker, ``future.cancel()`` kills a cancelled job's, and progress, which
pebble cannot send back before the result, goes through one queue shared by the
workers (given to each as it starts) to the waiting call.

Figures, each runner of ``--size`` workers (4 fit slots + 2 job workers by default):

- the first fit, pool start included, and the worker processes and their RSS after it;
- per fit, the overhead over the same fit in this thread (``InlineFitRunner``): a
  small k-means (200 x 2, 3 clusters, one init), runners interleaved fit by fit so that
  background load falls on all alike, the median of the paired differences; without
  and with progress (a job's fit);
- a fit that overruns a 1 s time limit: seconds until the call raises ``FitTimeout``.

BLAS and OpenMP run one thread (set before numpy loads): a tiny fit then measures the
pool, not thread start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing as mp
import os
import queue
import statistics
import threading
import time
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from service.domain.runtime.executor import (  # noqa: E402
    CANCEL_POLL_SECONDS,
    PROGRESS_INTERVAL_SECONDS,
    InlineFitRunner,
    ProcessFitRunner,
)
from service.domain.training import estimators  # noqa: E402
from service.domain.training.progress import FitProgress  # noqa: E402
from service.errors import FitTimeout, ServiceError  # noqa: E402

SMALL_X = np.random.RandomState(0).normal(size=(200, 2))
SMALL = {"n_clusters": 3, "n_init": 1, "random_state": 0}
LONG_X = np.random.RandomState(0).normal(size=(20_000, 10))
LONG = {"n_components": 20, "n_init": 20, "max_iter": 1000, "tol": 0.0, "random_state": 0}

_steps: Any = None  # in a pebble worker: where a tracked fit sends its progress


def _pebble_init(steps: Any) -> None:
    global _steps
    _steps = steps


def _pebble_fit(key: int | None, algorithm: str, params: dict[str, Any], X: np.ndarray) -> Any:
    progress = None
    if key is not None:
        progress = FitProgress(
            1,
            "steps",
            on_change=lambda p: _steps.put((key, p.snapshot())),
            interval=PROGRESS_INTERVAL_SECONDS,
        )
    try:
        return "ok", estimators.fit(algorithm, params, X, progress)
    except ServiceError as exc:  # its keyword arguments do not survive pickling
        return "error", (type(exc), exc.detail, exc.errors)


class PebbleFitRunner:
    isolated = True

    def __init__(self, size: int, timeout: float) -> None:
        import pebble

        ctx = mp.get_context("spawn")
        self._timeout = timeout
        self._steps = ctx.Queue()
        self._inboxes: dict[int, queue.SimpleQueue[dict[str, Any]]] = {}
        self._keys = itertools.count()
        self._pool = pebble.ProcessPool(
            size, initializer=_pebble_init, initargs=(self._steps,), context=ctx
        )
        threading.Thread(target=self._sort_steps, daemon=True).start()

    def _sort_steps(self) -> None:
        while True:
            try:
                key, snapshot = self._steps.get()
            except (EOFError, OSError, ValueError):
                return
            inbox = self._inboxes.get(key)
            if inbox is not None:
                inbox.put(snapshot)

    def __call__(
        self, algorithm: str, params: dict[str, Any], X: np.ndarray, progress: Any = None
    ) -> Any:
        key = None if progress is None else next(self._keys)
        inbox: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        if key is not None:
            self._inboxes[key] = inbox
        future = self._pool.schedule(
            _pebble_fit, (key, algorithm, params, X), timeout=self._timeout
        )
        try:
            while True:
                try:
                    status, payload = future.result(
                        timeout=None if progress is None else CANCEL_POLL_SECONDS
                    )
                    break
                except TimeoutError:
                    if future.done():  # pebble's time limit: it killed the worker
                        raise FitTimeout("past the time limit") from None
                with contextlib.suppress(queue.Empty):
                    while True:
                        progress.replay(inbox.get_nowait())
                progress.check()
        except BaseException:
            future.cancel()  # kills the worker if the fit is running
            raise
        finally:
            if key is not None:
                del self._inboxes[key]
        if status == "ok":
            return payload
        cls, detail, errors = payload
        raise cls(detail, errors=errors)

    def close(self) -> None:
        self._pool.stop()
        self._pool.join()
        self._steps.close()


def _workers() -> tuple[int, float]:
    """This process's worker processes and their RSS in MB (multiprocessing's
    resource tracker, also a child, left out)."""
    count, rss = 0, 0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "resource_tracker" not in " ".join(child.cmdline()):
                count += 1
                rss += child.memory_info().rss
    return count, rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200, help="fits per figure")
    parser.add_argument("--size", type=int, default=6, help="worker processes per pool")
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")

    runners: dict[str, Any] = {"inline": InlineFitRunner()}
    for name, make in (("hand-written", ProcessFitRunner), ("pebble", PebbleFitRunner)):
        before = _workers()[0]
        t0 = time.perf_counter()
        runners[name] = make(args.size, 60.0)
        runners[name]("kmeans", SMALL, SMALL_X)
        first = time.perf_counter() - t0
        time.sleep(1.0)  # workers that start with the pool have imported what they will
        count, rss = _workers()
        print(
            f"{name:13s} first fit, pool start included: {first * 1000:5.0f} ms; then "
            f"{count - before} worker processes, {rss:.0f} MB RSS in all workers so far"
        )

    for tracked in (False, True):
        times: dict[str, list[float]] = {name: [] for name in runners}
        for i in range(args.repeats + 5):  # 5 untimed rounds first
            for name, runner in runners.items():
                progress = FitProgress(1, "steps") if tracked else None
                t0 = time.perf_counter()
                runner("kmeans", SMALL, SMALL_X, progress)
                if i >= 5:
                    times[name].append((time.perf_counter() - t0) * 1000)
        for name in ("hand-written", "pebble"):
            paired = [a - b for a, b in zip(times[name], times["inline"], strict=True)]
            print(
                f"{name:13s} {'with' if tracked else 'without'} progress: fit "
                f"{statistics.median(times[name]):.2f} ms (inline "
                f"{statistics.median(times['inline']):.2f} ms), overhead "
                f"{statistics.median(paired):.2f} ms"
            )

    for name, make in (("hand-written", ProcessFitRunner), ("pebble", PebbleFitRunner)):
        runners[name].close()
        runner = make(1, 1.0)
        runner("kmeans", SMALL, SMALL_X)  # a warm worker: the limit is the fit's own
        t0 = time.perf_counter()
        with contextlib.suppress(FitTimeout):
            runner("gaussian_mixture", LONG, LONG_X)
        print(f"{name:13s} 1 s time limit: FitTimeout after {time.perf_counter() - t0:.2f} s")
        runner.close()
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
