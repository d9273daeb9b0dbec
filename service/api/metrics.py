"""Prometheus metrics: requests by route template and status, fits by algorithm.

``service.api.middleware`` records the request metrics; routes record fit metrics.

Each app gets its own registry so that tests building many apps do not collide.
With several uvicorn workers each worker reports its own counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self.fit_iterations = Histogram(
            "gmm_fit_iterations",
            "EM or Lloyd iterations a stored fit took (n_iter_).",
            ["algorithm"],
            registry=self.registry,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
        )
        self.store_bytes = Gauge(
            "gmm_store_artifact_bytes",
            "Bytes of model artifacts in the store.",
            registry=self.registry,
        )
        self.cache_misses = Gauge(
            "gmm_model_cache_misses",
            "Model loads that read and verified an artifact.",
            registry=self.registry,
        )
        self.fits_rejected_busy = Counter(
            "gmm_fits_rejected_busy_total",
            "Fitting requests answered 429.",
            registry=self.registry,
        )
        self.fits_in_flight = Gauge(
            "gmm_fits_in_flight", "Fits running now.", registry=self.registry
        )
