"""The app factory: ``create_app(settings)`` builds everything; nothing runs at import.

``app = create_app()`` at the bottom is what ``uvicorn service.main:app`` serves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from service import __version__
from service.api import problems
from service.api.limits import BodyLimitMiddleware
from service.api.metrics import Metrics, MetricsMiddleware
from service.api.routes import datasets, health, models
from service.config import Settings
from service.domain.service import ModelService
from service.store.local import LocalModelStore

DESCRIPTION = """
Train and serve scikit-learn's **GaussianMixture** and **KMeans** over HTTP, with
exactly the numbers scikit-learn gives in-process.

Start with `POST /v1/models` and the *seed-blobs* example: the notebook's
`make_blobs(n_samples=200, centers=4, cluster_std=1.6, random_state=10)` fitted by a
4-component mixture. Every error is RFC 9457 `application/problem+json`.
"""


def _operation_id(route: APIRoute) -> str:
    """Operation ids are the route functions' names: stable across refactors of paths."""
    return route.name


def _problem_json_openapi(app: FastAPI) -> Any:
    """Build the spec once, filing every error response under application/problem+json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = FastAPI.openapi(app)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if status[0] in "45" and "application/json" in content:
                        content["application/problem+json"] = content.pop("application/json")
        app.openapi_schema = schema
        return schema

    return openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = LocalModelStore(
            settings.store_dir,
            secret_key=settings.secret_key.get_secret_value() if settings.secret_key else None,
            cache_size=settings.cache_size,
        )
        app.state.service = ModelService(store, settings)
        yield

    app = FastAPI(
        title="gmm-service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        swagger_ui_parameters={"tryItOutEnabled": True, "displayRequestDuration": True},
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    problems.install(app)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(datasets.router)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.openapi = _problem_json_openapi(app)  # type: ignore[method-assign]
    return app


app = create_app()
