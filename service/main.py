"""The app factory: ``create_app(settings)`` builds everything; nothing runs at import.

Servers call it: ``python -m service``, or ``uvicorn service.main:create_app --factory``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from service import __version__
from service.api import docs, openapi, problems
from service.api.explorer import routes as explorer
from service.api.hotpath import HotPath
from service.api.limits import BodyLimitMiddleware
from service.api.metrics import Metrics
from service.api.middleware import RequestContextMiddleware, configure_logging
from service.api.openapi import DESCRIPTION, TAGS
from service.api.openapi import operation_id as _operation_id
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
from service.api.security import ApiKeyMiddleware, AuthDep, load_keyring
from service.api.v2 import routes as v2
from service.config import Settings
from service.grpc import require_extra
from service.services import Services, build_services


async def _build_lazy_state(app: FastAPI) -> None:
    """Build the OpenAPI document and the routers' matching state before serving.

    The document is built by the process's first app and copied by the others
    (``service.api.openapi``); the matching state is the app's own (about 60 ms).
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


class ServiceApp(FastAPI):
    """FastAPI with the service's own ASGI layers (``edge``) outside Starlette's.

    Layers added with ``add_middleware`` run inside Starlette's and FastAPI's own
    outermost ones (an error middleware, telemetry, a body-size layer): about a tenth
    of a one-point predict's time on the hot path (``service.api.hotpath``), for
    nothing the service uses, as ``RequestContextMiddleware`` answers every unexpected
    error itself. So an HTTP request passes ``edge`` first, which ends in FastAPI's own
    app for whatever the hot path does not answer; the lifespan goes to FastAPI.
    """

    edge: ASGIApp | None = None

    def build_middleware_stack(self) -> ASGIApp:
        """FastAPI's stack without Starlette's outermost error layer: it would answer an
        unexpected error too, then re-raise it, and uvicorn closes a connection whose
        request raised. ``RequestContextMiddleware``, outside, answers it and keeps the
        connection for the client's next request."""
        stack = super().build_middleware_stack()
        return stack.app if isinstance(stack, ServerErrorMiddleware) else stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.edge is not None and scope["type"] == "http":
            scope["app"] = self
            await self.edge(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _edge(app: ServiceApp, settings: Settings, guarded: list[BaseRoute]) -> ASGIApp:
    """The layers every HTTP request passes before FastAPI's app, built from the inside
    out: the last one here runs first (docs/architecture.md lists them)."""
    layer: ASGIApp = partial(FastAPI.__call__, app)
    if settings.fast_path:
        # Innermost of the service's layers: everything outside it (request id, log
        # line, metrics, CORS, keys, body limits) runs for its answers too.
        layer = HotPath(layer, fastapi=app, metrics=app.state.metrics)
    layer = BodyLimitMiddleware(
        layer,
        max_body_bytes=settings.max_body_bytes,
        uploads=datasets.UPLOAD_ROUTES,
        max_upload_bytes=settings.max_upload_bytes,
        read_timeout=settings.request_read_timeout_seconds,
        min_bytes_per_second=settings.request_min_bytes_per_second,
    )
    if app.state.keyring.enabled:
        # Outside the body limit, so that no byte of a body is read (nor a 413 or 400
        # answered) before the key is checked; inside CORS, so that a browser can read
        # the 401.
        layer = ApiKeyMiddleware(layer, keyring=app.state.keyring, routes=guarded)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        layer = CORSMiddleware(
            layer,
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
    return RequestContextMiddleware(layer, metrics=app.state.metrics)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """The app for ``settings`` (default: from the environment), serving ``services``
    (default: built from the settings at start-up, and closed at shutdown)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.grpc_port is not None:
            # Before anything starts, and here rather than in the factory: uvicorn stops
            # (every worker) on a failed start-up, but restarts workers whose factory raised.
            require_extra()
        # Both read the store, which may be across a network: never on the event loop.
        app.state.services = services or await run_in_threadpool(build_services, settings)
        await _build_lazy_state(app)
        # No job is left `running` by a process that died: say it failed, and why.
        recovered = await run_in_threadpool(app.state.services.jobs.recover)
        if recovered:
            logging.getLogger("service.jobs").warning(
                "marked %d interrupted job(s) failed", recovered
            )
        grpc_server = None
        try:
            if settings.grpc_port is not None:
                # Imported here: grpcio is the `grpc` extra (checked above).
                from service.grpc import server as grpc_transport

                grpc_server = await grpc_transport.start(
                    settings, app.state.services, app.state.keyring, app.state.metrics
                )
            # What start-up built (modules, the app, its OpenAPI document, the services:
            # a quarter of a million objects) lives as long as the process. Out of the
            # garbage collector's sight, a full collection takes about 1 ms instead of
            # about 190 ms, which every request in flight waited for: the p99 of predict.
            # (No collection first: it would cost each start a scan of the whole heap.)
            gc.freeze()
            yield
        finally:
            gc.unfreeze()  # an app built again in this process (tests) starts afresh
            if grpc_server is not None:  # in-flight calls end while the services live
                await grpc_transport.stop(grpc_server)
            if services is None:  # joins job threads and closes database connections
                await run_in_threadpool(app.state.services.close)
            app.state.metrics.close()

    app = ServiceApp(
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
    v1 = [
        models.router,
        datasets.router,
        plots.router,
        portable.router,
        selection.router,
        comparisons.router,
        jobs.router,
    ]
    for router in v1:
        app.include_router(router, dependencies=[AuthDep])
    app.include_router(v2.server_router)
    app.include_router(v2.router, dependencies=[AuthDep])
    # Every route of these needs a key when keys are configured (ApiKeyMiddleware).
    guarded = [route for router in [*v1, v2.router] for route in router.routes]
    app.edge = _edge(app, settings, guarded)
    app.openapi = openapi.openapi_method(app)  # type: ignore[method-assign]
    return app
