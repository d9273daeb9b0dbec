"""``/v1/comparisons``: several algorithms on the same data, side by side."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request, Response

from service.api.deps import AnalysisDep, SettingsDep
from service.api.problems import responses
from service.api.responses import NumpyJSONResponse
from service.api.routes.jobs import JOB_ACCEPTED_DOC, job_accepted
from service.api.routing import FastJSONRoute
from service.api.waiting import (
    IdempotencyKeyHeader,
    PreferHeader,
    run_waiting,
    waiting_of,
)
from service.domain.jobs.service import Waiting
from service.schemas.comparisons import COMPARISON_EXAMPLES, ComparisonRequest, ComparisonResult

router = APIRouter(prefix="/v1/comparisons", tags=["analysis"], route_class=FastJSONRoute)


@router.post(
    "",
    response_model=ComparisonResult,
    summary="Compare clusterings of the same data",
    responses={**JOB_ACCEPTED_DOC, **responses(400, 413, 422, 500, 503)},
)
async def compare_algorithms(
    request: Annotated[ComparisonRequest, Body(openapi_examples=COMPARISON_EXAMPLES)],
    analysis: AnalysisDep,
    settings: SettingsDep,
    http: Request,
    prefer: PreferHeader = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Fit each of `algorithms` on `data` (in parallel, at most `GMM_MAX_PARALLEL_FITS`
    at once) and answer, in order, its training `labels` and scores under sklearn's
    function names.

    `silhouette_score` always (null with a warning when fewer than two clusters were
    found); exact up to 10,000 points, on a sample of 10,000 drawn with seed 0 above
    that, unless `silhouette` says otherwise. `adjusted_rand_score`,
    `adjusted_mutual_info_score`, `normalized_mutual_info_score`, `homogeneity_score`,
    `completeness_score` and `v_measure_score` only where the true labels are known:
    from `true_labels`, else from a `generator`. Nothing is stored.

    The work runs as a job; the request waits for it up to GMM_SYNC_WAIT_SECONDS
    (`Prefer: wait=N`), then answers **202** with `Location: /v1/jobs/{id}` and the
    job (progress in algorithms, this answer as its `result`). `wait: false` or
    `Prefer: respond-async` answers 202 at once; `wait: true` waits without bound.
    """

    def run(waiting: Waiting) -> Response:
        kind, body = analysis.compare(
            data=request.data,
            algorithms=[(item.algorithm, item.params.model_dump()) for item in request.algorithms],
            true_labels=request.true_labels,
            sample_size=request.silhouette.sample_size,
            random_state=request.silhouette.random_state,
            waiting=waiting,
        )
        return NumpyJSONResponse(body) if kind == "done" else job_accepted(body)

    waiting = waiting_of(request.wait, prefer, settings.sync_wait_seconds)
    return await run_waiting(http, request, waiting, idempotency_key, run)
