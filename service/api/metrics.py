"""Prometheus metrics: requests by route template and status, fits by algorithm.

Each app gets its own registry so that tests building many apps do not collide.
With several uvicorn workers each worker reports its own counters.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gmm_http_requests_total",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gmm_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["method", "route"],
            registry=self.registry,
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
                120,
            ),
        )
        self.fits = Counter(
            "gmm_fits_total",
            "Models fitted, by algorithm and outcome.",
            ["algorithm", "outcome"],
            registry=self.registry,
        )
        self.fit_seconds = Histogram(
            "gmm_fit_duration_seconds",
            "Time spent inside sklearn's fit.",
            ["algorithm"],
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
        )
        self.store_models = Gauge(
            "gmm_store_models", "Models in the store.", registry=self.registry
        )
        self.cache_hits = Gauge(
            "gmm_model_cache_hits",
            "Model loads served from this worker's cache.",
            registry=self.registry,
        )
        self.fits_in_flight = Gauge(
            "gmm_fits_in_flight", "Fits running now.", registry=self.registry
        )


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)
