"""Predict throughput: single-point requests at fixed concurrency, service vs the reference.

Both servers hold the same fitted mixture (the seed blobs, 4 components): the service
fits it through its own API, the reference app (``../shared/bench/minimal_app.py``)
loads the same fit from a joblib file.
The model is tiny on purpose: sklearn's share of each request is small, so the
figure is the per-request cost of the HTTP stack around it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

#: The notebook's data and model, as the service's seed-blobs example fits them.
SEED_BLOBS: dict[str, Any] = {
    "kind": "blobs",
    "n_samples": 200,
    "n_features": 2,
    "centers": 4,
    "cluster_std": 1.6,
    "random_state": 10,
}
SEED_PARAMS: dict[str, Any] = {"n_components": 4, "random_state": 0}


def seed_data() -> np.ndarray:
    """The seed blobs, (200, 2), exactly as the service's generator makes them."""
    spec = {k: v for k, v in SEED_BLOBS.items() if k != "kind"}
    X, _ = make_blobs(**spec)
    return np.asarray(X, dtype=np.float64)


def fit_reference(path: Path) -> tuple[GaussianMixture, np.ndarray]:
    """Fit the seed model in-process and joblib-dump it for the minimal app."""
    X = seed_data()
    gm = GaussianMixture(**SEED_PARAMS).fit(X)
    joblib.dump(gm, path)
    return gm, X


#: The seed model's fit as a ``POST /v1/models`` body.
SEED_FIT: dict[str, Any] = {
    "algorithm": "gaussian_mixture",
    "params": SEED_PARAMS,
    "data": {"generator": SEED_BLOBS},
    "include": [],
}


def register_model(base_url: str, headers: dict[str, str] | None = None) -> str:
    """Fit the seed model through the service; its id for the predict route."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=60.0) as client:
        return register_model_with(client)


def register_model_with(client: Any) -> str:
    """``register_model`` through a client of the service (``httpx.Client`` or a
    ``TestClient``), with whatever headers it sends."""
    response = client.post("/v1/models", json=SEED_FIT)
    if response.status_code != 201:
        raise RuntimeError(f"fit answered {response.status_code}: {response.text[:500]}")
    model_id: str = response.json()["id"]
    return model_id


def check_same_answers(
    service_url: str,
    minimal_url: str,
    X: np.ndarray,
    gm: GaussianMixture,
    headers: dict[str, str] | None = None,
) -> bool:
    """Both servers answer sklearn's ``predict_proba`` for the same points, so the
    throughput figures compare equal work. ``headers`` go to the service."""
    points = X[:8].tolist()
    expected = gm.predict_proba(X[:8])
    service = httpx.post(service_url, json={"points": points}, headers=headers, timeout=30.0).json()
    minimal = httpx.post(minimal_url, json={"points": points}, timeout=30.0).json()
    return bool(
        np.allclose(service["probabilities"], expected, rtol=1e-10, atol=0.0)
        and np.allclose(minimal["probabilities"], expected, rtol=1e-10, atol=0.0)
        and service["labels"] == gm.predict(X[:8]).tolist()
    )


async def _load(
    url: str, bodies: list[bytes], concurrency: int, duration: float
) -> tuple[list[float], int, float]:
    """``concurrency`` workers post bodies back to back until ``duration`` has passed.

    Returns the latencies (s) of successful requests, the error count, and the
    wall time from the first request to the last answer.
    """
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def worker(start: int, deadline: float) -> tuple[list[float], int]:
            latencies: list[float] = []
            errors = 0
            i = start
            while time.perf_counter() < deadline:
                body = bodies[i % len(bodies)]
                i += concurrency
                t0 = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                t1 = time.perf_counter()
                if response.status_code == 200:
                    latencies.append(t1 - t0)
                else:
                    errors += 1
            return latencies, errors

        began = time.perf_counter()
        results = await asyncio.gather(*(worker(k, began + duration) for k in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies = [t for lat, _ in results for t in lat]
    return latencies, sum(e for _, e in results), elapsed


def _summary(latencies: list[float], errors: int, seconds: float) -> dict[str, float]:
    lat = np.asarray(latencies) * 1e3
    return {
        "requests": float(lat.size),
        "errors": float(errors),
        "seconds": seconds,
        "requests_per_second": lat.size / seconds,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
    }


def run(
    service_base: str,
    minimal_base: str,
    model_id: str,
    gm: GaussianMixture,
    X: np.ndarray,
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    rounds: int = 2,
) -> dict[str, Any]:
    """Requests/s and latency percentiles (ms) of each server on the same single-point
    bodies, and the ratio of their requests/s.

    Each server gets ``duration`` seconds in all, in ``rounds`` alternating slices
    (minimal, service, minimal, ...) so that background load on a shared machine falls
    on both alike; a warm-up of ``warmup`` seconds per server is thrown away.
    """
    urls = {
        "minimal": f"{minimal_base}/predict",
        "service": f"{service_base}/v1/models/{model_id}/predict",
    }
    # Bodies are serialised up front: the client's own JSON cost stays out of the figure.
    bodies = [json.dumps({"points": [row]}).encode() for row in X.tolist()]
    same = check_same_answers(urls["service"], urls["minimal"], X, gm)
    if warmup > 0:
        for url in urls.values():
            asyncio.run(_load(url, bodies, concurrency, warmup))
    latencies: dict[str, list[float]] = {name: [] for name in urls}
    errors = dict.fromkeys(urls, 0)
    seconds = dict.fromkeys(urls, 0.0)
    for _ in range(rounds):
        for name, url in urls.items():
            lat, err, elapsed = asyncio.run(_load(url, bodies, concurrency, duration / rounds))
            latencies[name] += lat
            errors[name] += err
            seconds[name] += elapsed
    summary = {name: _summary(latencies[name], errors[name], seconds[name]) for name in urls}
    return {
        "concurrency": concurrency,
        "duration": duration,
        "warmup": warmup,
        "rounds": rounds,
        **summary,
        "ratio_service_to_minimal": summary["service"]["requests_per_second"]
        / summary["minimal"]["requests_per_second"],
        "same_answers": same,
    }
