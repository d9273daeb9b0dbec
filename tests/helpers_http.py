"""HTTP/1.1 over a raw socket, for what a well-behaved client never does.

httpx always finishes the request it starts. A test of how the server treats a body
that never ends, headers sent a byte at a time or a second request on the connection
a 500 went out on needs to hold the socket itself: this writes bytes as given and
reads back one response, framed by its ``Content-Length``. Also what the tests of such
clients share: a byte at a time in the background (``trickling``), and the checks every
error answer must pass, whichever layer sent it (``assert_problem``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from tests.helpers_server import HOST

PROBLEM = "application/problem+json"
#: How often a trickling client sends its next byte, in seconds.
TRICKLE_INTERVAL = 0.2


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """One TCP connection to ``127.0.0.1:port``; every read waits at most ``timeout`` s."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buffer = b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_head(self, method: str, path: str, headers: dict[str, str] | None = None) -> None:
        """The request line and headers (``Host`` added), and no body."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> RawResponse:
        """A whole request (``Content-Length`` framed), then its response."""
        self.send_head(method, path, {**(headers or {}), "Content-Length": str(len(body))})
        self.send(body)
        return self.read_response()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def read_response(self) -> RawResponse:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        assert "content-length" in headers, f"expected a Content-Length response: {headers}"
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return RawResponse(status, headers, body)

    def closed_by_server(self) -> bool:
        """Whether the server closed the connection (reading then ends, or is reset)
        within the timeout, whatever it sent before."""
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return True

    def trickle(self, data: bytes, interval: float, until: float) -> None:
        """Send ``data`` a byte every ``interval`` s for at most ``until`` s, stopping
        quietly once the server stops listening."""
        deadline = time.monotonic() + until
        for byte in data:
            if time.monotonic() > deadline:
                return
            try:
                self.send(bytes([byte]))
            except OSError:
                return
            time.sleep(interval)


@contextlib.contextmanager
def raw_connection(port: int, timeout: float = 10.0) -> Iterator[RawConnection]:
    conn = RawConnection(port, timeout)
    try:
        yield conn
    finally:
        conn.close()


def assert_problem(r: RawResponse | httpx.Response, status: int) -> dict[str, Any]:
    """The answer every error must be, whoever sent it (a route, an ASGI layer, the
    connection protocol): problem+json with a ``type`` of the service's own, the request
    id and the security headers (``nosniff`` stands for them). Answers the problem."""
    code = r.status if isinstance(r, RawResponse) else r.status_code
    body_text = r.body if isinstance(r, RawResponse) else r.content
    assert code == status, (code, body_text)
    assert r.headers["content-type"] == PROBLEM, r.headers
    assert len(r.headers["x-request-id"]) == 32, r.headers
    assert r.headers["x-content-type-options"] == "nosniff", r.headers
    problem: dict[str, Any] = r.json()
    assert problem["status"] == status, problem
    assert str(problem["type"]).startswith("urn:gmm-service:problem:"), problem
    return problem


@contextlib.contextmanager
def trickling(conn: RawConnection, data: bytes, read_timeout: float) -> Iterator[float]:
    """Send ``data`` a byte every ``TRICKLE_INTERVAL`` s in the background (for six read
    timeouts at most, or until the server stops listening) while the block runs;
    yields the time it began, by ``time.monotonic``."""
    sender = threading.Thread(target=conn.trickle, args=(data, TRICKLE_INTERVAL, 6 * read_timeout))
    start = time.monotonic()
    sender.start()
    try:
        yield start
    finally:
        sender.join()


def closed_while_trickling(conn: RawConnection, data: bytes, read_timeout: float) -> None:
    """Trickle ``data``: the server must close the connection within a few read
    timeouts, long before the data would have ended."""
    with trickling(conn, data, read_timeout) as start:
        assert conn.closed_by_server()
        took = time.monotonic() - start
    assert took < 4 * read_timeout, f"closed after {took:.1f} s"


def slow_body(
    port: int, path: str, headers: dict[str, str], body: bytes, read_timeout: float
) -> RawResponse:
    """POST ``headers`` at once, then trickle ``body``: the server must answer within a
    few read timeouts, and close the connection."""
    with raw_connection(port, timeout=8 * read_timeout) as conn:
        conn.send_head("POST", path, headers)
        with trickling(conn, body, read_timeout) as start:
            r = conn.read_response()
            took = time.monotonic() - start
            assert conn.closed_by_server(), "the connection of a timed-out body stays open"
    assert took < 4 * read_timeout, f"answered after {took:.1f} s"
    return r
