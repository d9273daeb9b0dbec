"""Parse figure: a large points body through the service's decoder, against pydantic.

The body is ``{"points": X}`` for X of shape (n_samples, n_features) (1,000,000 x 2 by
default), encoded by orjson, as a client sending floats at full precision would. Each
side turns the bytes into the float64 array a fit or a predict needs:

- the service: ``decode_json`` (simdjson straight to float64 for a proven matrix) and
  ``PointsRequest`` validation (O(1) for a ready array) and ``points_to_array``;
- before it: ``orjson.loads``, ``PointsRequest`` validating every number, then
  ``points_to_array`` (the route's path until the array fast path);
- pydantic alone: ``TypeAdapter(list[list[float]]).validate_json`` on the same
  bytes, and ``validate_python`` on orjson's lists (decoding not counted), without
  even the conversion to an array.

Medians of ``--repeats`` interleaved runs. The figure is the ratio of
``validate_json`` (pydantic doing the same work: bytes in, every number checked) to
the service; the goal (the "Speed and large data" issue) is 3x. The ratios to the
other two references are printed beside it: decoding alone (orjson building 2M
floats and 1M lists) is about half of what is left, so against ``validate_python``
with decoding left out the service can only be about as fast.

    .venv/bin/python bench/parse_points.py [--n-samples N] [--n-features D] [--repeats R]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from pydantic import TypeAdapter

from service.api.routing import decode_json
from service.domain.datasets.arrays import points_to_array
from service.domain.limits import Limits
from service.schemas.models import PointsRequest

GOAL = 3.0
LIMITS = Limits(
    max_points=10**9,
    max_features=10**6,
    max_values=10**10,
    max_components=1,
    max_iter=1,
    max_n_init=1,
    max_grid_cells=1,
    max_parallel_fits=1,
    max_default_per_point_values=1,
)
LOC = ["body", "points"]
SERVICE = "service (decode_json + schema + array)"
REFERENCE = "pydantic validate_json"
LISTS = TypeAdapter(list[list[float]])


def service_path(body: bytes) -> np.ndarray:
    request = PointsRequest.model_validate(decode_json(body))
    return points_to_array(request.points, LIMITS, LOC)


def old_path(body: bytes) -> np.ndarray:
    request = PointsRequest.model_validate(orjson.loads(body))
    return points_to_array(request.points, LIMITS, LOC)


def pydantic_validate_json(points_bytes: bytes) -> Any:
    return LISTS.validate_json(points_bytes)


def _timed(fn: Callable[[], Any]) -> float:
    gc.collect()  # each run starts from the same heap, whatever the one before left
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(n_samples: int, n_features: int, repeats: int) -> dict[str, Any]:
    X = np.random.RandomState(0).normal(size=(n_samples, n_features))
    body = orjson.dumps({"points": X}, option=orjson.OPT_SERIALIZE_NUMPY)
    points_bytes = orjson.dumps(X, option=orjson.OPT_SERIALIZE_NUMPY)
    assert np.array_equal(service_path(body), X)  # same work: exactly the array sent
    assert np.array_equal(old_path(body), X)
    decoded = orjson.loads(points_bytes)
    sides: dict[str, Callable[[], Any]] = {
        SERVICE: lambda: service_path(body),
        "before (orjson + schema + array)": lambda: old_path(body),
        REFERENCE: lambda: pydantic_validate_json(points_bytes),
        "pydantic validate_python (decode not counted)": lambda: LISTS.validate_python(decoded),
    }
    runs: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            runs[name].append(_timed(fn))
    medians = {name: statistics.median(times) for name, times in runs.items()}
    service = medians[SERVICE]
    return {
        "n_samples": n_samples,
        "n_features": n_features,
        "body_bytes": len(body),
        "medians": medians,
        "runs": runs,
        "ratios": {name: t / service for name, t in medians.items() if name != SERVICE},
        "ratio": medians[REFERENCE] / service,
        "goal": GOAL,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-samples", type=int, default=1_000_000)
    parser.add_argument("--n-features", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    result = run(args.n_samples, args.n_features, args.repeats)
    print(
        f"{result['n_samples']:,} x {result['n_features']} points, "
        f"{result['body_bytes'] / 1e6:.1f} MB of JSON, median of {args.repeats}"
    )
    for name, seconds in result["medians"].items():
        ratio = result["ratios"].get(name)
        beside = f"  {ratio:4.1f}x the service" if ratio is not None else ""
        print(f"  {name:<48} {seconds * 1000:8.1f} ms{beside}")
    verdict = "met" if result["ratio"] >= GOAL else "NOT met"
    print(f"ratio {REFERENCE} / service: {result['ratio']:.1f}x (goal >= {GOAL:.0f}x: {verdict})")
    return result


if __name__ == "__main__":
    main()
