"""``inference.GRPCInferenceService``: what ``/v2`` answers, over gRPC.

Each RPC is the REST route of the same name with protobuf in place of JSON: the same
lookup, version check and predict (``service.api.v2.dataplane``), the same checks of
the tensors (``codec``, on ``service.api.v2.protocol``), the same API keys
(``service.api.security``; health and server metadata stay open, as under ``/v2``)
and the same words in every refusal (``service.api.problems.protocol_message``). The
one wrapper, ``rpc``, turns a ``ServiceError`` into the gRPC status of its HTTP status,
counts the call in Prometheus and writes its access line.

Readiness answers ``ready: false`` where ``/v2`` answers 503 or 404 (the store is
down, no such model), as Triton does: ``tritonclient.grpc`` then says False, as
``tritonclient.http`` does for those statuses.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any, TypeVar

import grpc
from starlette.concurrency import run_in_threadpool

from service.api.metrics import Metrics
from service.api.middleware import access_log, request_id_of, request_id_var, write_access_line
from service.api.problems import log_server_fault, protocol_message, report_internal_error
from service.api.security import KeyRing, check_may_call, presented_keys, role_of
from service.api.v2 import dataplane, protocol
from service.errors import NotFound, ServiceError, StoreUnavailable
from service.grpc import codec
from service.grpc.generated import open_inference_grpc_pb2 as pb
from service.grpc.generated import open_inference_grpc_pb2_grpc as pb_grpc
from service.services import Services

SERVICE = "inference.GRPCInferenceService"

#: The gRPC status of each HTTP status a ``ServiceError`` carries.
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[["Servicer", Request, grpc.aio.ServicerContext], Awaitable[Response]]


def status_code(http_status: int) -> grpc.StatusCode:
    """The gRPC status of a ``ServiceError``'s HTTP status."""
    default = grpc.StatusCode.INTERNAL if http_status >= 500 else grpc.StatusCode.UNKNOWN
    return STATUS_CODES.get(http_status, default)


def _headers(metadata: Iterable[tuple[str, str | bytes]] | None) -> list[tuple[bytes, bytes]]:
    """A call's metadata as ASGI-style header pairs (gRPC keys are lower-case already),
    for the functions that read ``x-api-key``, ``authorization`` and ``x-request-id``."""
    return [
        (key.encode("latin-1"), value if isinstance(value, bytes) else value.encode("latin-1"))
        for key, value in metadata or ()
    ]


def rpc(operation: tuple[str, str] | None) -> Callable[[Handler[Any, Any]], Handler[Any, Any]]:
    """An RPC of the service. ``operation``: the REST method and route name whose API
    key rules it follows (``("POST", "model_infer")``), None for an open one.

    Around the handler: the key check, the status of any ``ServiceError`` (its message
    as ``/v2`` words it), a 500's error id, the Prometheus count and latency, and one
    access log line, as ``RequestContextMiddleware`` does for HTTP.
    """

    def decorate(handler: Handler[Any, Any]) -> Handler[Any, Any]:
        name = handler.__name__
        route = f"/{SERVICE}/{name}"

        @functools.wraps(handler)
        async def call(self: Servicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            headers = _headers(context.invocation_metadata())
            token = request_id_var.set(request_id_of({"headers": headers}))
            code, detail = grpc.StatusCode.OK, ""
            try:
                if operation is not None:
                    self.authorize(headers, *operation, route)
                return await handler(self, request, context)
            except ServiceError as exc:
                code, detail = status_code(exc.status), protocol_message(exc)
                log_server_fault("gRPC", route, exc)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED  # the client went away, or its deadline
                raise
            except Exception as exc:
                code = grpc.StatusCode.INTERNAL
                detail = report_internal_error("gRPC", route, exc)[1]
            finally:
                # Before the answer goes out (``abort`` sends it at once): a client that
                # has its answer finds the call counted.
                self.record(name, route, code, time.perf_counter() - start, context.peer())
                request_id_var.reset(token)
            await context.abort(code, detail)

        return call

    return decorate


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    """The protocol's RPCs over the app's services, keys and metrics."""

    def __init__(self, services: Services, keyring: KeyRing, metrics: Metrics) -> None:
        self._services = services
        self._keyring = keyring
        self._metrics = metrics

    def authorize(
        self, headers: list[tuple[bytes, bytes]], method: str, operation: str, route: str
    ) -> None:
        """401 without a valid key (in ``x-api-key`` or ``authorization: Bearer``), 403
        when a read-only key may not call ``operation``; nothing when keys are off."""
        if self._keyring.enabled:
            role = role_of(self._keyring, presented_keys(headers))
            check_may_call(role, method, operation, route)

    def record(
        self, name: str, route: str, code: grpc.StatusCode, elapsed: float, peer: str
    ) -> None:
        self._metrics.grpc_requests.labels(name, code.name).inc()
        self._metrics.grpc_latency.labels(name).observe(elapsed)
        if access_log.isEnabledFor(logging.INFO):
            fields = {
                "method": "gRPC",
                "route": route,
                "path": route,
                "status": code.name,
                "duration_ms": round(elapsed * 1000, 3),
                "client": peer,
            }
            write_access_line("gRPC", route, code.name, fields)

    # -- health and server metadata: open, as /v2/health and /v2 are ---------------------
    @rpc(None)
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @rpc(None)
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        """Ready when a write round-trip to the model store succeeds, like ``/readyz``."""
        try:
            await run_in_threadpool(self._services.catalogue.check_store)
        except StoreUnavailable:
            return pb.ServerReadyResponse(ready=False)
        return pb.ServerReadyResponse(ready=True)

    @rpc(None)
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return codec.server_metadata(dataplane.server_metadata())

    # -- models: behind the API key, as /v2/models is ------------------------------------
    @rpc(("GET", "model_ready"))
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        """Ready when the model (and version) exists: stored models are always ready."""
        try:
            await dataplane.find_model(
                self._services.inference, request.name, request.version or None
            )
        except NotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @rpc(("GET", "model_metadata"))
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        inference = self._services.inference
        resource = await dataplane.find_model(inference, request.name, request.version or None)
        return codec.model_metadata(protocol.model_metadata(request.name, resource))

    @rpc(("POST", "model_infer"))
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        """``/v2/models/{model}/infer``: labels equal scikit-learn's ``predict``,
        probabilities its ``predict_proba``, distances its ``transform``."""
        inference = self._services.inference
        model = request.model_name
        resource = await dataplane.find_model(inference, model, request.model_version or None)
        decode = partial(
            codec.parse_request,
            request,
            width=int(resource["n_features"]),
            outputs=protocol.output_names(resource["algorithm"]),
        )
        decoded = await dataplane.run_by_size(decode, request.ByteSize())
        # A refusal of the points (a limit, a result that overflowed) names their field.
        loc = ("raw_input_contents", 0) if request.raw_input_contents else ("inputs", 0, "contents")
        results = await dataplane.predict(inference, resource["id"], decoded.points, loc)
        encode = partial(
            codec.encode_response,
            model_name=model,
            model_version=resource["id"],
            request_id=decoded.id,
            outputs=decoded.outputs,
            results=results,
        )
        return await dataplane.run_by_size(encode, sum(a.nbytes for a in results.values()))
