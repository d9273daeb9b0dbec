"""Prometheus metrics: requests by route template and status, fits by algorithm.

``service.api.middleware`` records the request metrics, ``service.grpc.servicer`` the
gRPC calls'; routes record fit metrics.

Each app gets its own registry so that tests building many apps do not collide.
With several uvicorn workers (``metrics_dir`` set), prometheus-client's multiprocess
mode keeps every worker's values in files under that folder, and a scrape adds them
up: counters and histograms are summed, gauges say how they combine
(``multiprocess_mode``), so no figure depends on which worker answered.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

#: Buckets of the request latency histograms, HTTP's and gRPC's alike, in seconds.
LATENCY_BUCKETS = (
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
)


class Metrics:
    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        if multiprocess_dir is not None and "Mmaped" not in values.ValueClass.__name__:
            raise RuntimeError(
                "GMM_METRICS_DIR is set but prometheus-client is not in multiprocess mode: "
                "set PROMETHEUS_MULTIPROC_DIR to the same folder before the service starts "
                "(`python -m service` does this itself)."
            )
        self.multiprocess_dir = multiprocess_dir
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
            buckets=LATENCY_BUCKETS,
        )
        # The Open Inference Protocol over gRPC (service.grpc), by RPC and status code.
        self.grpc_requests = Counter(
            "gmm_grpc_requests_total",
            "gRPC calls answered.",
            ["method", "code"],
            registry=self.registry,
        )
        self.grpc_latency = Histogram(
            "gmm_grpc_request_duration_seconds",
            "Time to answer a gRPC call.",
            ["method"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.fast_path = Counter(
            "gmm_fast_path_requests_total",
            "Predict, score and v2 infer requests, by what answered them: the hot path "
            "(answered) or FastAPI's route (passed_on: a model not in memory, another "
            "content type, a body the schema refuses, ...).",
            ["outcome"],
            registry=self.registry,
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
            "gmm_store_models",
            "Models in the store.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.cache_hits = Gauge(
            "gmm_model_cache_hits",
            "Model loads served from a worker's cache (summed over workers).",
            registry=self.registry,
            multiprocess_mode="sum",
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
            multiprocess_mode="mostrecent",
        )
        self.cache_misses = Gauge(
            "gmm_model_cache_misses",
            "Model loads that read and verified an artifact (summed over workers).",
            registry=self.registry,
            multiprocess_mode="sum",
        )
        self.fits_rejected_busy = Counter(
            "gmm_fits_rejected_busy_total",
            "Fitting requests answered 429.",
            registry=self.registry,
        )
        self.fits_in_flight = Gauge(
            "gmm_fits_in_flight",
            "Fits running now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    def render(self) -> bytes:
        """The text exposition: this app's registry, or every worker's files added up."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.multiprocess_dir))
        return generate_latest(registry)

    def close(self) -> None:
        """A stopping worker's live gauges (fits in flight) stop counting."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), str(self.multiprocess_dir))
