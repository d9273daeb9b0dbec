"""Jobs: long work started, waited for a bounded time, followed, listed and cancelled.

Every request that starts work (a fit, a model selection, a comparison) goes through
``Jobs.start`` with a ``Waiting`` that says how its client wants to be answered:

- ``Waiting.now()`` (``"wait": true``): the work runs in the request and the answer
  is the result, however long it takes. No job exists. Given the event its request
  sets when the client goes away (``until``), the work stops at its next step then,
  and stores nothing: nobody would receive it, and it holds a fit slot.
- ``Waiting.later()`` (``"wait": false``, ``Prefer: respond-async``): a job on the
  job pool, answered 202 at once.
- ``Waiting.within(s)`` (the default, ``GMM_SYNC_WAIT_SECONDS`` or ``Prefer: wait=N``):
  the work starts now as a job and the request waits up to ``s`` seconds for it. If it
  ends in time the answer is the full result, as ``now`` gives it; if not, 202 and the
  job, which goes on running whether or not the client stays.

With an ``Idempotency`` (the ``Idempotency-Key`` header), the key is claimed in the
catalogue, with the job's id, before the work starts: a retry with the same key and
request answers that job (the route turns a finished one into its result) instead
of starting another, and the same key with another request is a 422. Such work always
runs as a job (``now`` waits for it without bound), so that a retry finds it.

``now`` and ``within`` hold one of the fit slots (``GMM_MAX_CONCURRENT_FITS``) for
the whole work, from before it starts until it ends: a request that finds none free
waits in their bounded queue, and is answered 429 when that is full.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from service.domain.jobs.manager import JobContext, JobManager, public
from service.domain.records import Page, jsonable
from service.domain.runtime.executor import FitSlots
from service.errors import ArtifactIntegrityError, InvalidInput, NotFound, from_problem
from service.ids import check_job_id, new_job_id
from service.schemas.jobs import Job
from service.store.base import JobStore

log = logging.getLogger("service.jobs")


def _checked(job: dict[str, Any]) -> dict[str, Any]:
    """The job if its record is a job resource: a record edited behind the service's
    back (``"progress": "x"``) is damage, answered as a damaged artifact is."""
    try:
        Job.model_validate(job)
    except ValidationError:
        raise ArtifactIntegrityError(
            f"The record of job {job.get('id')} is damaged and was not served."
        ) from None
    return job


@dataclass(frozen=True)
class Idempotency:
    """A request's ``Idempotency-Key``: ``scope`` says whose and on which route,
    ``fingerprint`` is the sha256 of the request's canonical JSON."""

    scope: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class Waiting:
    """How long a request waits for the work it starts (see the module's docstring),
    and the idempotency key it was sent with."""

    mode: Literal["now", "later", "within"]
    seconds: float | None = 0.0
    idempotency: Idempotency | None = None
    #: Set when the client waiting ``now`` has gone away (``until``).
    gone: threading.Event | None = None

    def keyed(self, idempotency: Idempotency | None) -> Waiting:
        return dataclasses.replace(self, idempotency=idempotency)

    def until(self, gone: threading.Event) -> Waiting:
        """Work run ``now`` stops when ``gone`` is set; other modes ignore it, as their
        work is a job that goes on (and is listed) without its client."""
        return dataclasses.replace(self, gone=gone)

    @classmethod
    def now(cls) -> Waiting:
        return cls("now")

    @classmethod
    def later(cls) -> Waiting:
        return cls("later")

    @classmethod
    def within(cls, seconds: float | None) -> Waiting:
        """Wait up to ``seconds`` for the job; None waits without bound."""
        return cls("within", None if seconds is None else max(0.0, seconds))


#: ``("done", answer)``: the work ended in time; ``("job", job)``: it goes on as a job.
Started = tuple[Literal["done", "job"], dict[str, Any]]

#: Work as requests start it: given its job's context (None when it runs in the
#: request), returns the job record's fields plus ``"answer"``, the full result.
RequestWork = Callable[[JobContext | None], dict[str, Any]]


class Jobs:
    """The job pool, the fit slots, and the records of jobs in the store."""

    def __init__(
        self,
        store: JobStore,
        *,
        slots: FitSlots,
        workers: int,
        persist_interval: float = 0.5,
        stale_seconds: float = 60.0,
        retention_seconds: float = 7 * 86400.0,
        idempotency_seconds: float = 86400.0,
        queue_length: int = 64,
    ) -> None:
        self._store = store
        self._slots = slots
        #: How long an ``Idempotency-Key`` is remembered.
        self.idempotency_seconds = idempotency_seconds
        self._manager = JobManager(
            store,
            workers=workers,
            immediate_workers=slots.size,
            persist_interval=persist_interval,
            stale_seconds=stale_seconds,
            retention_seconds=retention_seconds,
            queue_length=queue_length,
        )

    def close(self) -> None:
        self._manager.close()

    def fitting(self) -> contextlib.AbstractContextManager[None]:
        """Hold one fit slot for a whole request, however many fits it runs."""
        return self._slots.hold()

    def start(
        self,
        kind: str,
        work: RequestWork,
        *,
        waiting: Waiting,
        total: int,
        unit: str,
        request: dict[str, Any] | None = None,
    ) -> Started:
        """Run ``work`` as ``waiting`` says; see the module's docstring."""
        job_id = new_job_id()
        if waiting.idempotency is not None:
            earlier = self._claim(waiting.idempotency, job_id)
            if earlier is not None:
                return self._replay(earlier)
            if waiting.mode == "now":
                waiting = Waiting.within(None)
        if waiting.mode == "now":
            ctx = None if waiting.gone is None else JobContext.of_request(waiting.gone)
            with self.fitting():
                return "done", work(ctx)["answer"]
        if waiting.mode == "later":
            return "job", self._submit(
                kind, work, total=total, unit=unit, request=request, job_id=job_id
            )
        self._slots.acquire()
        job = self._submit(
            kind,
            work,
            total=total,
            unit=unit,
            request=request,
            immediate=True,
            on_done=self._slots.release,
            job_id=job_id,
        )
        done, answer = self._manager.wait(job["id"], waiting.seconds)
        if done:
            return "done", answer
        return "job", self.get(job["id"])

    def _submit(
        self,
        kind: str,
        work: RequestWork,
        *,
        total: int,
        unit: str,
        request: dict[str, Any] | None,
        immediate: bool = False,
        on_done: Callable[[], None] | None = None,
        job_id: str,
    ) -> dict[str, Any]:
        def run(ctx: JobContext) -> dict[str, Any]:
            outcome = work(ctx)
            answer = outcome.pop("answer", None)
            # The record is JSON (numpy arrays to lists, non-finite numbers to null);
            # the answer stays as the response layer serialises it.
            return {**jsonable(outcome), "answer": answer}

        job = self._manager.submit(
            kind,
            run,
            total=total,
            unit=unit,
            job_id=job_id,
            request=request,
            immediate=immediate,
            waited=immediate,
            on_done=on_done,
        )
        return public(job)

    @staticmethod
    def _replay(job: dict[str, Any]) -> Started:
        """The answer to a retry of the request that started ``job``: its result once
        it ended (a fit's is the caller's to compute from the stored model), else the
        job, as the first request was answered."""
        if job["status"] == "failed" and job.get("error"):
            raise from_problem(job["error"])
        if job["status"] == "succeeded" and job["kind"] != "fit":
            return "done", job["result"]
        return "job", job

    def _claim(self, idempotency: Idempotency, job_id: str) -> dict[str, Any] | None:
        """Claim the key for ``job_id``; None when it is ours, else the job of the
        request that claimed it first (``InvalidInput`` when that request differs)."""
        row = self._store.claim_key(
            idempotency.scope,
            idempotency.key,
            request_sha256=idempotency.fingerprint,
            resource="job",
            resource_id=job_id,
            ttl_seconds=self.idempotency_seconds,
        )
        if row["resource_id"] == job_id:
            return None
        if row["request_sha256"] != idempotency.fingerprint:
            raise InvalidInput.at(
                ["header", "Idempotency-Key"],
                "This Idempotency-Key was used with another request body; a retry must "
                "send the same body, or another key for another request.",
                "idempotency_key_reused",
            )
        try:
            return self.get(row["resource_id"])
        except NotFound:
            raise InvalidInput.at(
                ["header", "Idempotency-Key"],
                "The job this Idempotency-Key started has been deleted; send a new key.",
                "idempotency_key_spent",
            ) from None

    def get(self, job_id: str) -> dict[str, Any]:
        return _checked(public(self._manager.get(check_job_id(job_id))))

    def list(self, *, limit: int, cursor: str | None) -> Page:
        """A page of jobs without their results (a comparison's may weigh megabytes);
        a damaged record is skipped loudly, and reading it by id answers the problem."""
        items, next_cursor = self._manager.list(limit=limit, cursor=cursor)
        summaries = []
        for job in items:
            try:
                summary = _checked(public(job))
            except ArtifactIntegrityError as exc:
                log.error("listing skipped a damaged job: %s", exc.detail)
                continue
            summary.pop("result", None)
            summaries.append(summary)
        return {
            "items": summaries,
            "next_cursor": next_cursor,
            "total": self._store.count_jobs(),
        }

    def delete(self, job_id: str) -> None:
        """Cancel the job if it still runs, and remove its record."""
        self._manager.delete(check_job_id(job_id))

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask a job to stop: a queued one never starts, a running fit stops at its next
        step; nothing is stored either way. A finished job is answered unchanged."""
        return public(self._manager.cancel(check_job_id(job_id)))

    def recover(self) -> int:
        """At start: mark jobs whose process died (crash, restart) ``failed``; jobs of
        other live worker processes are left alone. Answers how many were marked."""
        return self._manager.recover()
