"""``/v1/model-selection``: choose k (and the covariance type) by BIC or AIC."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response

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
from service.domain.analysis import plotting, selection
from service.domain.jobs.service import Waiting
from service.errors import InvalidInput
from service.schemas.plots import PlotOptions
from service.schemas.selection import (
    PLOT_EXAMPLES,
    SELECTION_EXAMPLES,
    SelectionRequest,
    SelectionResult,
)

router = APIRouter(prefix="/v1/model-selection", tags=["analysis"], route_class=FastJSONRoute)


@router.post(
    "",
    response_model=SelectionResult,
    summary="Fit a grid of mixtures and rank them by BIC or AIC",
    responses={**JOB_ACCEPTED_DOC, **responses(400, 413, 422, 500, 503, 507)},
)
async def select_model(
    request: Annotated[SelectionRequest, Body(openapi_examples=SELECTION_EXAMPLES)],
    analysis: AnalysisDep,
    settings: SettingsDep,
    http: Request,
    prefer: PreferHeader = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Fit `GaussianMixture(**params, n_components=k, covariance_type=c)` on `data` for
    every cell of `grid`, in parallel (at most `GMM_MAX_PARALLEL_FITS` at once), and
    answer each cell's `bic` and `aic` exactly as sklearn's `bic(X)` / `aic(X)`.

    `scores` lists the cells by covariance type (as requested), then n_components
    ascending. `best` is the lowest `criterion`; ties go to the fewest components. A
    cell sklearn cannot fit carries `error` and is never best. With `store_best` the
    winner's fitted estimator is stored as a model (not refitted): `best.model_id`.

    The work runs as a job; the request waits for it up to GMM_SYNC_WAIT_SECONDS
    (`Prefer: wait=N`), then answers **202** with `Location: /v1/jobs/{id}` and the
    job (progress in grid cells, this answer as its `result`, and `model_id` with
    `store_best`). `wait: false` or `Prefer: respond-async` answers 202 at once;
    `wait: true` waits without bound.
    """

    def run(waiting: Waiting) -> Response:
        kind, body = analysis.select(
            data=request.data,
            grid=request.grid,
            criterion=request.criterion,
            params=request.params.model_dump(),
            store_best=request.store_best,
            name=request.name,
            waiting=waiting,
        )
        return NumpyJSONResponse(body) if kind == "done" else job_accepted(body)

    waiting = waiting_of(request.wait, prefer, settings.sync_wait_seconds)
    return await run_waiting(http, request, waiting, idempotency_key, run)


@router.post(
    "/plot",
    response_class=Response,
    summary="Picture of the criterion against n_components",
    responses={
        200: {
            "description": "The plot, as PNG or SVG.",
            "content": {"image/png": {}, "image/svg+xml": {}},
        },
        **responses(400, 413, 422, 500, 503),
    },
)
async def plot_model_selection(
    request: Annotated[SelectionRequest, Body(openapi_examples=PLOT_EXAMPLES)],
    options: Annotated[PlotOptions, Query()],
    analysis: AnalysisDep,
    http: Request,
) -> Response:
    """The same body and fits as `POST /v1/model-selection`, answered as a picture: the
    criterion against `n_components`, one line per covariance type, the best cell
    starred. What a person choosing k wants to see. `format`, `width`, `height` (pixels)
    and `dpi` mean what they mean for every plot.

    `store_best` is refused here (422): a picture should not leave a model behind. A
    client that disconnects stops the fits.
    """
    if request.store_best:
        raise InvalidInput.at(
            ["body", "store_best"],
            "store_best is not available when plotting; call POST /v1/model-selection "
            "to store the winner.",
        )
    if request.wait is False:
        raise InvalidInput.at(
            ["body", "wait"],
            "a plot is drawn while you wait; for a job, call POST /v1/model-selection "
            'with "wait": false and plot its result.',
        )

    def draw(waiting: Waiting) -> Response:
        _, result = analysis.select(
            data=request.data,
            grid=request.grid,
            criterion=request.criterion,
            params=request.params.model_dump(),
            waiting=waiting,
        )
        size = plotting.FigureSize(width=options.width, height=options.height, dpi=options.dpi)
        image = selection.plot(result, fmt=options.format, size=size)
        return Response(image, media_type=plotting.MEDIA_TYPES[options.format])

    return await run_waiting(http, request, Waiting.now(), None, draw)
