"""Bodies that are not JSON (``.npy``, CSV) and ``.npy`` answers.

A route opts in with ``@accepts(NPY, CSV, limit="max_upload_bytes")`` under its
``@router.post``; ``BinaryBodyRoute`` then reads such a body chunk by chunk into a
temporary file, answering 413 as soon as it passes the limit (with or without
``Content-Length``), and hands FastAPI the request *without* a body: the endpoint's
JSON body parameter (optional for this reason) is None, and ``binary_body(request)``
gives the file. Authentication and every other dependency run exactly as for JSON.
JSON bodies of such routes are unchanged, held to ``GMM_MAX_BODY_BYTES``.

Kept apart from ``routing.FastJSONRoute`` (which it extends) so that the JSON path
stays one module's business.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response
from starlette.types import Message

from service.api.routing import FastJSONRoute
from service.domain.datasets.files import CSV_MEDIA_TYPE, NPY_MEDIA_TYPE, write_npy
from service.errors import InvalidInput, PayloadTooLarge, ServiceError

NPY = NPY_MEDIA_TYPE
CSV = CSV_MEDIA_TYPE

#: Each limit's environment variable, for the 413's message.
_SETTING_NAMES = {
    "max_body_bytes": "GMM_MAX_BODY_BYTES",
    "max_upload_bytes": "GMM_MAX_UPLOAD_BYTES",
}
#: Bodies up to this size stay in memory; larger ones go to a temporary file.
_SPOOL_IN_MEMORY = 8 * 1024 * 1024

_STATE_KEY = "binary_body"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class BinaryBody:
    """A non-JSON body as it arrived: its media type, full Content-Type and bytes."""

    media_type: str
    content_type: str
    file: IO[bytes]


def accepts(*media_types: str, limit: str = "max_body_bytes") -> Callable[[F], F]:
    """Mark an endpoint as taking these media types besides JSON, up to the
    ``Settings`` field ``limit`` bytes."""

    def mark(endpoint: F) -> F:
        endpoint.binary_body_spec = (frozenset(media_types), limit)  # type: ignore[attr-defined]
        return endpoint

    return mark


def binary_body(request: Request) -> BinaryBody | None:
    """The endpoint's non-JSON body, or None when the request sent JSON."""
    found: BinaryBody | None = getattr(request.state, _STATE_KEY, None)
    return found


def missing_body() -> RequestValidationError:
    """What FastAPI answers for a required body that is absent."""
    return RequestValidationError(
        [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
    )


def media_type_of(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _too_large(limit: int, field: str) -> PayloadTooLarge:
    name = _SETTING_NAMES.get(field, field)
    return PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes ({name}).")


async def _spool(request: Request, limit: int, field: str) -> IO[bytes]:
    """The body in a temporary file, refused as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, field)
    fp: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
    try:
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                raise _too_large(limit, field)
            fp.write(chunk)
        fp.seek(0)
    except BaseException:
        fp.close()
        raise
    return fp


class BinaryBodyRoute(FastJSONRoute):
    """``FastJSONRoute`` that also takes the media types its endpoint ``accepts``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        spec = getattr(self.endpoint, "binary_body_spec", None)
        if spec is None:
            return handler
        media_types, limit_field = spec

        async def binary_handler(request: Request) -> Response:
            content_type = request.headers.get("content-type", "")
            media = media_type_of(content_type)
            settings = request.app.state.settings
            if media not in media_types:
                if limit_field == "max_body_bytes":
                    return await handler(request)
                # The middleware let this route's bodies grow to the upload limit;
                # JSON is decoded in memory and stays held to GMM_MAX_BODY_BYTES.
                fp = await _spool(request, settings.max_body_bytes, "max_body_bytes")
                with fp:
                    body = fp.read()
                sent = False

                async def replay() -> Message:
                    nonlocal sent
                    if sent:
                        return {"type": "http.disconnect"}
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}

                return await handler(Request(request.scope, replay))
            fp = await _spool(request, getattr(settings, limit_field), limit_field)
            scope = dict(request.scope)
            scope["headers"] = [
                (k, v)
                for k, v in request.scope["headers"]
                if k not in (b"content-type", b"content-length")
            ]
            scope["state"] = {
                **(request.scope.get("state") or {}),
                _STATE_KEY: BinaryBody(media, content_type, fp),
            }

            async def no_body() -> Message:
                return {"type": "http.request", "body": b"", "more_body": False}

            try:
                return await handler(Request(scope, no_body))
            finally:
                fp.close()

        return binary_handler


# -- .npy answers ---------------------------------------------------------------------
def wants_npy(accept: str) -> bool:
    """True when ``accept`` (the request's ``Accept``, "" when absent) prefers
    ``application/x-npy`` to JSON (ties: JSON)."""
    if not accept:
        return False
    best = {"application/json": -1.0, NPY: -1.0}
    for item in accept.split(","):
        media, _, params = item.partition(";")
        media = media.strip().lower()
        if media not in best:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best[media] = max(best[media], q)
    return best[NPY] > 0 and best[NPY] > best["application/json"]


def npy_response(result: dict[str, Any], output: str, available: list[str]) -> Response:
    """One array of ``result`` (named by ``?output=``) as a ``.npy`` body."""
    if output not in available or result.get(output) is None:
        raise InvalidInput.at(
            ["query", "output"],
            f"output {output!r} is not available here; choose from {sorted(available)}.",
        )
    array = np.asarray(result[output])
    return Response(write_npy(array), media_type=NPY)


def read_npy_points(
    request: Request, reader: Callable[[IO[bytes]], np.ndarray]
) -> np.ndarray | None:
    """The points of a ``.npy`` body via ``reader`` (the service's), or None for JSON."""
    body = binary_body(request)
    if body is None:
        return None
    if body.media_type != NPY:  # pragma: no cover - the route accepts only NPY
        raise ServiceError(f"unexpected body type {body.media_type}")
    return reader(body.file)


#: ``openapi_extra`` documenting binary request bodies beside the JSON one.
def binary_request_doc(*media_types: str) -> dict[str, Any]:
    schemas = {
        NPY: {"schema": {"type": "string", "format": "binary"}},
        # No type: any text can be sent, and what is not numbers is answered 422 (a
        # "string" schema would call a body like `0` a non-string, yet it is valid CSV).
        CSV: {
            "schema": {"description": "Comma-separated numbers, one row per line."},
            "example": "x,y\n0.5,1.5\n2.0,-1.0\n",
        },
    }
    return {"requestBody": {"required": True, "content": {m: schemas[m] for m in media_types}}}


#: The 200 content of a route that can answer one array as ``.npy``.
NPY_RESPONSE_CONTENT = {NPY: {"schema": {"type": "string", "format": "binary"}}}
