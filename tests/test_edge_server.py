"""What a real server does at its edge (issue 16): before any route runs, a request
without a key is refused without its body being read, and a 500 keeps its headers
and its connection.

Only a real uvicorn shows these: a TestClient hands the app a body it already holds,
and has neither sockets nor timeouts.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator

import pytest

from tests.helpers_http import RawResponse, raw_connection
from tests.helpers_server import ServerProcess, running_server

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"
ADMIN = {"X-API-Key": "admin-key"}
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
    """Keys on, and the injected fault."""
    cwd = tmp_path_factory.mktemp("edge")
    hooks = cwd / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(_FAULT))
    pythonpath = os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH")) if p)
    env = {
        "GMM_STORE_DIR": str(cwd / "store"),
        "GMM_API_KEYS": "admin-key,reader-key:read",
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
