"""What a real server does at its edge (issue 16), beyond the reviewer's own attacks
(``tests/test_hostile_client.py`` replays those): a body without a key is refused
however it is framed, a read-only key before its body, a chunked body or one that stops
is cut off in time, what is left of a body answered early too, and a prompt client or
an idle kept-alive connection is never taken for a slow one.

Only a real uvicorn shows these: a TestClient hands the app a body it already holds,
and has neither sockets nor timeouts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.helpers_http import (
    assert_problem,
    closed_while_trickling,
    raw_connection,
    slow_body,
)
from tests.helpers_server import ServerProcess, running_server

pytestmark = pytest.mark.slow

ADMIN = {"X-API-Key": "admin-key"}
READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Keys on, and a one-second read timeout."""
    cwd = tmp_path_factory.mktemp("edge")
    env = {
        "GMM_STORE_DIR": str(cwd / "store"),
        "GMM_API_KEYS": "admin-key,reader-key:read",
        "GMM_REQUEST_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
    }
    with running_server(env, cwd=cwd) as srv:
        yield srv


# -- no key, or a read-only key: refused before the body is read -------------------------


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
        health = conn.request("GET", "/healthz")  # open, and the same connection
        assert health.status == 200
        # No server software named to whoever asks (`server_header=False`).
        assert "server" not in r.headers and "server" not in health.headers


# -- slow bodies, and idle connections ----------------------------------------------------


def test_a_chunked_body_sent_too_slowly_is_408(server: ServerProcess) -> None:
    chunks = b"".join(b"1\r\n \r\n" for _ in range(200))
    headers = {**ADMIN, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    r = slow_body(server.port, "/v1/models", headers, b"1\r\n{\r\n" + chunks, READ_TIMEOUT)
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
        closed_while_trickling(conn, b" " * 1000, READ_TIMEOUT)
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
