"""The HTTP/1.1 connections of ``python -m service``: uvicorn's httptools protocol with
deadlines for request headers and a problem+json answer past the connection cap.

uvicorn has no timeout for reading a request's headers. ``timeout_keep_alive`` runs
only between requests (the first byte of the next one stops it), and a new
connection has no timer at all, so a client sending a header byte every few seconds,
or nothing, held its connection open for ever (issue 16). Here a connection must
complete its request line and headers within ``GMM_REQUEST_READ_TIMEOUT_SECONDS`` of
connecting, or of the first byte of a request on a kept-alive connection; past it the
connection is closed, with nothing sent (no request was read to answer). The body's
own deadline is an ASGI layer's (``service.api.limits``), which every server runs; but
once the app has answered before the body ended (a 401 decided from the headers), what
is left of it is uvicorn's to discard, and gets the same deadline here.

uvicorn's ``limit_concurrency`` (``GMM_MAX_CONNECTIONS``) answers a request past it
with a text/plain 503; this protocol applies the same cap but answers problem+json
naming the setting, with the request id and security headers every answer has.

The hooks are uvicorn's httptools parser callbacks (``on_message_begin``,
``on_headers_complete``, ``on_message_complete``), ``on_response_complete`` and
``_start_asgi_task``; ``tests/test_edge_server.py`` and ``tests/test_hostile_client.py``
run them in a real server, so an upgrade of uvicorn that moves them fails there.
uvicorn[standard] always brings httptools, so its protocol is the one to extend.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from service.api.middleware import request_id_of, with_context_headers
from service.api.problems import CLOSE, problem
from service.config import Settings
from service.errors import PROBLEM_BASE


@functools.cache
def _header_timeout() -> float:
    """This worker's setting, from the same ``GMM_*`` environment its app reads.

    uvicorn builds one protocol per connection from its own ``Config``, which has no
    place for it; a worker process is spawned, so a value set on the class in the
    parent process would not reach it.
    """
    return Settings().request_read_timeout_seconds


async def _too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer past the cap, without running the app (that is the point)."""
    response = problem(
        503,
        "This server is serving as many connections as it may (GMM_MAX_CONNECTIONS); "
        "retry shortly.",
        type_=PROBLEM_BASE + "too-many-connections",
        title="Too many connections",
        headers={"Retry-After": "1", **CLOSE},
    )
    request_id = request_id_of(scope)

    async def send_with_headers(message: Any) -> None:
        if message["type"] == "http.response.start":
            headers = with_context_headers(message.get("headers", []), request_id)
            message = {**message, "headers": headers}
        await send(message)

    await response(scope, receive, send_with_headers)


#: A body at most this long goes out in one write with its head (one copy of it); a
#: longer one follows its head in a write of its own, uncopied.
JOIN_MAX_BYTES = 64 * 1024


class OneWritePerAnswer:
    """A request's transport as uvicorn's cycle sees it: a response's head and body
    leave in one write, one TCP segment, instead of two.

    uvicorn writes the status line and headers as soon as ``http.response.start``
    comes, and the body in a write of its own: two system calls, two segments, and two
    wake-ups of the client for each answer. The head is held here until the next write
    (the body, sent by the same task step for every Starlette ``Response``) and joined
    to it; a head that nothing follows leaves at the end of the loop iteration
    (``call_soon``), so a streamed or slow answer is never held back longer. Measured
    with ``bench/predict_wrk.py`` (one-point predict, one pinned worker): one system
    call an answer instead of two; the requests/s moved by 0 to 3%, within the runs'
    noise. Everything but ``write`` and ``close`` is the transport's own.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            if data.startswith(b"HTTP/"):
                self._held = data
                self._loop.call_soon(self.flush)
            else:
                self._transport.write(data)
            return
        self._held = None
        if len(data) <= JOIN_MAX_BYTES:
            self._transport.write(held + data)
        else:
            self._transport.write(held)
            self._transport.write(data)

    def flush(self) -> None:
        """Send a held head now (nothing followed it in its loop iteration)."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class EdgeHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with read deadlines and a problem+json cap."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's own check would answer text/plain first: this class checks instead.
        self.max_connections = self.limit_concurrency
        self.limit_concurrency = None
        self.read_timeout = _header_timeout()
        self.deadline: asyncio.TimerHandle | None = None
        #: What the deadline waits for: "a request" (a new connection), "headers", or
        #: "the rest of a body" that the app answered before it ended.
        self.awaiting = ""
        #: A request began in the chunk being parsed and its headers have not ended.
        self.headers_pending = False
        self.one_write: OneWritePerAnswer | None = None

    def _start_deadline(self, awaiting: str) -> None:
        """Close the connection unless ``_stop_deadline`` comes first; a deadline that
        already runs keeps running (the first byte started it, not the latest)."""
        if self.deadline is None:
            self.awaiting = awaiting
            self.deadline = self.loop.call_later(self.read_timeout, self._deadline_passed)

    def _stop_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _deadline_passed(self) -> None:
        self.deadline = None
        # A connection upgraded to another protocol is that protocol's to close.
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        if self.awaiting != "a request":  # an idle connection is no news
            self.logger.warning(
                "Closed a connection still sending %s after %g s "
                "(GMM_REQUEST_READ_TIMEOUT_SECONDS).",
                self.awaiting,
                self.read_timeout,
            )
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.one_write = OneWritePerAnswer(transport, self.loop)
        self._start_deadline("a request")

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # A request whose headers did not all come in this chunk gets its deadline now,
        # from the arrival of its first byte as before; the usual request, whose headers
        # come in one chunk, arms and cancels no timer (two heap operations a request).
        if self.headers_pending:
            self.headers_pending = False
            self._start_deadline("headers")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.headers_pending = True

    def on_headers_complete(self) -> None:
        self.headers_pending = False
        self._stop_deadline()
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.transport is self.transport:
            self.cycle.transport = self.one_write  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The app answered before the body ended (a 401 from the headers alone, a 413):
        # uvicorn discards the rest as it comes, with no deadline, so a client could
        # trickle it for ever after its answer. The rest gets the read timeout.
        cycle = self.cycle
        answered_early = cycle is not None and cycle.response_complete and cycle.more_body
        if answered_early and not self.transport.is_closing():
            self._start_deadline("the rest of a body")

    def on_message_complete(self) -> None:
        draining = self.cycle is not None and self.cycle.response_complete
        super().on_message_complete()
        if draining and self.awaiting == "the rest of a body":
            self._stop_deadline()
            # uvicorn's keep-alive timer, armed when the answer went out, was stopped
            # by the body's bytes: idle from now on, as after any request.
            if self.timeout_keep_alive_task is None and not self.transport.is_closing():
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGIApp) -> None:  # type: ignore[override]
        # The cycle's own connection is among self.connections: one more than the cap
        # is refused; and the task about to start is not yet among self.tasks.
        if self.max_connections is not None and (
            len(self.connections) > self.max_connections or len(self.tasks) >= self.max_connections
        ):
            self.logger.warning("Refused a request past GMM_MAX_CONNECTIONS.")
            app = _too_many_connections
        super()._start_asgi_task(cycle, app)
