"""Refuse oversized bodies while they stream in, before anything parses them.

``Content-Length`` alone is not enough: a chunked upload has none, so the byte
count is enforced on the stream itself.

Uploads (``POST /v1/datasets``) may be larger: their route is let through up to
``GMM_MAX_UPLOAD_BYTES`` here, and holds each media type to its own limit while it
reads the body (``service.api.binary``).
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import is_protocol_path, problem, protocol_error
from service.errors import PROBLEM_BASE


class _TooLarge(HTTPException):
    """Raised from ``receive``: FastAPI re-raises HTTPExceptions from body reads, so the
    app's own handler answers it as problem+json."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(413, _detail(limit, setting))


def _detail(limit: int, setting: str) -> str:
    return f"The request body exceeds the limit of {limit} bytes ({setting})."


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        *,
        uploads: frozenset[tuple[str, str]] = frozenset(),
        max_upload_bytes: int = 0,
    ) -> None:
        """``uploads`` are the ``(method, path)`` pairs allowed ``max_upload_bytes``."""
        self.app = app
        self.limit = max_body_bytes
        self.uploads = uploads
        self.max_upload_bytes = max_upload_bytes

    def _limit_for(self, scope: Scope) -> tuple[int, str]:
        upload = (scope.get("method", ""), scope.get("path", "")) in self.uploads
        if upload and self.max_upload_bytes > self.limit:
            return self.max_upload_bytes, "GMM_MAX_UPLOAD_BYTES"
        return self.limit, "GMM_MAX_BODY_BYTES"

    def _reply(self, scope: Scope, limit: int, setting: str) -> Any:
        if is_protocol_path(scope.get("path", "")):
            return protocol_error(413, _detail(limit, setting))
        return problem(
            413,
            _detail(limit, setting),
            type_=PROBLEM_BASE + "payload-too-large",
            title="Payload too large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self._limit_for(scope)
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await self._reply(scope, limit, setting)(scope, receive, send)
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit, setting)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reply(scope, limit, setting)(scope, receive, send)
