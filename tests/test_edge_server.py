"""What a real server does at its edge (issue 16): before any route runs, a request
without a key is refused without its body being read, a body or headers sent too
slowly are cut off, a worker serves a bounded number of connections, and a 500 keeps
its headers and its connection.

Only a real uvicorn shows these: a TestClient hands the app a body it already holds,
and has neither sockets nor timeouts.
"""

from __future__ import annotations

import os
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers_http import RawConnection, RawResponse, raw_connection
from tests.helpers_server import ServerProcess, running_server

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"
ADMIN = {"X-API-Key": "admin-key"}
READ_TIMEOUT = 1.0
#: ``GET /v1/models?name=`` this raises RuntimeError inside the server (see ``_FAULT``).
FAULT_NAME = "raise-an-unexpected-error"

#: Imported by the server's interpreter at start-up (``sitecustomize`` on PYTHONPATH):
#: one listing fails as a bug would, so that a real process answers a 500.
_FAULT = f"""
from service.domain.catalogue.service import Catalogue

_list = Catalogue.list


def _failing_list(self, **kwargs):
    if kwargs.get("name") == {FAULT_NAME!r}:
        raise RuntimeError("an unexpected failure, injected by tests/test_edge_server.py")
    return _list(self, **kwargs)


Catalogue.list = _failing_list
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Keys on, a one-second read timeout, and the injected fault."""
    cwd = tmp_path_factory.mktemp("edge")
    hooks = cwd / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(_FAULT))
    pythonpath = os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH")) if p)
    env = {
        "GMM_STORE_DIR": str(cwd / "store"),
        "GMM_API_KEYS": "admin-key,reader-key:read",
        "GMM_REQUEST_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
        "PYTHONPATH": pythonpath,
    }
    with running_server(env, cwd=cwd) as srv:
        yield srv


def assert_problem(r: RawResponse, status: int) -> dict[str, object]:
    assert r.status == status, (r.status, r.body)
    assert r.headers["content-type"] == PROBLEM, r.headers
    assert len(r.headers["x-request-id"]) == 32
    assert r.headers["x-content-type-options"] == "nosniff"
    body: dict[str, object] = r.json()
    assert body["status"] == status
    return body


# -- 1. no key: refused before the body is read ------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "length"),
    [
        ("/v1/datasets", "application/x-npy", 500_000_000),
        ("/v1/models", "application/json", 183_000_000),
    ],
)
def test_without_a_key_401_comes_before_a_large_body(
    server: ServerProcess, path: str, content_type: str, length: int
) -> None:
    """The body is announced and never sent: the 401 must not wait for it."""
    with raw_connection(server.port) as conn:
        conn.send_head("POST", path, {"Content-Type": content_type, "Content-Length": str(length)})
        conn.send(b"{" + b" " * 1000)
        r = conn.read_response()
    body = assert_problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert body["type"] == "urn:gmm-service:problem:unauthorized"


def test_without_a_key_401_comes_before_a_chunked_body(server: ServerProcess) -> None:
    with raw_connection(server.port) as conn:
        conn.send_head(
            "POST",
            "/v1/datasets",
            {"Content-Type": "text/csv", "Transfer-Encoding": "chunked"},
        )
        conn.send(b"6\r\n1,2,3\n\r\n")
        r = conn.read_response()
    assert_problem(r, 401)


def test_a_read_only_key_is_refused_403_before_the_body(server: ServerProcess) -> None:
    with raw_connection(server.port) as conn:
        conn.send_head(
            "POST",
            "/v1/models",
            {
                "Content-Type": "application/json",
                "Content-Length": "100000000",
                "Authorization": "Bearer reader-key",
            },
        )
        r = conn.read_response()
    body = assert_problem(r, 403)
    assert body["detail"] == "A read-only key may not call create_model."


def test_a_key_still_opens_everything(server: ServerProcess) -> None:
    fit = b'{"algorithm": "kmeans", "params": {"n_clusters": 1}, "data": {"points": [[0, 1]]}}'
    with raw_connection(server.port) as conn:
        r = conn.request("POST", "/v1/models", fit, {**ADMIN, "Content-Type": "application/json"})
        assert r.status == 201, r.body
        assert conn.request("GET", "/healthz").status == 200  # open, and the same connection


# -- 3. slow bodies and headers ------------------------------------------------------------


def _slow_body(server: ServerProcess, headers: dict[str, str], body: bytes) -> RawResponse:
    """Headers at once, then the body a byte every 0.2 s; the response and how long it took."""
    with raw_connection(server.port, timeout=8 * READ_TIMEOUT) as conn:
        conn.send_head(
            "POST", "/v1/models", {**ADMIN, "Content-Type": "application/json", **headers}
        )
        sender = threading.Thread(target=conn.trickle, args=(body, 0.2, 6 * READ_TIMEOUT))
        start = time.monotonic()
        sender.start()
        try:
            r = conn.read_response()
            took = time.monotonic() - start
            assert conn.closed_by_server(), "the connection of a timed-out body stays open"
        finally:
            sender.join()
    assert took < 4 * READ_TIMEOUT, f"answered after {took:.1f} s"
    return r


def test_a_body_sent_too_slowly_is_408(server: ServerProcess) -> None:
    r = _slow_body(server, {"Content-Length": "1000"}, b"{" + b" " * 999)
    body = assert_problem(r, 408)
    assert "GMM_REQUEST_READ_TIMEOUT_SECONDS" in str(body["detail"])
    assert body["type"] == "urn:gmm-service:problem:request-timeout"
    assert r.headers["connection"] == "close"


def test_a_chunked_body_sent_too_slowly_is_408(server: ServerProcess) -> None:
    chunks = b"".join(b"1\r\n \r\n" for _ in range(200))
    r = _slow_body(server, {"Transfer-Encoding": "chunked"}, b"1\r\n{\r\n" + chunks)
    assert_problem(r, 408)


def test_a_body_that_stops_is_408(server: ServerProcess) -> None:
    with raw_connection(server.port, timeout=8 * READ_TIMEOUT) as conn:
        conn.send_head(
            "POST",
            "/v1/models",
            {**ADMIN, "Content-Type": "application/json", "Content-Length": "50"},
        )
        conn.send(b'{"algorithm"')
        assert_problem(conn.read_response(), 408)


def _closed_while_trickling(conn: RawConnection, data: bytes) -> None:
    """Send ``data`` a byte every 0.2 s: the server must close the connection within
    a few read timeouts, long before the data would have ended."""
    sender = threading.Thread(target=conn.trickle, args=(data, 0.2, 6 * READ_TIMEOUT))
    start = time.monotonic()
    sender.start()
    try:
        assert conn.closed_by_server()
        took = time.monotonic() - start
    finally:
        sender.join()
    assert took < 4 * READ_TIMEOUT, f"closed after {took:.1f} s"


def test_headers_sent_too_slowly_close_the_connection(server: ServerProcess) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 100 + b"\r\n\r\n"
    with raw_connection(server.port, timeout=8 * READ_TIMEOUT) as conn:
        _closed_while_trickling(conn, head)


def test_a_connection_that_sends_nothing_is_closed(server: ServerProcess) -> None:
    with raw_connection(server.port, timeout=8 * READ_TIMEOUT) as conn:
        start = time.monotonic()
        assert conn.closed_by_server()
    assert time.monotonic() - start < 4 * READ_TIMEOUT


def test_the_rest_of_a_body_answered_early_gets_the_timeout_too(server: ServerProcess) -> None:
    """A 401 goes out before the body is read; the rest of the body must then end in
    time as well, or a client without a key could trickle it for ever after its 401."""
    with raw_connection(server.port, timeout=8 * READ_TIMEOUT) as conn:
        conn.send_head(
            "POST", "/v1/models", {"Content-Type": "application/json", "Content-Length": "1000"}
        )
        assert conn.read_response().status == 401
        _closed_while_trickling(conn, b" " * 1000)
    # A body that ends in time leaves the connection serving the next request.
    with raw_connection(server.port) as conn:
        r = conn.request("POST", "/v1/models", b"{" * 5000, {"Content-Type": "application/json"})
        assert r.status == 401
        time.sleep(2 * READ_TIMEOUT)
        assert conn.request("GET", "/healthz").status == 200


def test_a_prompt_request_is_unaffected_by_the_timeout(server: ServerProcess) -> None:
    """Keep-alive idleness is not a slow request: a connection that waits longer than
    the read timeout between two requests still serves the second."""
    with raw_connection(server.port) as conn:
        assert conn.request("GET", "/healthz").status == 200
        time.sleep(2 * READ_TIMEOUT)
        assert conn.request("GET", "/v1/models", headers=ADMIN).status == 200


# -- 2. a 500 keeps its headers and its connection ------------------------------------------


def test_a_500_carries_its_headers_and_keeps_the_connection(server: ServerProcess) -> None:
    with raw_connection(server.port) as conn:
        r = conn.request(
            "GET", f"/v1/models?name={FAULT_NAME}", headers={**ADMIN, "X-Request-ID": "trace-500"}
        )
        assert r.status == 500, r.body
        assert r.headers["content-type"] == PROBLEM
        assert r.headers["x-request-id"] == "trace-500"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.json()["type"] == "urn:gmm-service:problem:internal-error"
        assert r.headers.get("connection") != "close"
        # The same connection serves the next request.
        assert conn.request("GET", "/healthz").status == 200
    assert "RuntimeError: an unexpected failure" in server.log()


# -- 3. a bounded number of connections per worker ----------------------------------------


def test_connections_past_the_cap_are_answered_503(tmp_path: Path) -> None:
    env = {"GMM_STORE_DIR": str(tmp_path / "store"), "GMM_MAX_CONNECTIONS": "3"}
    with running_server(env, cwd=tmp_path) as srv:
        idle = [RawConnection(srv.port) for _ in range(3)]
        try:
            with raw_connection(srv.port) as conn:
                r = conn.request("GET", "/healthz")
            body = assert_problem(r, 503)
            assert "GMM_MAX_CONNECTIONS" in str(body["detail"])
            assert r.headers["connection"] == "close"
            assert "retry-after" in r.headers
        finally:
            for c in idle:
                c.close()
        deadline = time.monotonic() + 10
        while True:  # the server sees the idle connections go
            with raw_connection(srv.port) as conn:
                if conn.request("GET", "/healthz").status == 200:
                    break
            assert time.monotonic() < deadline, "still refused after the others closed"
            time.sleep(0.1)
