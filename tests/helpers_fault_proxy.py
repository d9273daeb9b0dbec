"""An HTTP proxy in front of an S3 server (moto) that fails the way a real one does.

A store that is down is easy to fake (an endpoint where nothing listens). What a
server in trouble does is harder: it answers 500 ``InternalError`` or 503
``SlowDown``, resets a connection mid-request, or accepts a request and never
answers. The proxy passes requests through to ``upstream`` until the test switches
it to one of those faults, on every request from then on (or those that ``only``
matches), kept-alive connections included: each request reads the mode when it
arrives.
"""

from __future__ import annotations

import enum
import http.client
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.helpers_server import HOST

#: Headers about one hop of a connection, not the request: never forwarded.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
}
_ERRORS = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}


class Fault(enum.Enum):
    """What the proxy does with each request."""

    NONE = "pass-through"
    ERROR_500 = "500"
    ERROR_503 = "503"
    RESET = "reset"
    STALL = "stall"


class FaultProxy:
    """``with FaultProxy("http://127.0.0.1:5000", stall_seconds=30) as proxy:``; point
    the client at ``proxy.url`` and set ``proxy.fault`` (and ``proxy.only``, a regular
    expression searched in ``"<METHOD> <path>"``, to fail only the requests it matches).

    ``requests`` counts the requests that met each fault, so that a test can tell a
    fault that was injected from one that was never reached. A stalled request is held
    until the fault changes, the proxy stops or ``stall_seconds`` pass (a bound, so
    that a test that forgets to switch back cannot hang), then dropped unanswered.
    """

    def __init__(self, upstream: str, *, stall_seconds: float) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname is not None and parts.port is not None, upstream
        self.upstream = (parts.hostname, parts.port)
        self.stall_seconds = stall_seconds
        self.fault = Fault.NONE
        self.only: str | None = None
        self.requests: dict[Fault, int] = dict.fromkeys(Fault, 0)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer((HOST, 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fault-proxy", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()  # stalled requests let go at once
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _take(self, request: str) -> Fault:
        with self._lock:
            fault = self.fault
            if self.only is not None and not re.search(self.only, request):
                fault = Fault.NONE
            self.requests[fault] += 1
            return fault

    def _stall(self) -> None:
        deadline = time.monotonic() + self.stall_seconds
        while self.fault is Fault.STALL and time.monotonic() < deadline:
            if self._stopping.wait(0.05):
                return


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1: kept-alive connections, as boto's pool uses them; and a client's
        # ``Expect: 100-continue`` is answered before its body is read.
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: a test's output is no place for an access log."""

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _handle(self) -> None:
            body = self._body()  # first: the connection stays in step whatever follows
            fault = proxy._take(f"{self.command} {self.path}")
            if fault is Fault.NONE:
                self._forward(body)
            elif fault in (Fault.ERROR_500, Fault.ERROR_503):
                self._error(int(fault.value))
            elif fault is Fault.RESET:
                self._reset()
            else:
                proxy._stall()
                self.close_connection = True  # then dropped, never answered

        def _forward(self, body: bytes) -> None:
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
            try:
                headers = {
                    name: value
                    for name, value in self.headers.items()
                    if name.lower() not in _HOP_BY_HOP
                }
                headers["Content-Length"] = str(len(body))
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response_only(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                length = str(len(data))
                if self.command == "HEAD":  # no body: the length of the one it would have
                    length = response.getheader("Content-Length", length)
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                upstream.close()

        def _error(self, status: int) -> None:
            code, message = _ERRORS[status]
            data = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                "<RequestId>FAULTPROXY</RequestId></Error>"
            ).encode()
            self.send_response_only(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _reset(self) -> None:
            """Close with SO_LINGER 0: the kernel sends RST, not FIN, as a server that
            crashed or a load balancer that gave up would."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # Closed for real (RST) once ``finish`` closes the reader, and before the
            # server's own ``shutdown(SHUT_WR)``, which would send a FIN first.
            self.connection.close()
            self.close_connection = True

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler
