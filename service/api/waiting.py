"""How a request that starts work wants it started: how long it waits (the body's
``wait``, else RFC 7240's ``Prefer`` header, else ``GMM_SYNC_WAIT_SECONDS``), and the
``Idempotency-Key`` that makes a retry answer the first request's work; and
``run_waiting``, which runs it and stops work waited for ``now`` when its client
goes away."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Callable
from typing import Annotated, TypeVar

import orjson
from fastapi import Header, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from service.domain.jobs.service import Idempotency, Waiting

#: Printable ASCII, as the IETF draft's examples and common clients (Stripe's) send.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description=(
            "Makes a retry safe: a request with the same key and the same body, within "
            "GMM_IDEMPOTENCY_SECONDS, answers the first request's job or result instead of "
            "starting the work again; the same key with another body is a 422. Keys are "
            "per API key and per route. 1-255 printable ASCII characters (a UUID, say)."
        ),
        examples=["9f1c0a52-7c1e-4c52-8f2e-0b1d8a3e6f10"],
    ),
]

#: The longest ``Prefer: wait=N`` honoured (the bound of ``GMM_SYNC_WAIT_SECONDS``).
MAX_PREFER_WAIT = 3600.0

PreferHeader = Annotated[
    str | None,
    Header(
        description=(
            "RFC 7240. `respond-async`: answer 202 with the job at once. `wait=N`: wait up "
            "to N seconds for the work (instead of GMM_SYNC_WAIT_SECONDS), then 202. A "
            "`wait` in the body wins over this header."
        ),
        examples=["respond-async", "wait=5"],
    ),
]


def waiting_of(wait: bool | None, prefer: str | None, default_seconds: float) -> Waiting:
    """``wait: true`` waits without bound, ``wait: false`` answers at once; unset, the
    ``Prefer`` preferences decide, and without them the default bound. Preferences a
    server does not know are ignored, as RFC 7240 asks."""
    if wait is True:
        return Waiting.now()
    if wait is False:
        return Waiting.later()
    seconds = default_seconds
    for preference in (prefer or "").split(","):
        token, _, value = preference.split(";")[0].strip().partition("=")
        token = token.strip().lower()
        if token == "respond-async":
            return Waiting.later()
        if token == "wait":
            try:
                seconds = min(float(value.strip().strip('"')), MAX_PREFER_WAIT)
            except ValueError:
                continue
    return Waiting.within(seconds)


def idempotency_of(request: Request, body: BaseModel, key: str | None) -> Idempotency | None:
    """The request's idempotency, scoped to its route and caller (a digest of the API
    key it presented, so that two clients' keys never meet), fingerprinted by the
    sha256 of its body as validated (whitespace and key order do not matter)."""
    if key is None:
        return None
    presented = "\n".join(request.headers.get(name, "") for name in ("x-api-key", "authorization"))
    caller = hashlib.sha256(presented.encode()).hexdigest()[:16]
    route = getattr(request.scope.get("route"), "path", request.url.path)
    content = body.model_dump(mode="json")
    try:
        dumped = orjson.dumps(content, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # an integer past 64 bits, which the domain refuses later with a 422
        dumped = json.dumps(content, sort_keys=True, default=str).encode()
    return Idempotency(
        scope=f"{route} {caller}",
        key=key,
        fingerprint=hashlib.sha256(dumped).hexdigest(),
    )


T = TypeVar("T")

#: How often a request waiting ``now`` asks whether its client is still there: a fit
#: abandoned by its client stops within this (plus one EM step) and frees its slot.
DISCONNECT_POLL_SECONDS = 0.25


async def run_waiting(
    http: Request,
    body: BaseModel,
    waiting: Waiting,
    idempotency_key: str | None,
    call: Callable[[Waiting], T],
) -> T:
    """``call(waiting)`` in the threadpool, keyed by ``idempotency_key`` (the body's
    fingerprint is computed there too: a body of points takes milliseconds).

    Work waited for ``now`` (``"wait": true``) runs inside this request, holding a fit
    slot for as long as it takes: when the client disconnects, nobody will receive its
    result, so it is told to stop (``Waiting.until``) and stores nothing, instead of
    keeping the slot from everyone else and leaving a model that a retry would
    duplicate. Other waiting needs no watch: its work is a job, which goes on and is
    listed when the client leaves.

    uvicorn answers ``receive()`` with ``http.disconnect`` once the connection is lost
    (the body was read before the route ran); ``is_disconnected`` asks without waiting.
    """

    def keyed(waiting: Waiting) -> T:
        return call(waiting.keyed(idempotency_of(http, body, idempotency_key)))

    if waiting.mode != "now":
        return await run_in_threadpool(keyed, waiting)
    gone = threading.Event()

    async def watch() -> None:
        while not await http.is_disconnected():
            await asyncio.sleep(DISCONNECT_POLL_SECONDS)
        gone.set()

    # A bare task, not a task group: the work's errors must reach the handlers as
    # they are, not wrapped in an ExceptionGroup.
    watcher = asyncio.create_task(watch())
    try:
        return await run_in_threadpool(keyed, waiting.until(gone))
    finally:
        watcher.cancel()
