"""JobManager: states, progress, cancel and recovery, on an in-memory job store."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from service.domain.jobs.manager import JobContext, JobManager, public
from service.domain.training.progress import fit_tracked
from service.errors import InvalidInput, NotFound


class MemoryJobs:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def add_job(self, job: dict[str, Any]) -> None:
        with self.lock:
            self.jobs[job["id"]] = dict(job)

    def put_job(self, job: dict[str, Any]) -> dict[str, Any] | None:
        with self.lock:
            if job["id"] not in self.jobs:
                return None
            if self.jobs[job["id"]].get("cancel_requested"):
                job = {**job, "cancel_requested": True}
            self.jobs[job["id"]] = dict(job)
            return dict(job)

    def delete_job(self, job_id: str) -> None:
        with self.lock:
            if self.jobs.pop(job_id, None) is None:
                raise NotFound(f"No job with id {job_id!r}.")

    def get_job(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            if job_id not in self.jobs:
                raise NotFound(f"No job with id {job_id!r}.")
            return dict(self.jobs[job_id])

    def list_jobs(self, *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], None]:
        with self.lock:
            return [dict(j) for j in sorted(self.jobs.values(), key=lambda j: j["id"])], None

    def count_jobs(self) -> int:
        with self.lock:
            return len(self.jobs)

    def settle_jobs(self, statuses: tuple[str, ...], settle: Any) -> int:
        changed = 0
        with self.lock:
            for job_id, job in list(self.jobs.items()):
                if job.get("status") in statuses and (new := settle(dict(job))) is not None:
                    self.jobs[job_id] = new
                    changed += 1
        return changed


def _wait(manager: JobManager, job_id: str, status: set[str], timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = manager.get(job_id)
        if job["status"] in status:
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} never reached {status}: {manager.get(job_id)}")


X, _ = make_blobs(n_samples=2000, n_features=2, centers=4, random_state=10)


def _fit_work(max_iter: int, started: threading.Event | None = None) -> Any:
    def work(ctx: JobContext) -> dict[str, Any]:
        est = GaussianMixture(4, max_iter=max_iter, tol=0, random_state=0)
        progress = ctx.progress(max_iter, "iterations")
        if started is not None:
            started.set()
        fit_tracked(est, X, progress)
        return {"result": {"lower_bound": float(est.lower_bound_)}}

    return work


@pytest.fixture
def manager() -> Any:
    m = JobManager(MemoryJobs(), workers=1, persist_interval=0.01)
    yield m
    m.close()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_succeeds_with_progress_and_result(manager: JobManager) -> None:
    job = manager.submit("fit", _fit_work(20), total=20, unit="iterations", job_id="a")
    assert job["status"] == "queued"
    done = _wait(manager, "a", {"succeeded"})
    expected = GaussianMixture(4, max_iter=20, tol=0, random_state=0).fit(X).lower_bound_
    assert done["result"] == {"lower_bound": float(expected)}
    assert done["progress"]["fraction"] == 1.0
    assert done["started_at"] and done["finished_at"]
    assert manager.store.get_job("a")["status"] == "succeeded"


def test_failure_carries_the_problem(manager: JobManager) -> None:
    def work(ctx: JobContext) -> dict[str, Any]:
        raise InvalidInput.at(["body", "params"], "bad")

    manager.submit("fit", work, total=1, unit="iterations", job_id="b")
    job = _wait(manager, "b", {"failed"})
    assert job["error"]["status"] == 422
    assert job["error"]["errors"][0]["loc"] == ["body", "params"]


def test_cancel_running_and_queued(manager: JobManager) -> None:
    started = threading.Event()
    manager.submit("fit", _fit_work(100_000, started), total=100_000, unit="iterations", job_id="c")
    manager.submit("fit", _fit_work(10), total=10, unit="iterations", job_id="d")  # queued
    assert started.wait(10)
    seen = _wait(manager, "c", {"running"})
    deadline = time.monotonic() + 10
    while seen["progress"]["done"] == 0 and time.monotonic() < deadline:
        seen = manager.get("c")
    assert 0 < seen["progress"]["fraction"] < 1
    manager.cancel("d")
    manager.cancel("c")
    assert _wait(manager, "c", {"cancelled", "failed", "succeeded"})["status"] == "cancelled"
    assert _wait(manager, "d", {"cancelled", "failed", "succeeded"})["status"] == "cancelled"
    assert manager.get("d")["started_at"] is None


def test_cancel_through_the_store_reaches_the_running_job(manager: JobManager) -> None:
    started = threading.Event()
    manager.submit("fit", _fit_work(100_000, started), total=100_000, unit="iterations", job_id="e")
    assert started.wait(10)
    # Another worker process only sees the store: it marks the job there.
    other = JobManager(manager.store, workers=1, persist_interval=0.01)
    try:
        other.cancel("e")
    finally:
        other.close()
    assert _wait(manager, "e", {"cancelled", "failed", "succeeded"})["status"] == "cancelled"


def test_recover_fails_jobs_of_dead_owners() -> None:
    store = MemoryJobs()
    store.add_job({"id": "f", "status": "running", "owner": "1-dead", "progress": {}})
    store.add_job({"id": "g", "status": "succeeded", "owner": "1-dead"})
    store.add_job({"id": "h", "status": "queued", "owner": "2-alive"})
    m = JobManager(store, workers=1)
    try:
        assert m.recover(lambda job: job["owner"] == "2-alive") == 1
    finally:
        m.close()
    assert store.get_job("f")["status"] == "failed"
    assert "stopped" in store.get_job("f")["error"]["detail"]
    assert store.get_job("g")["status"] == "succeeded"
    assert store.get_job("h")["status"] == "queued"


def _stamp(seconds_ago: float) -> str:
    import datetime as dt

    then = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)
    return then.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_jobs_of_another_host_are_judged_by_their_heartbeat() -> None:
    """Replicas on other machines share the store: their pids mean nothing here."""
    store = MemoryJobs()
    for job_id, age in (("fresh", 5.0), ("stale", 300.0)):
        store.add_job(
            {
                "id": job_id,
                "status": "running",
                "owner": "other-host/1-abcd",  # pid 1 runs here too, and is not it
                "heartbeat_at": _stamp(age),
                "progress": {},
            }
        )
    m = JobManager(store, workers=1, stale_seconds=60)
    try:
        assert m.recover() == 1
    finally:
        m.close()
    assert store.get_job("fresh")["status"] == "running"
    assert store.get_job("stale")["status"] == "failed"


def test_reading_a_job_whose_owner_stopped_beating_fails_it() -> None:
    store = MemoryJobs()
    store.add_job({"id": "q", "status": "queued", "owner": "h/9-x", "heartbeat_at": _stamp(120.0)})
    store.add_job({"id": "r", "status": "running", "owner": "h/9-y", "heartbeat_at": _stamp(1)})
    m = JobManager(store, workers=1, stale_seconds=60)
    try:
        job = m.get("q")
        assert job["status"] == "failed" and "stopped" in job["error"]["detail"]
        assert store.get_job("q")["status"] == "failed"
        assert m.get("r")["status"] == "running"
    finally:
        m.close()


def test_a_running_job_keeps_its_heartbeat_fresh() -> None:
    store = MemoryJobs()
    m = JobManager(store, workers=1, stale_seconds=0.4)  # a beat every 0.1 s
    release = threading.Event()

    def work(ctx: JobContext) -> dict[str, Any]:
        release.wait(10)
        return {"result": {}}

    try:
        m.submit("fit", work, total=1, unit="steps", job_id="b")
        first = store.get_job("b")["heartbeat_at"]
        time.sleep(1.0)
        later = store.get_job("b")
        assert later["heartbeat_at"] > first  # ISO stamps sort as times
        # Another manager reading it (a replica) sees a live job, not an orphan.
        other = JobManager(store, workers=1, stale_seconds=0.4)
        try:
            assert other.get("b")["status"] in ("queued", "running")
        finally:
            other.close()
    finally:
        release.set()
        m.close()
    assert "heartbeat_at" not in public(store.get_job("b"))


class _SlowRunningWrites(MemoryJobs):
    """A store whose first write of a ``running`` record (once ``hold`` is set) waits
    for ``release``: another writer's write, taken later, can come first."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = threading.Event()
        self.release = threading.Event()
        self.held = threading.Event()

    def put_job(self, job: dict[str, Any]) -> dict[str, Any] | None:
        if self.hold.is_set() and job["status"] == "running" and not self.held.is_set():
            self.held.set()
            self.release.wait(10)
        return super().put_job(job)


def test_a_write_taken_earlier_never_lands_over_a_later_one() -> None:
    """The heartbeat thread snapshots a running job and writes it; meanwhile the job
    ends and its last write says ``succeeded``. Writes of one job land in the order
    their snapshots were taken: the record ends ``succeeded``, not ``running`` again
    (which nobody would ever correct: the job has left memory, and reads go to the
    store; a client then saw the job succeed and its result refused as running)."""
    store = _SlowRunningWrites()
    m = JobManager(store, workers=1, persist_interval=60.0)  # no progress writes between
    go = threading.Event()

    def work(ctx: JobContext) -> dict[str, Any]:
        go.wait(10)
        return {"result": {"ok": True}}

    try:
        m.submit("select", work, total=1, unit="cells", job_id="w")
        _wait(m, "w", {"running"})
        store.hold.set()
        beat = threading.Thread(target=m._update, args=("w",))  # what the heartbeat does
        beat.start()
        assert store.held.wait(10)  # its snapshot (running) is taken; its write waits
        go.set()  # the job ends, and writes succeeded (or waits its turn)
        time.sleep(0.3)
        store.release.set()
        beat.join(10)
        _wait(m, "w", {"succeeded"})
        deadline = time.monotonic() + 10
        while "w" in m._live and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.get_job("w")["status"] == "succeeded"
        assert m.get("w")["status"] == "succeeded"
    finally:
        store.release.set()
        go.set()
        m.close()


class _SlowAdds(MemoryJobs):
    """A store whose ``add_job`` waits for ``release`` (a write lock held elsewhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.adding = threading.Event()
        self.release = threading.Event()

    def add_job(self, job: dict[str, Any]) -> None:
        self.adding.set()
        self.release.wait(10)
        super().add_job(job)


def test_a_heartbeat_while_the_job_is_being_recorded_does_not_cancel_it() -> None:
    """A job is in memory a moment before its record is written (its place in the queue
    is taken first). A heartbeat in between found no record, took the job for deleted,
    and cancelled it: the client saw its fit end ``cancelled``, asked by nobody. The
    heartbeat now waits for the record."""
    store = _SlowAdds()
    m = JobManager(store, workers=1, persist_interval=60.0)
    submitted: list[dict[str, Any]] = []

    def work(ctx: JobContext) -> dict[str, Any]:
        ctx.check()
        return {"result": {"ok": True}}

    try:
        submitter = threading.Thread(
            target=lambda: submitted.append(
                m.submit("fit", work, total=1, unit="inits", job_id="h")
            )
        )
        submitter.start()
        assert store.adding.wait(10)  # in memory, its record not yet written
        beat = threading.Thread(target=m._update, args=("h",))  # what the heartbeat does
        beat.start()
        time.sleep(0.2)
        store.release.set()
        submitter.join(10)
        beat.join(10)
        assert _wait(m, "h", {"succeeded", "cancelled", "failed"})["status"] == "succeeded"
    finally:
        store.release.set()
        m.close()
