"""Where fits run: in the calling thread, or in killable worker processes.

A thread cannot be stopped, so a time limit needs processes: with
``GMM_FIT_TIMEOUT_SECONDS`` set, each fit is sent to one of a few warm worker
processes; a fit that overruns has its process killed (nothing is stored, the CPU is
freed) and a fresh worker takes its place. Processes also keep a crash in native
code away from the server. Without a limit, fits run in the request's thread.

A fit given a ``FitProgress`` reports its steps and can be cancelled wherever it
runs: in a thread the tracked estimator stops at its next step; in a worker process
the worker sends ``("progress", snapshot)`` messages while it fits, the caller
replays them into its ``FitProgress`` (whose ``should_stop`` it asks at each one and
every ``CANCEL_POLL_SECONDS`` in between) and kills the worker when the job was
cancelled: the CPU is freed at once and nothing is stored.

Why this pool and not pebble's ``ProcessPool`` (which also kills a task's worker on its
timeout or cancel): ``bench/fit_pool.py`` measures this pool against the smallest pebble
replacement that keeps its behaviours (swapped in, it passed tests/domain/test_executor.py
and the worker-process job test). On 2 cores at load average 6 to 7, three runs: per
small fit (k-means, 200 x 2), 0.4 to 0.55 ms over the same fit inline here, 1.1 to 1.5
ms with pebble; the first fit of a 6-worker pool (4 slots + 2 job workers, the default)
1.4 to 1.9 s here, where one worker starts, 7 to 12 s with pebble, which starts all six
at once (about 1 GB of RSS); a 1 s limit raises after 1.02 s here, 1.06 to 1.13 s with
pebble. Nor is pebble smaller (about 20 lines fewer): its workers can send nothing
before their result, so progress needs a second channel, a queue shared by every worker,
which a worker killed while writing to it leaves locked for all the others; and it has
no limit on a worker's start-up. Fixing both costs what it saved. Here each worker has
its own pipe, progress and answer arrive in order on it, and a kill is one SIGKILL in
the caller's thread (pebble sends SIGTERM and waits up to 3 s, in its one manager thread).

``FitSlots`` bounds fitting requests per server process. A request that finds every
slot busy waits its turn in a bounded queue; only when the queue is full, or its
wait passes a limit, is it answered 429 with ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any, Protocol

import numpy as np

from service.domain.training import estimators
from service.domain.training.progress import FitProgress
from service.errors import Busy, FitTimeout, ServiceError

#: How long a fresh worker may take to import numpy and scikit-learn.
STARTUP_SECONDS = 120.0
#: How often a caller waiting on a worker asks whether its job was cancelled.
CANCEL_POLL_SECONDS = 0.1
#: How often a worker sends its progress back (at most).
PROGRESS_INTERVAL_SECONDS = 0.1


class FitRunner(Protocol):
    #: True when fits run apart from the caller (worker processes with a time limit):
    #: then every fit, even one inside a joblib pool, must be handed to the runner.
    isolated: bool

    def __call__(
        self,
        algorithm: str,
        params: dict[str, Any],
        X: np.ndarray,
        progress: FitProgress | None = None,
        *,
        sample_weight: np.ndarray | None = None,
    ) -> Any: ...

    def close(self) -> None: ...


class InlineFitRunner:
    """Fit in the calling thread (FastAPI's threadpool): no isolation, no time limit."""

    isolated = False

    def __call__(
        self,
        algorithm: str,
        params: dict[str, Any],
        X: np.ndarray,
        progress: FitProgress | None = None,
        *,
        sample_weight: np.ndarray | None = None,
    ) -> Any:
        return estimators.fit(algorithm, params, X, progress, sample_weight=sample_weight)

    def close(self) -> None:
        pass


def _worker_main(conn: Connection) -> None:
    """Worker process loop: receive (algorithm, params, X, sample_weight, tracked),
    answer the fit or the error; a tracked fit also sends ``("progress", snapshot)``
    while it runs."""
    conn.send(("ready", None))  # imports are done: the time limit starts after this
    while True:
        try:
            algorithm, params, X, sample_weight, tracked = conn.recv()
        except EOFError:
            return
        progress = None
        if tracked:
            # The caller decides about cancelling (it kills this process): here the
            # progress only reports.
            progress = FitProgress(
                1,
                "steps",
                on_change=lambda p: conn.send(("progress", p.snapshot())),
                interval=PROGRESS_INTERVAL_SECONDS,
            )
        try:
            fitted = estimators.fit(algorithm, params, X, progress, sample_weight=sample_weight)
            conn.send(("ok", fitted))
        except ServiceError as exc:
            conn.send(("error", (type(exc), exc.detail, exc.errors)))
        except Exception as exc:  # a bug: report it rather than die silently
            conn.send(("error", (ServiceError, f"fit failed in worker: {exc!r}", None)))


class _Worker:
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.ready = False

    def wait_ready(self, timeout: float) -> None:
        """Block until the fresh process has imported sklearn, so startup is not fit time."""
        if self.ready:
            return
        if not self.conn.poll(timeout):
            raise ServiceError("A fit worker process did not start in time.")
        self.conn.recv()
        self.ready = True

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class ProcessFitRunner:
    """Warm worker processes; a fit past ``timeout`` seconds is killed with its process."""

    isolated = True

    def __init__(self, size: int, timeout: float) -> None:
        self._ctx = mp.get_context("spawn")
        self._timeout = timeout
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._all: set[_Worker] = set()
        self._closed = False
        self._idle.put(self._spawn())  # one warm worker before the first request

    def _spawn(self) -> _Worker:
        worker = _Worker(self._ctx)
        with self._lock:
            self._all.add(worker)
        return worker

    def _take(self) -> _Worker:
        try:
            worker = self._idle.get_nowait()
            if worker.process.is_alive():
                return worker
            worker.kill()
            with self._lock:
                self._all.discard(worker)
        except queue.Empty:
            pass
        return self._spawn()

    def __call__(
        self,
        algorithm: str,
        params: dict[str, Any],
        X: np.ndarray,
        progress: FitProgress | None = None,
        *,
        sample_weight: np.ndarray | None = None,
    ) -> Any:
        with self._slots:
            worker = self._take()
            healthy = False
            try:
                worker.wait_ready(STARTUP_SECONDS)
                worker.conn.send((algorithm, params, X, sample_weight, progress is not None))
                status, payload = self._answer(worker.conn, progress)
                healthy = True
            except (EOFError, BrokenPipeError, ConnectionResetError, OSError) as exc:
                raise ServiceError(f"The fit worker process died: {exc!r}.") from exc
            finally:
                if healthy and not self._closed:
                    self._idle.put(worker)
                else:
                    worker.kill()
                    with self._lock:
                        self._all.discard(worker)
        if status == "ok":
            return payload
        cls, detail, errors = payload
        raise cls(detail, errors=errors)

    def _answer(self, conn: Connection, progress: FitProgress | None) -> tuple[str, Any]:
        """The worker's final message, replaying its progress into ``progress`` meanwhile.

        ``FitTimeout`` past the time limit, ``FitCancelled`` when ``progress`` says stop;
        either way the caller kills the worker, which stops its fit for good.
        """
        deadline = time.monotonic() + self._timeout
        while True:
            left = deadline - time.monotonic()
            wait = left if progress is None else min(left, CANCEL_POLL_SECONDS)
            if left <= 0 or not conn.poll(max(wait, 0)):
                if time.monotonic() >= deadline:
                    raise FitTimeout(
                        f"The fit took longer than {self._timeout:g} s "
                        "(GMM_FIT_TIMEOUT_SECONDS) and was stopped; nothing was stored. "
                        "Reduce the data, max_iter or n_init."
                    )
                if progress is not None:
                    progress.check()
                continue
            status, payload = conn.recv()
            if status != "progress":
                return status, payload
            if progress is not None:
                progress.replay(payload)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.kill()


class FitSlots:
    """At most ``size`` fitting requests at once, and at most ``queue_length`` waiting.

    A request that finds every slot busy waits (first come, first served) for up to
    ``queue_seconds``; it is answered ``Busy`` (429 with ``Retry-After``) only when the
    queue is already full or its wait ran out. Waiting holds a server thread, which is
    why the queue is bounded: past it, a client is better told to come back.
    """

    def __init__(
        self, size: int, *, queue_length: int = 0, queue_seconds: float = 0.0, retry_after: int = 2
    ) -> None:
        self._size = size
        self._queue_length = queue_length
        self._queue_seconds = queue_seconds
        self._retry_after = retry_after
        self._cond = threading.Condition()
        self._running = 0
        self._waiting: list[object] = []  # tickets, oldest first

    @property
    def size(self) -> int:
        return self._size

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def _busy(self, why: str, retry_after: int) -> Busy:
        return Busy(
            f"{self._size} fits are already running (GMM_MAX_CONCURRENT_FITS) and {why}; "
            f"retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

    def acquire(self) -> None:
        with self._cond:
            if self._running < self._size and not self._waiting:
                self._running += 1
                return
            if len(self._waiting) >= self._queue_length:
                raise self._busy(
                    f"{len(self._waiting)} more are waiting (GMM_FIT_QUEUE_LENGTH)",
                    self._retry_after,
                )
            ticket = object()
            self._waiting.append(ticket)
            deadline = time.monotonic() + self._queue_seconds
            try:
                while self._running >= self._size or self._waiting[0] is not ticket:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise self._busy(
                            f"this request waited {self._queue_seconds:g} s for its turn "
                            "(GMM_FIT_QUEUE_SECONDS)",
                            max(self._retry_after, math.ceil(self._queue_seconds / 2)),
                        )
                    self._cond.wait(left)
                self._running += 1
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()  # the next in line may now be first

    def release(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


def make_runner(max_concurrent: int, timeout: float | None, cluster: Any = None) -> FitRunner:
    """Where fits run: a Dask cluster when one is given (``cluster.DaskCluster``), else
    killable worker processes with a time limit, else the calling thread."""
    if cluster is not None:
        from service.domain.runtime.cluster import DaskFitRunner

        return DaskFitRunner(cluster, timeout=timeout)
    if timeout is None:
        return InlineFitRunner()
    return ProcessFitRunner(max_concurrent, timeout)
