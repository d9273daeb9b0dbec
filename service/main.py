"""The app factory: ``create_app(settings)`` builds everything; nothing runs at import.

Servers call it: ``python -m service``, or ``uvicorn service.main:create_app --factory``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from service import __version__
from service.api import docs, problems
from service.api.explorer import routes as explorer
from service.api.limits import BodyLimitMiddleware
from service.api.metrics import Metrics
from service.api.middleware import RequestContextMiddleware, configure_logging
from service.api.problems import is_protocol_path
from service.api.responses import PROBLEM_EXAMPLES, PROBLEM_HEADERS
from service.api.routes import (
    comparisons,
    datasets,
    health,
    jobs,
    models,
    plots,
    portable,
    selection,
)
from service.api.routing import route_methods
from service.api.security import AuthDep, load_keyring
from service.api.v2 import routes as v2
from service.config import Settings
from service.services import Services, build_services

DESCRIPTION = """
Train and serve scikit-learn's **GaussianMixture** and **KMeans** over HTTP, with
exactly the numbers scikit-learn gives in-process.

Start with `POST /v1/models` and the *seed-blobs* example: the notebook's
`make_blobs(n_samples=200, centers=4, cluster_std=1.6, random_state=10)` fitted by a
4-component mixture. Every error is RFC 9457 `application/problem+json`.

To look at the data and the fitted components in a browser, open
[`/explorer`](/explorer): it generates or uploads data, fits as a job, and draws the
points, means, covariance ellipses and a BIC/AIC curve, using only these routes.
"""


def _operation_id(route: APIRoute) -> str:
    """Operation ids are the route functions' names: stable across refactors of paths."""
    return route.name


TAGS: list[dict[str, Any]] = [
    {
        "name": "models",
        "description": (
            "Fit a mixture or k-means and store it; then read, predict with, score points "
            "against, sample from, export, import and delete it."
        ),
    },
    {
        "name": "datasets",
        "description": (
            "Synthetic data (`make_blobs`, explicit Gaussians, moons, circles) to look at "
            "before fitting it: the same generators `data.generator` takes everywhere."
        ),
    },
    {
        "name": "plots",
        "description": "Pictures (PNG or SVG) of models and data, and covariance ellipses.",
    },
    {
        "name": "analysis",
        "description": (
            "Choose the number of components by BIC or AIC, and compare algorithms on the "
            "same data. Nothing is stored unless asked."
        ),
    },
    {
        "name": "jobs",
        "description": (
            "Long work answered at once (`wait: false`, or a fit estimated to be long): "
            "follow a job's progress, read its result, or cancel it."
        ),
    },
    {"name": v2.TAG, "description": v2.TAG_DESCRIPTION},
    {
        "name": "operations",
        "description": "Liveness, readiness and Prometheus metrics; never behind an API key.",
    },
]

#: Errors some middleware or dependency can answer on many operations, documented
#: centrally so that every operation lists every status it can really return.
_AUTH_ERRORS = {
    "401": "Missing or invalid API key.",
    "403": "A read-only API key tried to change something.",
}
_BODY_ERRORS = {
    "413": "Request larger than a configured limit.",
    "415": "The body is not JSON (send Content-Type: application/json).",
}
_BUSY_ERROR = {
    "429": (
        "Every fit slot of this server process is busy (GMM_MAX_CONCURRENT_FITS) and the "
        "queue of requests waiting for one is full (GMM_FIT_QUEUE_LENGTH), or this "
        "request waited longer than GMM_FIT_QUEUE_SECONDS: retry after `Retry-After` "
        "seconds, or send the work as a job (`wait: false`)."
    )
}

#: Operations that hold a fit slot while they run, so they answer 429 when none is free
#: (a test in tests/test_openapi.py finds them by filling the slots, and checks this).
FITTING_OPERATIONS = frozenset(
    {"create_model", "select_model", "plot_model_selection", "compare_algorithms"}
)


def _problem_ref(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _protocol_error_ref(status: str, description: str) -> dict[str, Any]:
    """An error of a ``/v2`` route: the Open Inference Protocol's ``{"error": ...}``."""
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProtocolError"}}},
    }
    if int(status) in PROBLEM_HEADERS:
        response["headers"] = copy.deepcopy(PROBLEM_HEADERS[int(status)])
    return response


def _document_problems(status: str, response: dict[str, Any]) -> None:
    """Errors as application/problem+json, with examples of their own ``type``."""
    content = response.get("content", {})
    if "application/json" in content:
        content["application/problem+json"] = content.pop("application/json")
    media = content.get("application/problem+json")
    if media is not None and int(status) in PROBLEM_EXAMPLES:
        media.setdefault("examples", copy.deepcopy(PROBLEM_EXAMPLES[int(status)]))
    if int(status) in PROBLEM_HEADERS:
        response.setdefault("headers", copy.deepcopy(PROBLEM_HEADERS[int(status)]))


def _problem_json_openapi(app: FastAPI) -> Any:
    """Build the spec once: errors under application/problem+json, shared errors listed,
    and API-key security declared only when keys are configured (as it is enforced)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = FastAPI.openapi(app)
        keyed = app.state.keyring.enabled
        components = schema.setdefault("components", {})
        if not keyed:
            components.pop("securitySchemes", None)
        # The v2 infer body is read raw (it may be binary): its JSON form's schemas.
        schemas = components.setdefault("schemas", {})
        for name, definition in v2.component_schemas().items():
            assert schemas.setdefault(name, definition) == definition, name
        for route, path in schema.get("paths", {}).items():
            protocol = is_protocol_path(route)
            for operation in path.values():
                # Every router behind AuthDep declares it; without keys nothing is asked.
                extra = dict(_AUTH_ERRORS) if keyed and "security" in operation else {}
                if not keyed:
                    operation.pop("security", None)
                responses = operation.setdefault("responses", {})
                if protocol:  # FastAPI's default 422: the protocol answers 400 instead
                    responses.pop("422", None)
                if "requestBody" in operation:
                    extra.update(_BODY_ERRORS)
                if operation.get("operationId") in FITTING_OPERATIONS:
                    extra.update(_BUSY_ERROR)
                for status, description in extra.items():
                    ref = _protocol_error_ref(status, description) if protocol else None
                    responses.setdefault(status, ref or _problem_ref(description))
                for status, response in responses.items():
                    if status[0] in "45" and not protocol:
                        _document_problems(status, response)
        app.openapi_schema = schema
        return schema

    return openapi


async def _build_lazy_state(app: FastAPI) -> None:
    """Build the OpenAPI document and the routers' matching state before serving.

    FastAPI builds both lazily (on a router's first request, on the first 405 or
    /openapi.json), inside ``warnings.catch_warnings()``. That context swaps the
    process-wide warning filters, so building them while a job's fit runs (and captures
    its warnings) lets either side clobber the other's filters: a ConvergenceWarning
    became an exception under the test suite's ``error`` filter. A request for a path no
    route has walks every router, so everything is built here, before any job starts.
    """
    app.openapi()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/.well-known/gmm-service-warm-up",
        "raw_path": b"/.well-known/gmm-service-warm-up",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "app": app,
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    with contextlib.suppress(Exception):  # a miss raises HTTPException(404) here
        await app.router(scope, receive, send)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """The app for ``settings`` (default: from the environment), serving ``services``
    (default: built from the settings at start-up, and closed at shutdown)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Both read the store, which may be across a network: never on the event loop.
        app.state.services = services or await run_in_threadpool(build_services, settings)
        await _build_lazy_state(app)
        # No job is left `running` by a process that died: say it failed, and why.
        recovered = await run_in_threadpool(app.state.services.jobs.recover)
        if recovered:
            logging.getLogger("service.jobs").warning(
                "marked %d interrupted job(s) failed", recovered
            )
        try:
            yield
        finally:
            if services is None:
                app.state.services.close()
            app.state.metrics.close()

    app = FastAPI(
        title="gmm-service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        openapi_tags=TAGS,
        # Served by service.api.docs from local files instead of FastAPI's CDN pages.
        docs_url=None,
        redoc_url=None,
        swagger_ui_parameters={"tryItOutEnabled": True, "displayRequestDuration": True},
    )
    app.state.settings = settings
    app.state.metrics = Metrics(settings.metrics_dir)
    app.state.keyring = load_keyring(settings)
    configure_logging(settings.log_json)
    problems.install(app)
    docs.install(app)
    explorer.install(app)
    app.include_router(health.router)
    app.include_router(models.router, dependencies=[AuthDep])
    app.include_router(datasets.router, dependencies=[AuthDep])
    app.include_router(plots.router, dependencies=[AuthDep])
    app.include_router(portable.router, dependencies=[AuthDep])
    app.include_router(selection.router, dependencies=[AuthDep])
    app.include_router(comparisons.router, dependencies=[AuthDep])
    app.include_router(jobs.router, dependencies=[AuthDep])
    app.include_router(v2.server_router)
    app.include_router(v2.router, dependencies=[AuthDep])
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        uploads=datasets.UPLOAD_ROUTES,
        max_upload_bytes=settings.max_upload_bytes,
    )
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            # PATCH renames a model: a method left out here fails the browser's preflight.
            allow_methods=route_methods(app.routes),
            # Inference-Header-Content-Length: the v2 binary tensor framing, both ways.
            allow_headers=[
                "Content-Type",
                "Authorization",
                "X-API-Key",
                "X-Request-ID",
                v2.HEADER_LENGTH,
            ],
            expose_headers=["Location", "X-Request-ID", "Retry-After", v2.HEADER_LENGTH],
        )
    # Outermost: every response, even a 413 or a CORS preflight, gets an id and a log line.
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    app.openapi = _problem_json_openapi(app)  # type: ignore[method-assign]
    return app
