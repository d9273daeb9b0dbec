"""Where a prediction runs: on the event loop when it is cheap, else in the threadpool.

Shared by ``/v1/models/{id}/predict`` and ``score`` and the Open Inference Protocol's
``infer`` (``service.api.v2.routes``), so that both protocols pay the same per-request
cost for the same work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from service.domain.inference.service import Inference

#: Requests with at most this many points, on a model already in memory, are answered
#: on the event loop: their arithmetic takes microseconds, less than a thread hop.
INLINE_POINTS = 256


async def answer_points(
    inference: Inference,
    model_id: str,
    points: Any,
    use: Callable[[str, Any], dict[str, Any]],
) -> dict[str, Any]:
    """``use(model_id, points)`` inline when it is cheap, else in the threadpool (a
    first load reads and verifies the artifact; a large batch is real work; a store
    whose every check is a network call, S3, is never asked on the event loop).
    ``points`` are JSON rows or an array (a ``.npy`` body, a v2 tensor)."""
    if len(points) <= INLINE_POINTS and inference.ready(model_id):
        return use(model_id, points)
    return await run_in_threadpool(use, model_id, points)
