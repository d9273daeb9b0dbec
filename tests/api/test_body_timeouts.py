"""A request body must keep arriving (``service.api.limits``): no pause longer than
the read timeout, and after that grace a minimum average rate.

In process, with a body that an async generator hands over at the pace a client
would send it; tests/test_edge_server.py shows the same over real sockets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request

from service.api import problems
from service.api.limits import BodyLimitMiddleware

TIMEOUT = 0.3


def echo_app(min_bytes_per_second: int = 1024) -> FastAPI:
    app = FastAPI()
    problems.install(app)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=10**6,
        read_timeout=TIMEOUT,
        min_bytes_per_second=min_bytes_per_second,
    )
    return app


def post(app: FastAPI, chunks: list[bytes], interval: float) -> tuple[httpx.Response, float]:
    """POST the chunks ``interval`` s apart (chunked); the answer and how long it took."""

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
            await asyncio.sleep(interval)

    async def run() -> tuple[httpx.Response, float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            start = time.monotonic()
            r = await client.post("/echo", content=body())
            return r, time.monotonic() - start

    return asyncio.run(run())


def test_a_pause_longer_than_the_timeout_is_408() -> None:
    r, took = post(echo_app(), [b"x" * 1000, b"y"], 2.5 * TIMEOUT)
    assert r.status_code == 408, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["connection"] == "close"
    problem = r.json()
    assert problem["type"] == "urn:gmm-service:problem:request-timeout"
    assert "GMM_REQUEST_READ_TIMEOUT_SECONDS" in problem["detail"]
    assert took < 2 * TIMEOUT


def test_a_body_below_the_minimum_rate_is_408_however_short_its_pauses() -> None:
    # 20 bytes every 0.05 s: 400 bytes per second, each pause well within the timeout.
    r, took = post(echo_app(), [b"z" * 20] * 100, 0.05)
    assert r.status_code == 408, r.text
    assert "GMM_REQUEST_MIN_BYTES_PER_SECOND" in r.json()["detail"]
    assert took < 3 * TIMEOUT


def test_a_steady_body_may_take_longer_than_the_timeout() -> None:
    # 2 KB every 0.05 s (40 KB/s) for 0.75 s: past the timeout, never behind the rate.
    r, took = post(echo_app(), [b"w" * 2000] * 15, 0.05)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 30_000}
    assert took > 2 * TIMEOUT


def test_without_a_minimum_rate_only_pauses_count() -> None:
    r, _ = post(echo_app(min_bytes_per_second=0), [b"v" * 5] * 20, 0.05)
    assert r.status_code == 200, r.text
