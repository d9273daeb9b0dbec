"""Long work answered 202: the marker of tests that need the real server for it, and
a fake service, as an httpx transport, whose long work always answers 202.

The fake stands for the server to come (``GMM_SYNC_WAIT_SECONDS`` outlasted, or ``Prefer:
respond-async``) where a real one cannot yet: ``POST /v1/models``,
``/v1/model-selection`` and ``/v1/comparisons`` answer 202 with a job, the job runs for
two polls, then ``GET /v1/jobs/{id}/result`` answers ``result``: the body the request
would have answered at once. With ``result_route=False`` it is a service from before
that route: it 404s as an unknown route does (``about:blank``), and has only the model
resource and the job's own ``result``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from service.config import Settings

#: Long work without ``wait`` runs as a job and answers 202 once it outlasts
#: ``Settings.sync_wait_seconds`` (``GMM_SYNC_WAIT_SECONDS``), its answer then read at
#: ``GET /v1/jobs/{id}/result``: a server change still being made. Tests that need
#: it are skipped until the setting exists.
HAS_SYNC_WAIT = "sync_wait_seconds" in Settings.model_fields
needs_sync_wait = pytest.mark.skipif(not HAS_SYNC_WAIT, reason="needs GMM_SYNC_WAIT_SECONDS")

JOB_ID = "019abc12de34f0a1b2c3d4e5f6a7"
MODEL_ID = "0123456789abcdef0123456789ab"
LONG_WORK = {"/v1/models": "fit", "/v1/model-selection": "grid", "/v1/comparisons": "comparison"}


def _no_route(path: str) -> httpx.Response:
    return httpx.Response(
        404,
        headers={"Content-Type": "application/problem+json"},
        json={"type": "about:blank", "title": "Not Found", "status": 404,
              "detail": f"No route matches {path}."},
    )  # fmt: skip


class JobService:
    """``httpx.MockTransport(JobService(result))``; ``calls`` lists ``METHOD path``."""

    def __init__(self, result: dict[str, Any], *, result_route: bool = True) -> None:
        self.result = result
        self.result_route = result_route
        self.calls: list[str] = []
        self.bodies: list[Any] = []
        self.kind = "fit"
        self.polls = 0

    def job(self) -> dict[str, Any]:
        status = ("queued", "running", "succeeded")[min(self.polls, 2)]
        job: dict[str, Any] = {
            "id": JOB_ID,
            "kind": self.kind,
            "status": status,
            "progress": {"done": min(self.polls, 2), "total": 2, "unit": "steps"},
        }
        if status == "succeeded":
            if self.kind == "fit":
                job["model_id"] = MODEL_ID
            else:
                job["result"] = self.result
        return job

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append(f"{request.method} {path}")
        if request.method == "POST" and path in LONG_WORK:
            self.kind = LONG_WORK[path]
            self.bodies.append(json.loads(request.content))
            return httpx.Response(202, headers={"Location": f"/v1/jobs/{JOB_ID}"}, json=self.job())
        if path == f"/v1/jobs/{JOB_ID}":
            self.polls += 1
            return httpx.Response(200, json=self.job())
        if path == f"/v1/jobs/{JOB_ID}/result" and self.result_route:
            return httpx.Response(200, json=self.result)
        if path == f"/v1/models/{MODEL_ID}" and self.kind == "fit":
            # the stored model has no per-point arrays
            return httpx.Response(200, json={k: v for k, v in self.result.items() if k != "labels"})
        if path.startswith("/v1/jobs/") and path.endswith("/result") and self.result_route:
            return httpx.Response(
                404,
                headers={"Content-Type": "application/problem+json"},
                json={"type": "urn:gmm-service:problem:not-found", "title": "Not found",
                      "status": 404, "detail": "No job with that id."},
            )  # fmt: skip
        return _no_route(path)
