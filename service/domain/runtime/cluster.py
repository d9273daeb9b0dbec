"""Fits on a Dask ``distributed`` cluster (``GMM_DASK_SCHEDULER``) instead of this process.

``DaskCluster`` holds the one ``distributed.Client`` of a service process. It is made
on first use, from a worker thread, never at start-up: a scheduler that is down when
the service starts (or restarts later) costs the fits that need it a clear 503, not
the service its predictions. A client whose connection was lost is replaced on the
next use.

``DaskFitRunner`` is the service's ``FitRunner`` when a scheduler is configured: each
fit (a ``POST /v1/models``, a job, every model-selection cell, every comparison item)
is one task, ``estimators.fit`` on a worker, so that a sweep fans out over the
cluster's threads. The points go to the cluster once per array and request (the
cells of one grid share them) as a task of their own rather than ``scatter``ed
data, so that when the worker holding them dies the scheduler can make them again.
Nothing about the numbers changes: the worker runs the very code the local runner
runs.

Progress and cancel cross the network through two small scheduler-side objects named
after the task: the worker publishes its ``FitProgress`` snapshots in a
``distributed.Variable`` (at most every ``PROGRESS_INTERVAL_SECONDS``), and asks a
``distributed.Event`` whether to stop at each EM iteration (at most as often). The
service polls the first into the job's progress and sets the second when the job is
cancelled or its time limit passes, then forgets the future; the worker's fit stops
at its next step and its CPU is free.

Losing a worker. The scheduler reruns a task whose worker died on another one, up to
its ``allowed-failures``; past that the future raises ``KilledWorker``, which becomes
a clear 503. When no worker is left at all, the task would wait forever, so a fit
that has had no worker for ``no_worker_seconds`` is given up with the same kind of
error. A job therefore ends (succeeded after a retry, or failed with the reason); it
never stays ``running``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from service.domain.training import estimators
from service.domain.training.progress import FitCancelled, FitProgress
from service.errors import FitTimeout, ServiceError

if TYPE_CHECKING:
    from distributed import Client, Future

#: How often a worker publishes a fit's progress and asks whether to stop (at most).
PROGRESS_INTERVAL_SECONDS = 0.25
#: How often the service looks at a running task (its progress, cancel, workers).
POLL_SECONDS = 0.1
#: How often the service asks the scheduler how many workers it has, while it waits.
WORKERS_POLL_SECONDS = 1.0
#: Points up to this size are copied to every worker before a fit starts (``_spread``).
REPLICATE_BYTES = 64 * 2**20
#: How long copying them may take before the fits start without it.
SPREAD_SECONDS = 30.0
#: How long connecting to the scheduler may take before the fit is refused.
CONNECT_SECONDS = 10.0


class ClusterUnavailable(ServiceError):
    """The Dask scheduler cannot be reached, or has no worker to run the fit."""

    status = 503
    slug = "cluster-unavailable"
    title = "Dask cluster unavailable"


class DaskCluster:
    """The service process's connection to one scheduler, made and remade on demand."""

    def __init__(self, address: str, *, connect_seconds: float = CONNECT_SECONDS) -> None:
        self.address = address
        self._connect_seconds = connect_seconds
        self._client: Client | None = None
        self._lock = threading.Lock()

    def client(self) -> Client:
        """A connected client; ``ClusterUnavailable`` when the scheduler does not answer.

        Must not be called on the event loop: connecting blocks.
        """
        with self._lock:
            client = self._client
            if client is not None and client.status == "running":
                return client
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close(timeout=2)
                self._client = None
            try:
                from distributed import Client
            except ImportError as exc:  # pragma: no cover - the dask extra is missing
                raise ClusterUnavailable(
                    "GMM_DASK_SCHEDULER is set but dask.distributed is not installed: "
                    "install the service with its `dask` extra."
                ) from exc
            import dask

            # The points of a fit travel inside its graph (see ``_points``): a large
            # array is expected here, not a mistake to warn about.
            dask.config.set({"distributed.admin.large-graph-warning-threshold": "64GB"})
            try:
                client = Client(
                    self.address,
                    timeout=self._connect_seconds,
                    set_as_default=False,
                    name=f"gmm-service-{secrets.token_hex(3)}",
                )
            except Exception as exc:
                raise ClusterUnavailable(
                    f"The Dask scheduler at {self.address} (GMM_DASK_SCHEDULER) did not "
                    f"answer: {exc}. Fits cannot run until it is back."
                ) from None
            self._client = client
            return client

    def status(self) -> dict[str, Any]:
        """``{"scheduler", "workers", "threads"}`` as the scheduler reports them now."""
        info = self.client().scheduler_info(n_workers=-1)
        workers = info.get("workers", {})
        return {
            "scheduler": self.address,
            "workers": len(workers),
            "threads": sum(int(w.get("nthreads", 1)) for w in workers.values()),
        }

    def threads(self) -> int:
        """Worker threads in the cluster now (at least 1): how many fits run at once."""
        try:
            return max(1, int(self.status()["threads"]))
        except ServiceError:
            return 1

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=5)


def _points(X: np.ndarray) -> np.ndarray:
    """A task whose result is the points it was given: unlike scattered data, the
    scheduler can make it again on another worker when the one holding it dies."""
    return X


def _released(key: str) -> bool:
    """Whether the scheduler let go of this worker's task ``key``: its future was
    cancelled, or the client holding it went away (a service process killed mid-fit).
    The thread running it is not stopped by dask; the fit asks this at each step."""
    try:
        from distributed import get_worker

        task = get_worker().state.tasks.get(key)
    except Exception:  # not on a worker (tests calling the task directly)
        return False
    return task is None or task.state in ("cancelled", "released", "forgotten")


def _remote_fit(
    algorithm: str,
    params: dict[str, Any],
    X: np.ndarray,
    sample_weight: np.ndarray | None,
    name: str,
    tracked: bool,
) -> tuple[str, Any]:
    """The task: ``estimators.fit`` on a worker, answering ``("ok", Fitted)`` or the
    error as ``("error", (class, detail, errors))`` (the process runner's protocol).

    Every fit asks, at most every ``PROGRESS_INTERVAL_SECONDS`` of its steps, whether
    to stop: when its task was released (``_released``) or, if ``tracked``, when the
    service set its cancel ``Event``; a ``tracked`` fit also publishes its progress.
    Asking changes no number (``progress.fit_tracked``)."""
    from distributed import Event, Variable

    stop = Event(f"{name}-cancel") if tracked else None
    published = Variable(f"{name}-progress") if tracked else None
    asked = [0.0]

    def should_stop() -> bool:
        now = time.monotonic()
        if now - asked[0] < PROGRESS_INTERVAL_SECONDS:
            return False
        asked[0] = now
        if _released(name):
            return True  # nobody waits for it any more (its service process died)
        if stop is None or not stop.is_set():
            return False
        stop.clear()  # seen: the scheduler forgets it
        return True

    progress = FitProgress(
        1,
        "steps",
        on_change=None if published is None else (lambda p: published.set(p.snapshot())),
        should_stop=should_stop,
        interval=PROGRESS_INTERVAL_SECONDS,
    )
    try:
        fitted = estimators.fit(algorithm, params, X, progress, sample_weight=sample_weight)
        return "ok", fitted
    except FitCancelled as exc:
        return "error", (FitCancelled, exc.detail, None)
    except ServiceError as exc:
        return "error", (type(exc), exc.detail, exc.errors)
    except Exception as exc:  # a bug or a broken worker: report it, do not hang
        return "error", (ServiceError, f"The fit failed on a Dask worker: {exc!r}.", None)


@dataclass
class _SharedPoints:
    """Points on the cluster that concurrent fits share (``DaskFitRunner``)."""

    X: np.ndarray
    future: Future | None = None
    #: Set once the first user has sent them (or failed to).
    sent: threading.Event = field(default_factory=threading.Event)
    users: int = 0


class _SchedulerCancelled(Exception):
    """The scheduler cancelled a fit's future that this process never cancelled: seen
    when a worker is killed while the task's inputs move between workers. distributed
    then raises ``FutureCancelledError`` (or, through its issue 8514,
    ``UnboundLocalError``). The fit itself never failed, so it is submitted once more."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


#: What ``Future.result`` raises for a future the scheduler cancelled (see above).
_CANCELLED = (concurrent.futures.CancelledError, asyncio.CancelledError, UnboundLocalError)


class DaskFitRunner:
    """``FitRunner`` whose fits are tasks on the cluster (see the module docstring)."""

    isolated = True

    def __init__(
        self,
        cluster: DaskCluster,
        *,
        timeout: float | None = None,
        no_worker_seconds: float = 30.0,
    ) -> None:
        self.cluster = cluster
        self._timeout = timeout
        self._no_worker_seconds = no_worker_seconds
        self._lock = threading.Lock()
        self._shared: dict[int, _SharedPoints] = {}  # by id(X)

    @property
    def parallelism(self) -> int:
        """Fits worth running at once: one per worker thread of the cluster."""
        return self.cluster.threads()

    def __call__(
        self,
        algorithm: str,
        params: dict[str, Any],
        X: np.ndarray,
        progress: FitProgress | None = None,
        *,
        sample_weight: np.ndarray | None = None,
    ) -> Any:
        client = self.cluster.client()
        name = f"gmm-fit-{secrets.token_hex(8)}"
        with self._shared_points(client, X) as data:
            try:
                return self._run(client, name, data, algorithm, params, sample_weight, progress)
            except _SchedulerCancelled:
                # Once more, as a new task with its own progress and cancel objects.
                try:
                    again = f"{name}-again"
                    return self._run(
                        client, again, data, algorithm, params, sample_weight, progress
                    )
                except _SchedulerCancelled as exc:
                    raise self._lost(exc.cause) from None

    @contextlib.contextmanager
    def _shared_points(self, client: Client, X: np.ndarray) -> Iterator[Future]:
        """``X`` on the cluster (a ``_points`` task), sent once however many fits use it
        at a time (the cells of a grid). The entry holds ``X`` itself while in use, so
        its ``id`` cannot be taken by another array meanwhile; the last user releases
        it."""
        key = id(X)
        with self._lock:
            entry = self._shared.get(key)
            sender = entry is None
            if entry is None:
                entry = self._shared[key] = _SharedPoints(X)
            entry.users += 1
        try:
            if sender:
                try:
                    entry.future = client.submit(
                        _points, np.asarray(X), key=f"gmm-points-{secrets.token_hex(8)}"
                    )
                    self._spread(client, entry.future, X.nbytes)
                except Exception as exc:
                    raise ClusterUnavailable(f"Could not send the fit to Dask: {exc}.") from None
                finally:
                    entry.sent.set()
            entry.sent.wait()
            if entry.future is None:
                raise ClusterUnavailable("Could not send the points to the Dask cluster.")
            yield entry.future
        finally:
            with self._lock:
                entry.users -= 1
                if entry.users == 0:
                    del self._shared[key]

    @staticmethod
    def _spread(client: Client, points: Future, nbytes: int) -> None:
        """Copy small points to every worker before the fits start.

        The scheduler puts a task where its inputs are, so the cells of a grid piled up
        on the one worker that held the points (bench/model_selection.py --dask: 59-100%
        of the work on one of two workers). A copy on each worker lets it spread them;
        it also outlives the loss of any one worker. Large points are left to travel
        on demand.
        """
        if nbytes > REPLICATE_BYTES:
            return
        with contextlib.suppress(Exception):  # an optimisation: a fit works without it
            if len(client.scheduler_info(n_workers=-1).get("workers", {})) < 2:
                return  # nothing to spread over (and with no worker, nothing to wait for)
            # Waits for the points, then copies them; bounded, as a worker may be lost.
            client.replicate([points], callback_timeout=SPREAD_SECONDS)

    def _run(
        self,
        client: Client,
        name: str,
        data: Any,
        algorithm: str,
        params: dict[str, Any],
        sample_weight: np.ndarray | None,
        progress: FitProgress | None,
    ) -> Any:
        try:
            future = client.submit(
                _remote_fit,
                algorithm,
                params,
                data,
                sample_weight,
                name,
                progress is not None,
                key=name,
                pure=False,
                retries=0,
            )
        except Exception as exc:
            raise ClusterUnavailable(f"Could not send the fit to Dask: {exc}.") from None
        with self._cleanup(client, name, future):
            status, payload = self._wait(client, name, future, progress)
        if status == "ok":
            return payload
        cls, detail, errors = payload
        raise cls(detail, errors=errors)

    @contextlib.contextmanager
    def _cleanup(self, client: Client, name: str, future: Future) -> Iterator[None]:
        """Whatever happens, stop the task (if it still runs) and drop its objects."""
        finished = False
        try:
            yield
            finished = True
        finally:
            if not finished:
                self._signal_stop(client, name)
                with contextlib.suppress(Exception):
                    future.cancel()
            with contextlib.suppress(Exception):
                from distributed import Variable

                Variable(f"{name}-progress", client=client).delete()
            future.release()

    @staticmethod
    def _signal_stop(client: Client, name: str) -> None:
        with contextlib.suppress(Exception):
            from distributed import Event

            Event(f"{name}-cancel", client=client).set()

    def _wait(
        self, client: Client, name: str, future: Future, progress: FitProgress | None
    ) -> tuple[str, Any]:
        from distributed import TimeoutError as DaskTimeout
        from distributed import Variable

        published = Variable(f"{name}-progress", client=client) if progress else None
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        workerless_since: float | None = None
        checked = 0.0
        last_snapshot: Any = None
        while True:
            try:
                result: tuple[str, Any] = future.result(timeout=POLL_SECONDS)
                return result
            except (DaskTimeout, TimeoutError):
                pass
            except (Exception, asyncio.CancelledError) as exc:  # KilledWorker, lost scheduler
                if isinstance(exc, _CANCELLED):
                    raise _SchedulerCancelled(exc) from None
                raise self._lost(exc) from None
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise FitTimeout(
                    f"The fit took longer than {self._timeout:g} s "
                    "(GMM_FIT_TIMEOUT_SECONDS) and was stopped; nothing was stored. "
                    "Reduce the data, max_iter or n_init."
                )
            if progress is not None:
                progress.check()  # FitCancelled: _cleanup tells the worker to stop
                with contextlib.suppress(Exception):
                    snapshot = published.get(timeout=POLL_SECONDS) if published else None
                    if snapshot is not None and snapshot != last_snapshot:
                        last_snapshot = snapshot
                        progress.replay(snapshot)
            if now - checked >= WORKERS_POLL_SECONDS:
                checked = now
                workerless_since = self._check_workers(client, workerless_since, now)

    def _check_workers(self, client: Client, since: float | None, now: float) -> float | None:
        """Give up on a fit that has had no worker to run on for ``no_worker_seconds``."""
        try:
            workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        except Exception:
            workers = 0
        if workers:
            return None
        since = now if since is None else since
        if now - since >= self._no_worker_seconds:
            raise ClusterUnavailable(
                f"The Dask cluster at {self.cluster.address} has had no worker for "
                f"{self._no_worker_seconds:g} s; the fit was given up and nothing was "
                "stored. Start workers and submit it again."
            )
        return since

    def _lost(self, exc: BaseException) -> ServiceError:
        kind = type(exc).__name__
        if kind == "KilledWorker":
            return ClusterUnavailable(
                "The Dask workers running this fit died, each time it was retried "
                f"({exc}); nothing was stored. The fit may need more memory than a "
                "worker has."
            )
        return ClusterUnavailable(
            f"The fit was lost on the Dask cluster at {self.cluster.address} ({kind}: "
            f"{exc}); nothing was stored. Submit it again."
        )

    def close(self) -> None:
        self.cluster.close()
