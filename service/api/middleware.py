"""Per-request plumbing in one pure ASGI middleware: request id, access log line,
metrics, security headers, and the 500 of an unexpected error.

One middleware rather than four so that every request is timed once and its log
line, metrics sample and response headers agree on route, status and id.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.metrics import Metrics
from service.api.problems import internal_error

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
#: JSON needs no scripts, styles or frames. A response that sets its own policy keeps it:
#: the documentation pages (``service.api.docs``) allow their own scripts by hash.
_API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")

access_log = logging.getLogger("gmm.access")


def request_id_of(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is a sane one (the last one sent), else a
    new id."""
    incoming = b""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            incoming = value
    text = incoming.decode("latin-1")
    return text if _ID_OK.fullmatch(text) else _new_id()


def _new_id() -> str:
    """``uuid.uuid4().hex`` in a third of its time (no UUID object): 16 random bytes
    with the version (4) and variant bits set."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def with_context_headers(
    headers: list[tuple[bytes, bytes]], request_id: str
) -> list[tuple[bytes, bytes]]:
    """A response's ``headers`` plus the request id and the security headers."""
    own_policy = False
    for name, _ in headers:
        if name.lower() == _API_CSP[0]:
            own_policy = True
            break
    headers = [*headers, (b"x-request-id", request_id.encode()), *_SECURITY_HEADERS]
    if not own_policy:
        headers.append(_API_CSP)
    return headers


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log shippers parse without configuration.

    Written by orjson, and the time text made once a second: the access line is
    written for every request, and ``json.dumps`` and ``strftime`` were a tenth of a
    one-point predict's time."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # a race here writes the same text twice: harmless
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(second))
            self._second = second
        return self._stamp

    def format(self, record: logging.LogRecord) -> str:
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return self._line(
            record.created,
            record.levelname.lower(),
            record.name,
            record.getMessage(),
            getattr(record, "fields", {}),
            exception,
        )

    def access_line(self, message: str, fields: dict[str, Any]) -> str:
        """``format`` of an INFO record of ``gmm.access`` with ``message`` and
        ``fields``, made without the record (see ``write_access_line``)."""
        return self._line(time.time(), "info", access_log.name, message, fields)

    def _line(
        self,
        created: float,
        level: str,
        logger: str,
        message: str,
        fields: dict[str, Any],
        exception: str | None = None,
    ) -> str:
        entry = {
            "ts": self._timestamp(created),
            "level": level,
            "logger": logger,
            "message": message,
            "request_id": request_id_var.get(),
            **fields,
        }
        if exception is not None:
            entry["exception"] = exception
        return orjson.dumps(entry, default=str).decode()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now (test runners swap it per test)."""

    _gmm = True

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _own_json_handler() -> tuple[_StderrHandler, JsonFormatter] | None:
    """The access logger's one handler when it is the JSON one ``configure_logging``
    installs and nothing filters its records: the line can then be written without a
    ``LogRecord``. Anything else (a handler or filter added by whoever embeds the app,
    plain-text lines) goes through ``logging`` as usual."""
    handlers = access_log.handlers
    if len(handlers) != 1 or access_log.filters:
        return None
    handler = handlers[0]
    if not isinstance(handler, _StderrHandler) or handler.filters:
        return None
    formatter = handler.formatter
    if not isinstance(formatter, JsonFormatter) or handler.level > logging.INFO:
        return None
    return handler, formatter


def write_access_line(method: str, route: str, status: int | str, fields: dict[str, Any]) -> None:
    """One request's access line, ``"{method} {route} {status}"`` with ``fields`` (an
    HTTP status, or a gRPC code's name), for a caller that found the access logger
    enabled for INFO.

    The same line ``access_log.info`` writes, made in a third of its time: a
    ``LogRecord`` (its thread, process and caller lookups) and the handler chain cost
    about 5 us a request in-process, a tenth of a one-point predict's whole time
    through the server (``bench/asgi_cost.py``). Only for the service's own JSON
    handler (``_own_json_handler``); any other set-up gets the record."""
    own = _own_json_handler()
    message = f"{method} {route} {status}"
    if own is None:
        # ``info`` less the search of the stack for the caller, which the line does not
        # show.
        access_log.handle(
            access_log.makeRecord(
                access_log.name,
                logging.INFO,
                __file__,
                0,
                "%s %s %s",
                (method, route, status),
                None,
                extra={"fields": fields},
            )
        )
        return
    handler, formatter = own
    line = formatter.access_line(message, fields)
    handler.acquire()
    try:
        stream = sys.stderr
        stream.write(line + "\n")
        stream.flush()
    except Exception:  # as StreamHandler.emit: a broken stream must not fail the request
        handler.handleError(
            access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, message, (), None)
        )
    finally:
        handler.release()


def configure_logging(json_lines: bool) -> None:
    """Access and error logs as JSON on stderr (idempotent: apps are built many times)."""
    # The middleware writes each request's access line; uvicorn's plain one would log
    # every request twice. `python -m service` turns it off with access_log=False, but
    # `uvicorn service.main:create_app --factory` run by hand does not: uvicorn sets up
    # its loggers before it builds the app, in each worker, so silencing it here covers
    # both.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("gmm.access", "service.errors"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        if not any(getattr(h, "_gmm", False) for h in logger.handlers):
            logger.addHandler(_StderrHandler())
        for handler in logger.handlers:
            if getattr(handler, "_gmm", False):
                handler.setFormatter(
                    JsonFormatter() if json_lines else logging.Formatter("%(message)s")
                )


class RequestContextMiddleware:
    """The outermost of the service's layers: every answer passes through it.

    It also answers the app's unexpected exceptions (a 500 problem, through the same
    ``send`` as any answer, so with the request id and the security headers). Left to
    Starlette's ServerErrorMiddleware, a 500 had neither, and the exception it re-raised
    made uvicorn close the connection without ``Connection: close``, so a client's next
    request on it was reset; the app has no such layer now (``service.main.ServiceApp``).
    Here the exception ends with the answer and the connection stays open.
    An exception after the response has started is re-raised: uvicorn then closes the
    connection, the only way to tell the client the answer is cut short.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Each label set's children, looked up once: ``labels()`` costs a lock and a
        # tuple per call. As many as Prometheus itself keeps, no more.
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    def _observe(self, method: str, route: str, status: int, elapsed: float) -> None:
        counted = self._counted.get((method, route, status))
        if counted is None:
            counted = self._counted[method, route, status] = self.metrics.requests.labels(
                method, route, str(status)
            )
        timed = self._timed.get((method, route))
        if timed is None:
            timed = self._timed[method, route] = self.metrics.latency.labels(method, route)
        counted.inc()
        timed.observe(elapsed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = request_id_of(scope)
        token = request_id_var.set(request_id)
        path: str = scope.get("path", "")
        status = 500
        status_sent = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status, status_sent = message["status"], True
                headers = with_context_headers(message.get("headers", []), request_id)
                message = {**message, "headers": headers}
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_wrapper)
            except Exception as exc:
                if status_sent:
                    raise  # part of the answer is out: closing the connection ends it
                await internal_error(scope.get("method", ""), path, exc)(
                    scope, receive, send_wrapper
                )
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            method = scope.get("method", "")
            self._observe(method, route, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                fields = {
                    "method": method,
                    "route": route,
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "client": (scope.get("client") or ("-",))[0],
                }
                write_access_line(method, route, status, fields)
            request_id_var.reset(token)
