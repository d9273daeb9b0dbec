"""Fit overhead: ``POST /v1/models`` seen from a client, against sklearn's bare fit.

Both sides fit the same array with the same parameters; the service's answer is
checked against the in-process fit so the ratio compares equal work. The client
side is what a Python user pays: ``json.dumps`` of the rows (what ``httpx``'s
``json=`` does), the round trip, ``json.loads`` of the answer.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import httpx
import numpy as np
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

#: The two ways a client asks: the model resource alone, or with the per-point arrays.
INCLUDES: dict[str, list[str] | None] = {"include=[]": [], "default include": None}


def make_data(n_samples: int, n_features: int, centers: int, random_state: int = 0) -> np.ndarray:
    """Blobs of shape (n_samples, n_features), one blob per mixture component."""
    X, _ = make_blobs(
        n_samples=n_samples, n_features=n_features, centers=centers, random_state=random_state
    )
    return np.ascontiguousarray(X, dtype=np.float64)


def sklearn_fit(X: np.ndarray, n_components: int, random_state: int) -> tuple[float, np.ndarray]:
    """Seconds for the bare in-process fit, and its ``means_`` for the equality check."""
    t0 = time.perf_counter()
    gm = GaussianMixture(n_components=n_components, random_state=random_state).fit(X)
    return time.perf_counter() - t0, gm.means_


def service_fit(
    client: httpx.Client,
    base_url: str,
    X: np.ndarray,
    n_components: int,
    random_state: int,
    include: list[str] | None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """One fit over HTTP: timings in seconds (serialize, request, parse, total,
    fit_seconds, server_other) and the parsed response."""
    body: dict[str, Any] = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": n_components, "random_state": random_state},
        "data": {"points": None},
    }
    if include is not None:
        body["include"] = include
    t0 = time.perf_counter()
    body["data"]["points"] = X.tolist()
    content = json.dumps(body).encode()
    t1 = time.perf_counter()
    response = client.post(
        f"{base_url}/v1/models", content=content, headers={"Content-Type": "application/json"}
    )
    t2 = time.perf_counter()
    if response.status_code != 201:
        raise RuntimeError(f"fit answered {response.status_code}: {response.text[:500]}")
    answer: dict[str, Any] = json.loads(response.content)
    t3 = time.perf_counter()
    timings = {
        "serialize": t1 - t0,
        "request": t2 - t1,
        "parse": t3 - t2,
        "total": t3 - t0,
        "fit_seconds": float(answer["fit_seconds"]),
        # Everything the server and the wire add around the fit: parsing and validating
        # the body, list -> ndarray, bic/aic and per-point arrays, the store write, the
        # response's serialisation and transfer.
        "server_other": (t2 - t1) - float(answer["fit_seconds"]),
        "request_bytes": float(len(content)),
        "response_bytes": float(len(response.content)),
    }
    return timings, answer


def validation_probe(
    client: httpx.Client, base_url: str, X: np.ndarray, n_components: int, random_state: int
) -> float:
    """Seconds for the same body with one unknown parameter: answered 422 once FastAPI
    has read, decoded and validated every point, so it prices the body's parsing alone
    (transfer, JSON decode, pydantic) without the fit behind it."""
    body = {
        "algorithm": "gaussian_mixture",
        "params": {
            "n_components": n_components,
            "random_state": random_state,
            "bench_probe": 1,
        },
        "data": {"points": X.tolist()},
        "include": [],
    }
    content = json.dumps(body).encode()
    t0 = time.perf_counter()
    response = client.post(
        f"{base_url}/v1/models", content=content, headers={"Content-Type": "application/json"}
    )
    seconds = time.perf_counter() - t0
    if response.status_code != 422:
        raise RuntimeError(f"probe answered {response.status_code}: {response.text[:500]}")
    return seconds


def _median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


def run(
    base_url: str,
    *,
    n_samples: int,
    n_features: int,
    n_components: int,
    repeats: int,
    random_state: int = 0,
) -> dict[str, Any]:
    """Median timings of sklearn and of the service (both includes), and their ratios.

    Repeats are interleaved (sklearn, service include=[], service default, again...)
    so that background load on a shared machine falls on every variant alike.
    """
    X = make_data(n_samples, n_features, n_components, random_state)
    reference: list[float] = []
    service: dict[str, list[dict[str, float]]] = {name: [] for name in INCLUDES}
    probes: list[float] = []
    matches = True
    with httpx.Client(timeout=httpx.Timeout(600.0)) as client:
        # One small untimed fit on each side first: lazy imports and first-call costs
        # (in the server and in this process) are not what a steady client pays.
        warm = X[: max(1_000, 10 * n_components)]
        sklearn_fit(warm, n_components, random_state)
        service_fit(client, base_url, warm, n_components, random_state, [])
        for _ in range(repeats):
            seconds, means = sklearn_fit(X, n_components, random_state)
            reference.append(seconds)
            for name, include in INCLUDES.items():
                timings, answer = service_fit(
                    client, base_url, X, n_components, random_state, include
                )
                service[name].append(timings)
                matches &= bool(np.allclose(answer["means"], means, rtol=1e-10, atol=0.0))
            probes.append(validation_probe(client, base_url, X, n_components, random_state))
    sklearn_median = statistics.median(reference)
    variants = {}
    for name, rows in service.items():
        median = _median(rows)
        variants[name] = {
            "median": median,
            "runs": rows,
            "ratio_to_sklearn": median["total"] / sklearn_median,
        }
    return {
        "n_samples": n_samples,
        "n_features": n_features,
        "n_components": n_components,
        "repeats": repeats,
        "sklearn_seconds": {"median": sklearn_median, "runs": reference},
        "service": variants,
        "validation_probe_seconds": {"median": statistics.median(probes), "runs": probes},
        "matches_sklearn": matches,
    }
