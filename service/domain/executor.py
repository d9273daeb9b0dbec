"""Where fits run: in the calling thread, or in killable worker processes.

A thread cannot be stopped, so a time limit needs processes: with
``GMM_FIT_TIMEOUT_SECONDS`` set, each fit is sent to one of a few warm worker
processes; a fit that overruns has its process killed (nothing is stored, the CPU is
freed) and a fresh worker takes its place. Processes also keep a crash in native
code away from the server. Without a limit, fits run in the request's thread.

``FitSlots`` bounds fitting requests per server process: past the bound a request is
answered 429 at once instead of queueing behind work it cannot see.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any, Protocol

import numpy as np

from service.domain import estimators
from service.errors import Busy, FitTimeout, ServiceError

#: How long a fresh worker may take to import numpy and scikit-learn.
STARTUP_SECONDS = 120.0


class FitRunner(Protocol):
    #: True when fits run apart from the caller (worker processes with a time limit):
    #: then every fit, even one inside a joblib pool, must be handed to the runner.
    isolated: bool

    def __call__(self, algorithm: str, params: dict[str, Any], X: np.ndarray) -> Any: ...

    def close(self) -> None: ...


class InlineFitRunner:
    """Fit in the calling thread (FastAPI's threadpool): no isolation, no time limit."""

    isolated = False

    def __call__(self, algorithm: str, params: dict[str, Any], X: np.ndarray) -> Any:
        return estimators.fit(algorithm, params, X)

    def close(self) -> None:
        pass


def _worker_main(conn: Connection) -> None:
    """Worker process loop: receive (algorithm, params, X), answer the fit or the error."""
    conn.send(("ready", None))  # imports are done: the time limit starts after this
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", estimators.fit(*job)))
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

    def __call__(self, algorithm: str, params: dict[str, Any], X: np.ndarray) -> Any:
        with self._slots:
            worker = self._take()
            healthy = False
            try:
                worker.wait_ready(STARTUP_SECONDS)
                worker.conn.send((algorithm, params, X))
                if not worker.conn.poll(self._timeout):
                    raise FitTimeout(
                        f"The fit took longer than {self._timeout:g} s "
                        "(GMM_FIT_TIMEOUT_SECONDS) and was stopped; nothing was stored. "
                        "Reduce the data, max_iter or n_init."
                    )
                status, payload = worker.conn.recv()
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

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.kill()


class FitSlots:
    """At most ``size`` fitting requests at once; the next one gets 429 immediately."""

    def __init__(self, size: int, retry_after: int = 2) -> None:
        self._sem = threading.BoundedSemaphore(size)
        self._size = size
        self._retry_after = retry_after

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if not self._sem.acquire(blocking=False):
            raise Busy(
                f"{self._size} fits are already running (GMM_MAX_CONCURRENT_FITS); "
                f"retry in {self._retry_after} s.",
                headers={"Retry-After": str(self._retry_after)},
            )
        try:
            yield
        finally:
            self._sem.release()


def make_runner(max_concurrent: int, timeout: float | None) -> FitRunner:
    if timeout is None:
        return InlineFitRunner()
    return ProcessFitRunner(max_concurrent, timeout)
