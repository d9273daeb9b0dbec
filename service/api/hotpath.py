"""Predict, score and v2 infer of models in memory, answered ahead of FastAPI's router.

For a one-point predict, FastAPI's routing, dependency solving and request objects
cost several times the prediction itself (18 us): most of a hand-written wrapper's
time, and most of the service's. This ASGI layer runs inside every other layer of
the service, so the request id, the JSON log line, the metrics, CORS, API keys and
body limits apply as to any request, and just outside FastAPI's exception middleware
and router. It takes ``POST /v1/models/{model_id}/predict`` and ``/score`` and ``POST
/v2/models/{model}[/versions/{version}]/infer`` (matched by those routes' own
``matches``) for a model this worker holds and knows to be stored
(``Inference.ready``), and answers them with what the routes use: the same body
decoder (``decode_body``), the route's own body field to validate, the same answer
functions (``answer_predict``, ``answer_score``; the v2 endpoint itself) and the
app's own exception handlers, so that an error is the same problem+json.

Everything it cannot answer exactly as the route would goes to FastAPI unchanged,
with whatever of the body it read handed back first: a model not in memory, a
content type other than JSON or ``.npy`` (or a ``.npy`` body without a length), a
query other than one known ``output``, a body that is not JSON or that the schema
refuses (FastAPI then words the 400 or 422), a client gone mid-body. Falling back
is always correct; ``tests/api/test_hotpath.py`` checks that both paths answer the
same bytes on a corpus of valid and invalid requests. The routes stay declared in
FastAPI for the OpenAPI document and for that fallback. ``GMM_FAST_PATH=false``
sends every request through FastAPI.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, get_args, get_type_hints
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.binary import NPY, media_type_of, wants_npy
from service.api.metrics import Metrics
from service.api.routes import models
from service.api.routing import decode_body
from service.api.security import ROLE_SCOPE_KEY, KeyRing
from service.api.v2 import routes as v2
from service.domain.inference.service import Inference

Answer = Callable[[Inference, str, Any, Sequence[str], str, bool], Awaitable[Response]]
Handler = Callable[[Request, Exception], Any]


@dataclass(frozen=True)
class _PointsOperation:
    """``/v1/models/{model_id}/predict`` or ``/score``: its route, its answer, and the
    ``?output=`` values its endpoint declares (the first one its default)."""

    route: APIRoute
    answer: Answer
    outputs: frozenset[str]
    default_output: str


def _points_operation(route: APIRoute, answer: Answer) -> _PointsOperation:
    """The operation of ``route``, its outputs read from the endpoint's own signature."""
    declared = get_type_hints(route.endpoint, include_extras=True)["output"]
    literal = get_args(declared)[0]  # Annotated[Literal[...], Query(...)]
    default = route.dependant.query_params[0].default
    return _PointsOperation(route, answer, frozenset(get_args(literal)), default)


def _routes_by_name(app: FastAPI) -> dict[str, APIRoute]:
    return {
        ctx.original_route.name: ctx.original_route
        for ctx in iter_route_contexts(app.routes)
        if isinstance(ctx.original_route, APIRoute)
    }


class _Disconnected(ClientDisconnect):
    """The client left while its body was being read (``args[0]``: the bytes that came):
    FastAPI's route answers a v1 request, and a v2 one fails as ``Request.body``'s
    ``ClientDisconnect`` does."""


class HotPath:
    """The ASGI layer described above; ``fastapi`` is the app whose routes it shortens."""

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI, metrics: Metrics) -> None:
        self.app = app
        self.fastapi = fastapi
        routes = _routes_by_name(fastapi)
        self._predict = _points_operation(routes["predict"], models.answer_predict)
        self._score = _points_operation(routes["score_points"], models.answer_score)
        self._infer = (routes["model_infer"], routes["model_version_infer"])
        # What ExceptionMiddleware answers with; Exception itself is the outermost
        # layer's (an unexpected error is a 500 from RequestContextMiddleware, as there).
        self._handlers: dict[Any, Handler] = {
            key: handler
            for key, handler in fastapi.exception_handlers.items()
            if key not in (500, Exception)
        }
        self._answered = metrics.fast_path.labels("answered")
        self._passed_on = metrics.fast_path.labels("passed_on")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handle = self._candidate(scope)
        if handle is None:
            await self.app(scope, receive, send)
        elif not await handle(scope, receive, send):
            self._passed_on.inc()
            await self.app(scope, receive, send)

    def _candidate(self, scope: Scope) -> Callable[[Scope, Receive, Send], Awaitable[bool]] | None:
        """What may answer this request, from its method and path alone; None for every
        request that is none of the three operations."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        if path.startswith("/v1/models/"):
            if path.endswith("/predict"):
                return partial(self._points, self._predict)
            if path.endswith("/score"):
                return partial(self._points, self._score)
        elif path.startswith("/v2/models/") and path.endswith("/infer"):
            return self._v2_infer
        return None

    # -- what the hot path answers ----------------------------------------------------
    def _inference(self, scope: Scope) -> Inference | None:
        """The app's inference service, once it is built and the key (if any) checked."""
        state = self.fastapi.state
        services = getattr(state, "services", None)
        keyring: KeyRing = state.keyring
        if services is None or (keyring.enabled and ROLE_SCOPE_KEY not in scope):
            return None
        inference: Inference = services.inference
        return inference

    async def _points(
        self, operation: _PointsOperation, scope: Scope, receive: Receive, send: Send
    ) -> bool:
        """Answer a v1 predict or score; False when FastAPI must (nothing read yet)."""
        match, child = operation.route.matches(scope)
        inference = self._inference(scope)
        if match is not Match.FULL or inference is None:
            return False
        model_id: str = child["path_params"]["model_id"]
        output = self._output(operation, scope["query_string"])
        if output is None or not inference.ready(model_id):
            return False
        found = _first(scope["headers"], _POINTS_HEADERS)
        content_type = found.get(b"content-type", "")
        length = found.get(b"content-length", "")
        media = media_type_of(content_type)
        if not (media == "application/json" or (media == NPY and length.isdigit())):
            return False
        scope.update(child)  # route, endpoint, path_params: for the log line and handlers
        try:
            if media == NPY:
                body: bytes | bytearray = await _read_into(receive, int(length))
                points = await run_in_threadpool(inference.read_npy, body)
                loc = models.NPY_POINTS_LOC
            else:
                body = await _read_all(receive)
                document = await decode_body(body)
                validated, errors = operation.route.body_field.validate(  # type: ignore[union-attr]
                    document, {}, loc=("body",)
                )
                if errors or not isinstance(document, dict):
                    await self._fall_back(scope, receive, send, body)
                    return True
                points, loc = validated.points, models.JSON_POINTS_LOC
            response = await operation.answer(
                inference, model_id, points, loc, output, wants_npy(found.get(b"accept", ""))
            )
        except _Disconnected as gone:
            await self._fall_back(scope, receive, send, gone.args[0], disconnected=True)
            return True
        except json.JSONDecodeError:
            await self._fall_back(scope, receive, send, body)
            return True
        except Exception as exc:
            response = await self._handled(Request(scope, receive), exc)
        self._answered.inc()
        await response(scope, receive, send)
        return True

    async def _v2_infer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer a v2 infer with its own endpoint; False when FastAPI must."""
        for route in self._infer:
            match, child = route.matches(scope)
            if match is Match.FULL:
                break
        else:
            return False
        inference = self._inference(scope)
        model: str = child["path_params"]["model"]
        resource = None if inference is None else inference.ready_resource(model)
        if inference is None or resource is None:
            return False
        scope.update(child)
        found = _first(scope["headers"], _INFER_HEADERS)
        try:
            response = await v2.answer_infer(
                inference,
                model,
                child["path_params"].get("version"),
                content_type=found.get(b"content-type", ""),
                content_encoding=found.get(b"content-encoding", "identity"),
                header_length=found.get(_HEADER_LENGTH),
                read_body=partial(_read_all, receive),
                found=resource,
            )
        except Exception as exc:
            response = await self._handled(Request(scope, receive), exc)
        self._answered.inc()
        await response(scope, receive, send)
        return True

    # -- helpers ------------------------------------------------------------------------
    def _output(self, operation: _PointsOperation, query: bytes) -> str | None:
        """``?output=``'s value when the query is that alone and the value is known,
        the endpoint's default when there is no query, else None (FastAPI decides)."""
        if not query:
            return operation.default_output
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        if len(pairs) == 1 and pairs[0][0] == "output" and pairs[0][1] in operation.outputs:
            return pairs[0][1]
        return None

    async def _handled(self, request: Request, exc: Exception) -> Response:
        """The app's answer to ``exc``, from the handler Starlette's ExceptionMiddleware
        would pick (by status for an HTTPException, else by class); re-raised when none."""
        handler = None
        if isinstance(exc, HTTPException):
            handler = self._handlers.get(exc.status_code)
        for cls in type(exc).__mro__:
            if handler is not None:
                break
            handler = self._handlers.get(cls)
        if handler is None:
            raise exc
        if is_async_callable(handler):
            return await handler(request, exc)
        response: Response = await run_in_threadpool(handler, request, exc)
        return response

    async def _fall_back(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes | bytearray,
        *,
        disconnected: bool = False,
    ) -> None:
        """FastAPI's route answers, reading ``body`` first, then the rest as sent."""
        pending: list[Message] = [
            {"type": "http.request", "body": bytes(body), "more_body": disconnected}
        ]
        if disconnected:
            pending.append({"type": "http.disconnect"})

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        self._passed_on.inc()
        await self.app(scope, replay, send)


#: The headers each operation reads, by their lowercase names (as ASGI gives them).
_POINTS_HEADERS = frozenset({b"content-type", b"content-length", b"accept"})
_HEADER_LENGTH = v2.HEADER_LENGTH.lower().encode()
_INFER_HEADERS = frozenset({b"content-type", b"content-encoding", _HEADER_LENGTH})


def _first(headers: Sequence[tuple[bytes, bytes]], names: frozenset[bytes]) -> dict[bytes, str]:
    """The first value of each of ``names`` the request sends, as Starlette's
    ``request.headers.get`` gives it; absent names are absent."""
    found: dict[bytes, str] = {}
    for name, value in headers:
        if name in names and name not in found:
            found[name] = value.decode("latin-1")
    return found


async def _read_all(receive: Receive) -> bytes:
    """The whole body, as ``Request.body`` reads it (without its async generator)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected(b"".join(chunks))
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _read_into(receive: Receive, length: int) -> bytearray:
    """A body of ``length`` bytes (its Content-Length) into one buffer, chunk by chunk:
    a large ``.npy`` body is held once, never as chunks and their join. More or fewer
    bytes than declared (a server would not pass them on) are read as they come."""
    buffer = bytearray(length)
    view = memoryview(buffer)
    at = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected(bytes(view[:at]))
        chunk: bytes = message.get("body", b"")
        end = at + len(chunk)
        if end <= length:
            view[at:end] = chunk
        else:
            view.release()
            del buffer[at:]
            buffer += chunk
            view = memoryview(buffer)
        at = end
        if not message.get("more_body", False):
            view.release()
            if at < length:
                del buffer[at:]
            return buffer
