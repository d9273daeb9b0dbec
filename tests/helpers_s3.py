"""An S3 server on loopback for the tests (moto), with conditional writes made atomic.

moto checks ``If-Match`` / ``If-None-Match`` and then writes, in two steps that other
request threads can interleave with; real S3 does both in one. The tests are about the
store's use of conditional writes, so the server here serialises the requests that
change objects (PUT, POST, DELETE): what S3 promises, no more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _serialise_writes(app: WSGIApp) -> WSGIApp:
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            return app(environ, start_response)
        with lock:
            return list(app(environ, start_response))

    return wrapped


class AtomicMotoServer(ThreadedMotoServer):
    """``ThreadedMotoServer`` whose writes are atomic with their conditions, as in S3."""

    def _server_entry(self) -> None:
        app = _serialise_writes(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()
