"""Refuse oversized or slow bodies while they stream in, before anything parses them.

``Content-Length`` alone is not enough: a chunked upload has none, so the byte
count is enforced on the stream itself.

Uploads (``POST /v1/datasets``) may be larger: their route is let through up to
``GMM_MAX_UPLOAD_BYTES`` here, and holds each media type to its own limit while it
reads the body (``service.api.binary``).

A body must also keep arriving: no pause longer than ``GMM_REQUEST_READ_TIMEOUT_SECONDS``,
and after that grace at least ``GMM_REQUEST_MIN_BYTES_PER_SECOND`` on average, else the
request is answered 408 and its connection closed. Only the time spent waiting for the
client counts, not the time the app takes between two reads. Headers are uvicorn's to
read, before any ASGI app runs: their deadline is ``service.api.connections``'.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import CLOSE, body_timeout, is_protocol_path, problem, protocol_error
from service.errors import PROBLEM_BASE


class _TooLarge(HTTPException):
    """Raised from ``receive``: FastAPI re-raises HTTPExceptions from body reads, so the
    app's own handler answers it as problem+json."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(413, _detail(limit, setting))


class _ReadTimeout(HTTPException):
    """Raised from ``receive`` as ``_TooLarge`` is; the app's handler answers 408."""

    def __init__(self, detail: str) -> None:
        super().__init__(408, detail, headers=CLOSE)


class _Resumed:
    """The rest of a coroutine already run to its first wait (``waiting``, what it gave
    the event loop there): awaiting this is awaiting the coroutine from that point on,
    as ``yield from`` would, so that only a read that does wait is put under a deadline.
    A cancellation (the deadline's) is thrown into the coroutine, as it would be."""

    def __init__(self, coro: Coroutine[Any, Any, Message], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, Message]:
        coro, waiting = self._coro, self._waiting
        while True:
            try:
                sent = yield waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    waiting = coro.throw(exc)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
            else:
                try:
                    waiting = coro.send(sent)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]


def _detail(limit: int, setting: str) -> str:
    return f"The request body exceeds the limit of {limit} bytes ({setting})."


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        *,
        uploads: frozenset[tuple[str, str]] = frozenset(),
        max_upload_bytes: int = 0,
        read_timeout: float | None = None,
        min_bytes_per_second: int = 0,
    ) -> None:
        """``uploads`` are the ``(method, path)`` pairs allowed ``max_upload_bytes``;
        ``read_timeout`` (seconds) None: bodies may arrive as slowly as they like."""
        self.app = app
        self.limit = max_body_bytes
        self.uploads = uploads
        self.max_upload_bytes = max_upload_bytes
        self.read_timeout = read_timeout
        self.min_bytes_per_second = min_bytes_per_second

    def _limit_for(self, scope: Scope) -> tuple[int, str]:
        upload = (scope.get("method", ""), scope.get("path", "")) in self.uploads
        if upload and self.max_upload_bytes > self.limit:
            return self.max_upload_bytes, "GMM_MAX_UPLOAD_BYTES"
        return self.limit, "GMM_MAX_BODY_BYTES"

    def _reply(self, scope: Scope, limit: int, setting: str) -> Any:
        if is_protocol_path(scope.get("path", "")):
            return protocol_error(413, _detail(limit, setting))
        return problem(
            413,
            _detail(limit, setting),
            type_=PROBLEM_BASE + "payload-too-large",
            title="Payload too large",
        )

    def _budget(self, seen: int, waited: float) -> float:
        """Seconds the next read may wait, after ``waited`` s spent waiting for ``seen``
        bytes: at most the timeout, and what is left of the timeout plus the time the
        minimum rate allows for the bytes already received."""
        assert self.read_timeout is not None
        if not self.min_bytes_per_second:
            return self.read_timeout
        allowed = self.read_timeout + seen / self.min_bytes_per_second - waited
        return min(self.read_timeout, max(allowed, 0.0))

    def _timeout_detail(self) -> str:
        return (
            "The request body arrived too slowly: a pause longer than "
            f"{self.read_timeout:g} s (GMM_REQUEST_READ_TIMEOUT_SECONDS), or less than "
            f"{self.min_bytes_per_second} bytes per second on average after that "
            "(GMM_REQUEST_MIN_BYTES_PER_SECOND)."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self._limit_for(scope)
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await self._reply(scope, limit, setting)(scope, receive, send)
                    return
        seen = 0
        waited = 0.0
        body_done = self.read_timeout is None
        started = False

        async def timed(awaitable: Awaitable[Message]) -> Message:
            """The read under its deadline; the time it waited counts."""
            nonlocal waited
            loop = asyncio.get_running_loop()
            began = loop.time()
            try:
                async with asyncio.timeout(self._budget(seen, waited)):
                    return await awaitable
            except TimeoutError:
                raise _ReadTimeout(self._timeout_detail()) from None
            finally:
                waited += loop.time() - began

        async def limited_receive() -> Message:
            nonlocal seen, body_done
            if body_done:
                # Past the body, receive() waits for a disconnect as long as a response
                # streams (or a request waits for its job): no deadline there.
                message = await receive()
            else:
                pending = receive()
                if inspect.iscoroutine(pending):
                    try:
                        # Run the read to its first wait: a body that has arrived (every
                        # small one) comes back without one, and needs no deadline,
                        # whose timer cost a one-point predict a twentieth of its time.
                        waiting = pending.send(None)
                    except StopIteration as arrived:
                        message = arrived.value
                    else:
                        message = await timed(_Resumed(pending, waiting))
                else:
                    message = await timed(pending)
                body_done = message["type"] != "http.request" or not message.get("more_body")
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit, setting)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reply(scope, limit, setting)(scope, receive, send)
        except _ReadTimeout as exc:
            if not started:
                await body_timeout(scope.get("path", ""), exc.detail)(scope, receive, send)
