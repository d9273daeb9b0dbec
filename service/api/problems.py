"""Every error as RFC 9457 problem+json, decided in this one place.

Except under ``/v2``: the Open Inference Protocol's clients read ``{"error": "..."}``
(tritonclient raises its message), so there every error takes that form, from the
same handlers. A domain ``InvalidInput`` (422) is the protocol's 400 there.
"""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus
from typing import Any, get_args

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from service.api.responses import NumpyJSONResponse, ProblemResponse
from service.domain.training.estimators import ALGORITHMS
from service.errors import PROBLEM_BASE, ServiceError
from service.schemas.data import GENERATOR_KINDS
from service.schemas.models import AlgorithmName

log = logging.getLogger("service.errors")

#: Discriminated unions put the tag in pydantic's error location
#: (``["body", "kmeans", "params", ...]``); clients expect the JSON path instead.
_UNION_TAGS = frozenset(ALGORITHMS) | frozenset(GENERATOR_KINDS)


def problem(
    status: int,
    detail: str,
    *,
    type_: str = "about:blank",
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
) -> ProblemResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    return ProblemResponse(body, status_code=status, headers=headers)


def is_protocol_path(path: str) -> bool:
    """Whether ``path`` is under ``/v2``, whose errors follow the Open Inference Protocol."""
    return path == "/v2" or path.startswith("/v2/")


def protocol_error(
    status: int, message: str, headers: dict[str, str] | None = None
) -> NumpyJSONResponse:
    """``{"error": message}`` as the protocol answers errors; 422 becomes its 400."""
    return NumpyJSONResponse(
        {"error": message}, status_code=400 if status == 422 else status, headers=headers
    )


#: Sent with an answer after which the connection cannot serve another request (the
#: rest of a request's body was not read): uvicorn then closes it.
CLOSE = {"Connection": "close"}


def body_timeout(path: str, detail: str) -> ProblemResponse | NumpyJSONResponse:
    """The 408 of a request body that arrived too slowly (``service.api.limits``)."""
    if is_protocol_path(path):
        return protocol_error(408, detail, CLOSE)
    return problem(
        408, detail, type_=PROBLEM_BASE + "request-timeout", title="Request timeout", headers=CLOSE
    )


def _where(loc: list[Any]) -> str:
    """``["inputs", 0, "data", 3]`` as ``inputs[0].data[3]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _clean_loc(loc: tuple[Any, ...] | list[Any], body: Any = None) -> list[str | int]:
    """pydantic's loc as a JSON path into the request.

    Unions add labels of their own to ``loc`` (the tag ``"kmeans"``, or
    ``"constrained-int"``, ``"literal['auto']"``); walking the body alongside the loc
    keeps exactly the parts that are keys or indexes in it.
    """
    if body is None or not loc or loc[0] != "body":
        return [p for i, p in enumerate(loc) if not (i > 0 and p in _UNION_TAGS)]
    out: list[str | int] = [loc[0]]
    node: Any = body
    for i, part in enumerate(loc[1:], start=1):
        if isinstance(part, int):
            out.append(part)
            node = node[part] if isinstance(node, list) and -len(node) <= part < len(node) else None
        elif isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and i == len(loc) - 1:
            out.append(part)  # a missing or unknown field
    return out


#: The values each field that picks a body's schema may take: what a body without it
#: is told (pydantic's own message, "Unable to extract tag using discriminator", names
#: neither the field's being required nor its values).
_TAGS: dict[str, tuple[str, ...]] = {
    "algorithm": get_args(AlgorithmName),
    "kind": GENERATOR_KINDS,
}


def _tag_message(kind: str, field: str, ctx: dict[str, Any]) -> str | None:
    values = _TAGS.get(field)
    if values is None:
        return None
    listed = ", ".join(repr(v) for v in values)
    if kind == "union_tag_not_found":
        return f"{field!r} is required: one of {listed}."
    return f"{field} {ctx.get('tag')!r} is not known: use one of {listed}."


def _validation_items(exc: RequestValidationError) -> list[dict[str, Any]]:
    items = []
    body = getattr(exc, "body", None)
    for err in exc.errors():
        raw = tuple(err.get("loc", ()))
        loc = _clean_loc(raw, body if raw[:1] == ("body",) else None)
        msg = str(err.get("msg", "Invalid value"))
        kind = str(err.get("type", "value_error"))
        ctx = err.get("ctx") or {}
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            field = str(ctx.get("discriminator", "")).strip("'\"")
            if field:
                loc.append(field)
            msg = _tag_message(kind, field, ctx) or msg
        if kind == "json_invalid" and ctx.get("error"):
            msg = f"{ctx['error']} at character {loc[-1]}"
        if kind == "extra_forbidden":
            msg = f"Unknown field {loc[-1]!r}: it is not a parameter this endpoint accepts."
        items.append({"loc": loc, "msg": msg, "type": kind})
    return items


async def _on_validation(
    request: Request, exc: RequestValidationError
) -> ProblemResponse | NumpyJSONResponse:
    resources = _resources_at(request)
    if resources and getattr(request.scope.get("route"), "path", None) not in resources:
        # GET /v1/models/import reached GET /v1/models/{model_id} with the id "import":
        # the resource exists, only not with this method.
        return _method_not_allowed(request, resources)
    items = _validation_items(exc)
    if is_protocol_path(request.url.path):
        first = items[0] if items else {"loc": [], "msg": "invalid request"}
        return protocol_error(400, f"{_where(first['loc'])}: {first['msg']}")
    if any(i["type"] == "json_invalid" for i in items):
        return problem(
            400,
            "The request body is not valid JSON: " + "; ".join(i["msg"] for i in items),
            type_=PROBLEM_BASE + "malformed-json",
            title="Malformed JSON",
            errors=items,
        )
    first = items[0] if items else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
    return problem(
        422,
        f"{where}: {first['msg']}{more}",
        type_=PROBLEM_BASE + "validation-error",
        title="Request validation failed",
        errors=items,
    )


async def _on_service_error(
    request: Request, exc: ServiceError
) -> ProblemResponse | NumpyJSONResponse:
    log_server_fault(request.method, request.url.path, exc)
    return service_error_response(request.url.path, exc)


def log_server_fault(method: str, path: str, exc: ServiceError) -> None:
    """A 5xx ``ServiceError`` (the server's fault: a damaged artifact, a store down) is
    logged; a client's mistake is only answered."""
    if exc.status >= 500:
        log.error("service error on %s %s: %s", method, path, exc.detail)


def protocol_message(exc: ServiceError) -> str:
    """``exc`` in the Open Inference Protocol's words: its detail, led by the place in
    the request it is about (``inputs[0].data[3]: ...``). The ``error`` of ``/v2``
    answers, and the status message of the gRPC transport's."""
    if exc.errors and len(exc.errors) == 1 and exc.errors[0].get("loc"):
        return f"{_where(exc.errors[0]['loc'])}: {exc.detail}"
    return exc.detail


def service_error_response(path: str, exc: ServiceError) -> ProblemResponse | NumpyJSONResponse:
    """``exc`` as the answer at ``path``; also for ASGI layers that answer before routing."""
    if is_protocol_path(path):
        return protocol_error(exc.status, protocol_message(exc), exc.headers)
    return problem(
        exc.status,
        exc.detail,
        type_=exc.type,
        title=exc.title,
        errors=exc.errors,
        headers=exc.headers,
    )


def _resources_at(request: Request) -> dict[str, set[str]]:
    """The documented path templates naming this request's path, with their methods.

    A literal path (``/v1/models/import``) hides a template that happens to match it
    too (``/v1/models/{model_id}``): the literal one is the resource the client named.
    Read from the OpenAPI document (built once), which lists every method of a path
    together, where the router keeps one route per method.
    """
    matching: dict[str, set[str]] = {}
    for template, operations in request.app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(request.url.path):
            methods = {method.upper() for method in operations}
            matching[template] = methods | ({"HEAD"} if "GET" in methods else set())
    literal = {t: m for t, m in matching.items() if "{" not in t}
    return literal or matching


def _method_not_allowed(
    request: Request, resources: dict[str, set[str]]
) -> ProblemResponse | NumpyJSONResponse:
    """``Allow`` names every method of the resource (starlette's names one route's)."""
    allowed = sorted({method for methods in resources.values() for method in methods})
    detail = f"{request.method} is not allowed on {request.url.path}."
    headers = {"Allow": ", ".join(allowed)}
    if is_protocol_path(request.url.path):
        return protocol_error(405, detail, headers)
    return problem(405, detail, headers=headers)


async def _on_http_error(
    request: Request, exc: StarletteHTTPException
) -> ProblemResponse | NumpyJSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No route matches {request.url.path}."
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}."
        if resources := _resources_at(request):
            return _method_not_allowed(request, resources)
    if exc.status_code == 408:
        return body_timeout(request.url.path, detail)
    if is_protocol_path(request.url.path):
        return protocol_error(exc.status_code, detail, getattr(exc, "headers", None))
    if exc.status_code == 413:
        return problem(
            413, detail, type_=PROBLEM_BASE + "payload-too-large", title="Payload too large"
        )
    return problem(exc.status_code, detail, headers=getattr(exc, "headers", None))


def report_internal_error(method: str, path: str, exc: Exception) -> tuple[str, str]:
    """A bug's traceback logged under a new id; the id, and the detail that quotes it
    (nothing of the exception goes to the client)."""
    error_id = uuid.uuid4().hex
    log.error("unhandled error %s on %s %s", error_id, method, path, exc_info=exc)
    return error_id, f"The server failed to handle this request; quote error id {error_id}."


def internal_error(method: str, path: str, exc: Exception) -> ProblemResponse | NumpyJSONResponse:
    """The 500 of a bug: its traceback logged under an id the answer quotes, and nothing
    of the exception in the answer itself."""
    error_id, detail = report_internal_error(method, path, exc)
    if is_protocol_path(path):
        return protocol_error(500, detail)
    return problem(
        500,
        detail,
        type_=PROBLEM_BASE + "internal-error",
        title="Internal server error",
        instance=f"urn:gmm-service:error:{error_id}",
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(ServiceError, _on_service_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http_error)  # type: ignore[arg-type]
    # Unexpected errors: RequestContextMiddleware answers them (``internal_error``),
    # with the request's headers, and keeps the connection.


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry of a route: each listed status as problem+json."""
    from service.schemas.common import Problem

    descriptions = {
        400: "Malformed JSON.",
        404: "Unknown model id.",
        413: "Request larger than a configured limit.",
        422: "Invalid input, named by `errors[].loc`.",
        500: "Server fault, such as a stored artifact failing its integrity check.",
        501: "The server was installed without the optional extra this needs (named in `detail`).",
        503: "The model store is unavailable.",
        507: "The store holds GMM_STORE_MAX_BYTES: nothing more is written until space is freed.",
    }
    return {
        # ``service.api.openapi`` files these under application/problem+json in the spec.
        s: {"model": Problem, "description": descriptions.get(s, HTTPStatus(s).phrase)}
        for s in statuses
    }
