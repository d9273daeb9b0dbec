"""``OneWritePerAnswer``: a response's head leaves with its body, and never later than
the end of its loop iteration. The server's own answers go through it in
``tests/test_edge_server.py`` and every test that starts a server."""

from __future__ import annotations

import asyncio
from typing import Any

from service.api.connections import JOIN_MAX_BYTES, OneWritePerAnswer


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return f"info:{name}"


def _run(scenario: Any) -> _Transport:
    transport = _Transport()

    async def main() -> None:
        one = OneWritePerAnswer(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        await scenario(one, transport)

    asyncio.run(main())
    return transport


def test_head_and_body_leave_in_one_write() -> None:
    async def scenario(one: OneWritePerAnswer, transport: _Transport) -> None:
        one.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert transport.writes == []
        one.write(b"{}")
        await asyncio.sleep(0)  # the scheduled flush finds nothing left

    assert _run(scenario).writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


def test_a_head_alone_leaves_at_the_end_of_the_iteration() -> None:
    async def scenario(one: OneWritePerAnswer, transport: _Transport) -> None:
        one.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await asyncio.sleep(0)
        assert transport.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
        one.write(b"5\r\nhello\r\n")  # not a head: written at once

    assert _run(scenario).writes[-1] == b"5\r\nhello\r\n"


def test_a_large_body_is_not_copied_onto_its_head() -> None:
    body = b"x" * (JOIN_MAX_BYTES + 1)

    async def scenario(one: OneWritePerAnswer, transport: _Transport) -> None:
        one.write(b"HTTP/1.1 200 OK\r\n\r\n")
        one.write(body)

    assert _run(scenario).writes == [b"HTTP/1.1 200 OK\r\n\r\n", body]


def test_close_sends_a_held_head_first_and_the_rest_is_the_transports() -> None:
    async def scenario(one: OneWritePerAnswer, transport: _Transport) -> None:
        one.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
        one.close()
        assert transport.closed
        assert one.get_extra_info("peername") == "info:peername"

    transport = _run(scenario)
    assert transport.writes == [b"HTTP/1.1 500 Internal Server Error\r\n\r\n"]
