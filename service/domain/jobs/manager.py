"""Long work as jobs: queued, run on a bounded pool, followed, cancelled, persisted.

A job is a plain dict (the job resource of the HTTP contract) kept in the store, so
that every worker process sees it and it survives a restart. The process that
accepted a job runs it on its own pool of ``workers`` threads and keeps the live
copy in memory; the stored copy is refreshed at every change of status and, while
running, at most every ``persist_interval`` seconds with the progress.

Cancelling sets ``cancel_requested`` in the store. The running fit asks at each
step (each EM iteration) whether its job was cancelled: in memory when the cancel
came through this process, from the store (at most every ``persist_interval``
seconds) when it came through another one. It then stops and stores nothing.

A process that dies takes its running jobs with it. At start, a store whose jobs say
``queued`` or ``running`` but whose owner process is gone marks them ``failed`` with
the reason, so that no job is ever left ``running`` for good. The owner is
``<host>/<pid>-<random token>``. On this host, another live worker process
(``GMM_WORKERS>1``) keeps its jobs, while a job that names this very pid with another
token was left by an earlier life of a recycled pid (PID 1 in every container start),
so it is marked. A pid means nothing on another host (replicas sharing an S3 store):
there the owner writes ``heartbeat_at`` into its unfinished jobs every
``stale_seconds / 4``, and a job whose heartbeat is older than ``stale_seconds`` is
marked, at start; and any process reading a job whose heartbeat is that old (its
owner on any host stopped refreshing it) marks it then. A process shutting down in order marks its
unfinished jobs ``failed`` itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from service.domain.records import expires_after, now
from service.domain.training.progress import DETAIL, FitCancelled, FitProgress
from service.errors import Busy, NotFound, ServiceError
from service.store.base import JobStore

log = logging.getLogger("service.jobs")

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
UNFINISHED = ("queued", "running")
#: Seconds a client refused for a full job queue is told to wait.
_RETRY_AFTER = 5
#: Fields kept in the store for the service's own use, not shown to clients.
INTERNAL = frozenset({"owner", "heartbeat_at"})
#: This machine, as owners name it (a container's hostname is its id).
HOST = socket.gethostname().replace("/", "_")


def public(job: dict[str, Any]) -> dict[str, Any]:
    """The job resource as clients see it."""
    return {k: v for k, v in job.items() if k not in INTERNAL}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def owner_alive(owner: str, mine: str) -> bool:
    """Whether the process that took a job (``<host>/<pid>-<token>``, on this host) may
    still be running it.

    Yes for this manager and for any other live pid (another uvicorn worker); no for a
    dead pid, and no for this process's own pid under another token (an earlier life
    of a recycled pid, or a manager of this process that was closed). Owners written
    before hosts were named (``<pid>-<token>``) are taken to be of this host.
    """
    if owner == mine:
        return True
    pid_text = owner.rpartition("/")[2].partition("-")[0]
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid != os.getpid() and _pid_alive(pid)


def owner_host(owner: str) -> str:
    host, sep, _ = owner.rpartition("/")
    return host if sep else HOST


def _age_seconds(stamp: str | None) -> float:
    if not stamp:
        return math.inf
    try:
        then = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return math.inf
    return (dt.datetime.now(dt.UTC) - then).total_seconds()


def job_alive(job: dict[str, Any], mine: str, stale_seconds: float) -> bool:
    """Whether an unfinished job's owner may still be running it: by pid on this host
    (``owner_alive``), by its heartbeat on another."""
    owner = str(job.get("owner", ""))
    if owner_host(owner) == HOST:
        return owner_alive(owner, mine)
    return _age_seconds(job.get("heartbeat_at") or job.get("created_at")) < stale_seconds


def _orphaned(job: dict[str, Any], retention_seconds: float) -> dict[str, Any]:
    """The job as ``failed``: the process running it stopped."""
    return {
        **job,
        "status": "failed",
        "finished_at": now(),
        "expires_at": expires_after(retention_seconds),
        "error": _interrupted(
            job["status"], "The service process running this job stopped (crash or restart)"
        ),
    }


def _interrupted(status: str, why: str) -> dict[str, Any]:
    return {
        "type": ServiceError("").type,
        "title": "Interrupted",
        "status": 500,
        "detail": f"{why} while the job was {status}; nothing was stored. Submit it again.",
    }


@dataclass
class _Waiter:
    """A request waiting a bounded time for its job: the job's full answer (or the error
    it failed with) is handed to it in memory, and dropped if it stopped waiting."""

    done: threading.Event
    answer: Any = None
    error: BaseException | None = None
    abandoned: bool = False


def problem_of(exc: BaseException) -> dict[str, Any]:
    """The problem object a failed job carries, as the HTTP error would have been."""
    if isinstance(exc, ServiceError):
        problem: dict[str, Any] = {
            "type": exc.type,
            "title": exc.title,
            "status": exc.status,
            "detail": exc.detail,
        }
        if exc.errors:
            problem["errors"] = exc.errors
        return problem
    return {
        "type": ServiceError("").type,
        "title": ServiceError.title,
        "status": 500,
        "detail": f"The job failed unexpectedly: {type(exc).__name__}.",
    }


class JobContext:
    """What running work sees of whoever waits for it: a progress counter that also
    carries cancel. A job's reports its progress to the job and stops when the job is
    cancelled (``of_job``); work run inside its request (``"wait": true``) reports
    nowhere and stops when the request's client goes away (``of_request``), since
    nobody would receive what it stores."""

    def __init__(
        self,
        should_stop: Callable[[], bool],
        report: Callable[[FitProgress], None] | None = None,
        interval: float = 0.25,
    ) -> None:
        self._should_stop = should_stop
        self._report = report
        self._interval = interval

    @classmethod
    def of_job(cls, manager: JobManager, job_id: str) -> JobContext:
        return cls(
            lambda: manager.cancel_requested(job_id),
            lambda p: manager._report(job_id, p.snapshot()),
            manager.persist_interval,
        )

    @classmethod
    def of_request(cls, gone: threading.Event) -> JobContext:
        return cls(gone.is_set)

    def progress(self, total: int, unit: str) -> FitProgress:
        return FitProgress(
            total,
            unit,
            on_change=self._report,
            should_stop=self._should_stop,
            interval=self._interval,
        )

    def stopper(self) -> FitProgress:
        """A progress that only carries cancel: for a fit inside a larger job (a grid
        cell), whose own steps are not the job's unit but must stop when it is
        cancelled."""
        return FitProgress(1, "steps", should_stop=self._should_stop)

    def check(self) -> None:
        """Stop here if the job was cancelled (between cells of a grid, say)."""
        if self._should_stop():
            raise FitCancelled("The job was cancelled; nothing was stored.")


#: Work a job runs: given its context, returns ``{"model_id": ...}`` and/or
#: ``{"result": ...}`` for the record, and may add ``"answer"``: what a request waiting
#: for the job receives, kept in memory only.
Work = Callable[[JobContext], dict[str, Any]]


class JobManager:
    """Runs jobs on ``workers`` threads; the pool bounds how many run at once.

    Jobs submitted ``immediate`` run on a second pool of ``immediate_workers`` threads
    instead: work a request already holds a fit slot for (bounded waiting), which must
    start now rather than queue behind other jobs; the slots bound how many there are.
    """

    def __init__(
        self,
        store: JobStore,
        *,
        workers: int,
        immediate_workers: int = 1,
        persist_interval: float = 0.5,
        stale_seconds: float = 60.0,
        retention_seconds: float = 7 * 86400.0,
        queue_length: int = 64,
    ) -> None:
        self.store = store
        #: Most jobs of the pool waiting for a worker (``GMM_JOB_QUEUE_LENGTH``).
        self.queue_length = queue_length
        #: How long a finished job's record is kept (its ``expires_at``).
        self.retention_seconds = retention_seconds
        self.persist_interval = persist_interval
        self.stale_seconds = stale_seconds
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gmm-job")
        self._immediate = ThreadPoolExecutor(
            max_workers=max(immediate_workers, 1), thread_name_prefix="gmm-job-now"
        )
        self._waiters: dict[str, _Waiter] = {}
        self._live: dict[str, dict[str, Any]] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._checked: dict[str, float] = {}
        #: One lock per live job, held from a snapshot of its record to the end of the
        #: snapshot's write: the progress, heartbeat and final writes of a job land in
        #: the order their snapshots were taken. (Without it the heartbeat's snapshot of a
        #: running job could land after the job's last write, and the record said
        #: ``running`` for good once the job had left memory.)
        self._writing: dict[str, threading.Lock] = {}
        #: Jobs deleted while they still run here (until they stop): never served again.
        self._deleted: set[str] = set()
        self._lock = threading.Lock()
        self._owner = f"{HOST}/{os.getpid()}-{secrets.token_hex(4)}"
        self._closing = False
        self._stop_heartbeat = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="gmm-job-heartbeat", daemon=True)
        self._heartbeat.start()

    @property
    def owner(self) -> str:
        """``<host>/<pid>-<token>``: written into every job this manager runs."""
        return self._owner

    # -- lifecycle ----------------------------------------------------------------
    def recover(self, is_alive: Callable[[dict[str, Any]], bool] | None = None) -> int:
        """Mark jobs left ``queued``/``running`` by dead processes as ``failed``
        (``is_alive(job)``; by default ``job_alive``). Only unfinished jobs are read,
        and each by one replica (``settle_jobs``)."""

        def settle(job: dict[str, Any]) -> dict[str, Any] | None:
            alive = is_alive(job) if is_alive else job_alive(job, self._owner, self.stale_seconds)
            return None if alive else _orphaned(job, self.retention_seconds)

        return self.store.settle_jobs(UNFINISHED, settle)

    def _beat(self) -> None:
        """Refresh ``heartbeat_at`` of this manager's unfinished jobs, so that replicas
        on other hosts can tell them from orphans."""
        while not self._stop_heartbeat.wait(self.stale_seconds / 4):
            with self._lock:
                live = list(self._live)
            for job_id in live:
                try:
                    self._update(job_id)
                except Exception:  # a store hiccup: the next beat tries again
                    log.warning("could not refresh job %s", job_id, exc_info=True)

    def close(self) -> None:
        """Stop running jobs at their next step and mark every unfinished one ``failed``
        (the service is going away; a client's cancel is not what happened)."""
        with self._lock:
            self._closing = True
            for event in self._cancel.values():
                event.set()
        self._stop_heartbeat.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._immediate.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            left = list(self._live)
        for job_id in left:  # queued jobs the pool dropped
            with self._lock:
                status = self._live[job_id]["status"]
            self._finish(
                job_id, status="failed", error=_interrupted(status, "The service shut down")
            )

    # -- submit, read, cancel -----------------------------------------------------
    def submit(
        self,
        kind: str,
        work: Work,
        *,
        total: int,
        unit: str,
        job_id: str,
        request: dict[str, Any] | None = None,
        immediate: bool = False,
        waited: bool = False,
        on_done: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Queue ``work``; answers the job resource as accepted.

        ``waited``: a request will ``wait`` for it, and takes its answer in memory.
        ``on_done`` runs when the job ends, however it ends (a fit slot's release).
        ``Busy`` (429 with ``Retry-After``) when ``queue_length`` jobs already wait for
        the pool: each holds its request until it runs.
        """
        job: dict[str, Any] = {
            "id": job_id,
            "kind": kind,
            "status": "queued",
            "progress": {"fraction": 0.0, "done": 0, "total": max(total, 1), "unit": unit},
            "error": None,
            "model_id": None,
            "result": None,
            "created_at": now(),
            "started_at": None,
            "finished_at": None,
            "owner": self._owner,
            "heartbeat_at": now(),
        }
        if request is not None:
            job["request"] = request
        with self._lock:
            if not immediate:
                queued = sum(1 for j in self._live.values() if j["status"] == "queued")
                if queued >= self.queue_length:
                    raise Busy(
                        f"{queued} jobs are already waiting for a worker "
                        f"(GMM_JOB_QUEUE_LENGTH); retry in {_RETRY_AFTER} s.",
                        headers={"Retry-After": str(_RETRY_AFTER)},
                    )
            self._live[job_id] = job
            self._cancel[job_id] = threading.Event()
            # Held until the record is written: a heartbeat in between would find no
            # record, take the job for deleted and cancel it.
            writing = threading.Lock()
            writing.acquire()
            self._writing[job_id] = writing
            # Its record was just written here: a cancel through another process is read
            # from the store from one persist_interval on, not before its first step.
            self._checked[job_id] = time.monotonic()
            if waited:
                self._waiters[job_id] = _Waiter(threading.Event())
        accepted = dict(job)  # as accepted: the pool may start it at once
        try:
            try:
                self.store.add_job(job)
            finally:
                writing.release()
            pool = self._immediate if immediate else self._pool
            pool.submit(self._run, job_id, work, on_done)
        except BaseException:
            with self._lock:
                self._live.pop(job_id, None)
                self._cancel.pop(job_id, None)
                self._writing.pop(job_id, None)
                self._waiters.pop(job_id, None)
            if on_done is not None:
                on_done()
            raise
        return accepted

    def wait(self, job_id: str, timeout: float | None) -> tuple[bool, Any]:
        """Wait up to ``timeout`` seconds (None: without bound) for a job submitted
        ``waited``: ``(True, answer)`` when it succeeded in time; ``(False, None)`` when
        it is still going (the job goes on, and its answer will be dropped) or was
        cancelled. A job that failed in time raises what it failed with, as the same
        work done in the request would have."""
        with self._lock:
            waiter = self._waiters[job_id]
        waiter.done.wait(timeout)
        with self._lock:
            if not waiter.done.is_set():
                waiter.abandoned = True
                return False, None
            self._waiters.pop(job_id, None)
        if waiter.error is not None:
            raise waiter.error
        return waiter.answer is not None, waiter.answer

    def get(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            if job_id in self._deleted:
                raise NotFound(f"No job with id {job_id!r}.")
            live = self._live.get(job_id)
            if live is not None:
                return dict(live)
        job = self.store.get_job(job_id)
        if job["status"] not in TERMINAL and not self._heartbeat_fresh(job):
            # Its owner (any process, any host) stopped refreshing it: it died.
            job = _orphaned(job, self.retention_seconds)
            self.store.put_job(job)
        return job

    def _heartbeat_fresh(self, job: dict[str, Any]) -> bool:
        return _age_seconds(job.get("heartbeat_at") or job.get("created_at")) < self.stale_seconds

    def list(self, *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        items, next_cursor = self.store.list_jobs(limit=limit, cursor=cursor)
        with self._lock:
            items = [dict(self._live.get(item["id"], item)) for item in items]
        return items, next_cursor

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask a job to stop. Queued jobs never start; running ones stop at their next
        step. A finished job is left as it is (its resource says how it ended)."""
        with self._lock:
            event = self._cancel.get(job_id)
            live = self._live.get(job_id)
            if event is not None and live is not None:
                event.set()
                queued = live["status"] == "queued"
                if live["status"] in ("queued", "running"):
                    live["cancel_requested"] = True
                if queued:  # it never starts: say so now, not when a worker frees up
                    live["status"] = "cancelled"
                answer = dict(live)
        if event is not None and live is not None:
            if queued:
                self._finish(job_id)
                answer["finished_at"] = live["finished_at"]
            return answer
        job = self.store.get_job(job_id)
        if job["status"] not in TERMINAL:
            job["cancel_requested"] = True
            self.store.put_job(job)
        return job

    def delete(self, job_id: str) -> None:
        """Cancel the job if it still runs, then remove its record (``NotFound`` when
        there is none). A running job finds its record gone at its next write and
        stops without writing it back."""
        with contextlib.suppress(NotFound):
            self.cancel(job_id)
        with self._lock:
            if job_id in self._live:  # running here: its live copy is not served again
                self._deleted.add(job_id)
        self.store.delete_job(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            event = self._cancel.get(job_id)
            if event is not None and event.is_set():
                return True
            last = self._checked.get(job_id, 0.0)
            now = time.monotonic()
            if now - last < self.persist_interval:
                return False
            self._checked[job_id] = now
        try:  # a cancel that came through another worker process
            stored = self.store.get_job(job_id)
        except NotFound:
            log.warning("job %s: its record is gone (deleted); it stops", job_id)
            return True
        except ServiceError:
            return False
        if stored.get("cancel_requested"):
            if event is not None:
                event.set()
            return True
        return False

    # -- running ------------------------------------------------------------------
    def _update(self, job_id: str, **changes: Any) -> None:
        writing = self._writing.get(job_id)
        if writing is None:
            return  # already finished
        with writing:
            self._apply(job_id, changes)

    def _apply(self, job_id: str, changes: dict[str, Any]) -> None:
        """``_update`` under the job's write lock."""
        with self._lock:
            job = self._live.get(job_id)
            if job is None:
                return  # already finished
            job.update(changes, heartbeat_at=now())
            snapshot = dict(job)
        # The store keeps a cancel that reached it through another process, and says
        # so; a deleted record is not written back, and the job stops.
        stored = self.store.put_job(snapshot)
        if stored is None:
            log.warning("job %s: its record is gone (deleted); it stops", job_id)
        if stored is None or stored.get("cancel_requested"):
            with self._lock:
                event = self._cancel.get(job_id)
                live = self._live.get(job_id)
                if stored is not None and live is not None:
                    live["cancel_requested"] = True
            if event is not None:
                event.set()

    def _report(self, job_id: str, snapshot: dict[str, Any]) -> None:
        progress = {k: snapshot[k] for k in ("fraction", "done", "total", "unit")}
        bound = snapshot.get("lower_bound")
        if bound is not None and math.isfinite(bound):
            progress["lower_bound"] = float(bound)
        # Where a fit is (its init, stage, iteration, change against tol): what is known.
        progress.update({k: v for k in DETAIL if (v := snapshot.get(k)) is not None})
        self._update(job_id, progress=progress)

    def _run(self, job_id: str, work: Work, on_done: Callable[[], None] | None = None) -> None:
        answer: Any = None
        error: BaseException | None = None
        try:
            answer, error = self._run_work(job_id, work)
        finally:
            if on_done is not None:
                on_done()
            self._hand_over(job_id, answer, error)

    def _hand_over(self, job_id: str, answer: Any, error: BaseException | None) -> None:
        """Give the waiting request the job's answer or error, unless it stopped waiting."""
        with self._lock:
            waiter = self._waiters.get(job_id)
            if waiter is None:
                return
            if waiter.abandoned:
                del self._waiters[job_id]
                return
            waiter.answer, waiter.error = answer, error
            waiter.done.set()

    def _run_work(self, job_id: str, work: Work) -> tuple[Any, BaseException | None]:
        """Run the job to its end; answers its in-memory answer and what it failed with."""
        with self._lock:
            live = self._live.get(job_id)
            if live is None or live["status"] != "queued":
                return None, None  # cancelled while it waited
            live.update(status="running", started_at=now())
        try:
            if self.cancel_requested(job_id):
                raise FitCancelled("The job was cancelled before it started.")
            self._update(job_id)
            outcome = work(JobContext.of_job(self, job_id))
        except FitCancelled:
            with self._lock:
                shut_down = self._closing and not self._live[job_id].get("cancel_requested")
            if shut_down:
                error = _interrupted("running", "The service shut down")
                self._finish(job_id, status="failed", error=error)
            else:
                self._finish(job_id, status="cancelled")
            return None, None
        except Exception as exc:  # every failure becomes the job's problem object
            if not isinstance(exc, ServiceError):
                log.exception("job %s failed", job_id)
            self._finish(job_id, status="failed", error=problem_of(exc))
            return None, exc
        answer = outcome.pop("answer", None)
        with self._lock:
            progress = dict(self._live[job_id]["progress"])
        progress.update(fraction=1.0, done=progress["total"])
        if "stage" in progress:
            progress["stage"] = "finished"
        self._finish(job_id, status="succeeded", progress=progress, **outcome)
        return answer, None

    def _finish(self, job_id: str, **changes: Any) -> None:
        expires_at = expires_after(self.retention_seconds)
        writing = self._writing.get(job_id)
        if writing is None:
            return  # finished already
        with writing:  # the last write: none lands after it, and the job leaves memory
            self._apply(job_id, {"finished_at": now(), "expires_at": expires_at, **changes})
            with self._lock:
                self._live.pop(job_id, None)
                self._cancel.pop(job_id, None)
                self._checked.pop(job_id, None)
                self._writing.pop(job_id, None)
                self._deleted.discard(job_id)
