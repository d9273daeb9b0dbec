"""``/v1/models``: train, list and find, read, rename and tag, delete, predict."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import StringConstraints
from starlette.concurrency import run_in_threadpool

from service.api.binary import (
    NPY,
    NPY_RESPONSE_CONTENT,
    BinaryBodyRoute,
    accepts,
    binary_body,
    binary_request_doc,
    missing_body,
    npy_response,
    read_npy_points,
    wants_npy,
)
from service.api.deps import (
    CatalogueDep,
    InferenceDep,
    MetricsDep,
    ModelId,
    SettingsDep,
    TrainingDep,
)
from service.api.offload import answer_points
from service.api.problems import responses
from service.api.responses import MODEL_CREATED_DOC, NumpyJSONResponse, model_created
from service.api.routes.jobs import JOB_ACCEPTED_DOC, job_accepted
from service.api.waiting import (
    IdempotencyKeyHeader,
    PreferHeader,
    run_waiting,
    waiting_of,
)
from service.domain.inference.service import Inference
from service.domain.jobs.service import Waiting
from service.errors import Busy, ServiceError
from service.ids import MODEL_ID_PATTERN
from service.schemas.common import Instant, Problem
from service.schemas.models import (
    FIT_EXAMPLES,
    MAX_TAGS,
    PATCH_EXAMPLES,
    PRINTABLE_PATTERN,
    TAG_FILTER_PATTERN,
    AlgorithmName,
    FitRequest,
    FittedModel,
    ModelList,
    ModelPatch,
    ModelResource,
    PointsRequest,
    Prediction,
    SampleRequest,
    SampleResult,
    ScoreResult,
)

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=BinaryBodyRoute)


@router.post(
    "",
    status_code=201,
    response_model=FittedModel,
    summary="Fit a model and store it",
    responses={
        201: MODEL_CREATED_DOC,
        **JOB_ACCEPTED_DOC,
        **responses(400, 413, 422, 500, 503, 507),
    },
)
async def create_model(
    request: Annotated[FitRequest, Body(openapi_examples=FIT_EXAMPLES)],
    training: TrainingDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    http: Request,
    prefer: PreferHeader = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Fit `algorithm` with `params` on `data`, exactly as scikit-learn does in-process.

    Answers 201 with the stored model resource plus the per-point arrays named by
    `include` for the training points. Runs in the threadpool, never on the event loop.

    The fit runs as a job, and the request waits for it up to GMM_SYNC_WAIT_SECONDS
    (`Prefer: wait=N` for this request): a fit done in time answers 201; one that is
    not answers **202** with `Location: /v1/jobs/{id}` and the job, which goes on
    (`GET /v1/jobs/{id}/result` then answers what 201 would have). `wait: false` or
    `Prefer: respond-async` answers 202 at once; `wait: true` waits without bound.
    Everything is checked before the job starts. When every fit slot is busy the
    request waits in a bounded queue; 429 with `Retry-After` when the queue is full.
    A client that disconnects from a `wait: true` fit stops it: nothing is stored.
    """

    def fit(waiting: Waiting) -> Response:
        metrics.fits_in_flight.inc()
        try:
            kind, body = training.create_model(
                algorithm=request.algorithm,
                params=request.params.model_dump(),
                data=request.data,
                name=request.name,
                tags=request.tags,
                ttl_seconds=request.ttl_seconds,
                include=request.include,
                align_to=request.align_to,
                extra={
                    "effective_weight_threshold": getattr(
                        request, "effective_weight_threshold", None
                    )
                },
                waiting=waiting,
                # Only the k-means requests have the field; a mixture's is refused by its schema.
                sample_weight=getattr(request, "sample_weight", None),
                engine=request.engine,
            )
        except Busy:
            metrics.fits_rejected_busy.inc()
            raise
        except ServiceError:
            metrics.fits.labels(request.algorithm, "rejected").inc()
            raise
        finally:
            metrics.fits_in_flight.dec()
        if kind == "job":
            return job_accepted(body)
        metrics.fits.labels(request.algorithm, "stored").inc()
        metrics.fit_seconds.labels(request.algorithm).observe(body["fit_seconds"])
        metrics.fit_iterations.labels(request.algorithm).observe(body["n_iter"])
        return model_created(body)

    waiting = waiting_of(request.wait, prefer, settings.sync_wait_seconds)
    return await run_waiting(http, request, waiting, idempotency_key, fit)


#: ``?tag=key:value``, repeatable.
TagFilter = Annotated[str, StringConstraints(pattern=TAG_FILTER_PATTERN)]


@router.get(
    "",
    response_model=ModelList,
    summary="List and find models, newest first",
    responses=responses(422, 500),
)
def list_models(
    catalogue: CatalogueDep,
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1, le=1000, description="Page size.")] = None,
    cursor: Annotated[
        str | None,
        Query(pattern=MODEL_ID_PATTERN, description="`next_cursor` of the previous page."),
    ] = None,
    name: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=PRINTABLE_PATTERN,
            description="Only models of exactly this name.",
        ),
    ] = None,
    algorithm: Annotated[
        AlgorithmName | None, Query(description="Only models of this algorithm.")
    ] = None,
    tag: Annotated[
        list[TagFilter] | None,
        Query(
            max_length=MAX_TAGS,
            description=(
                "Only models with this tag, written `key:value` (the whole string is "
                "compared with each of the model's tags written so, which stays exact when "
                "keys or values hold a colon). Repeat it: a model must have every one."
            ),
            examples=[["stage:prod"]],
        ),
    ] = None,
    created_after: Annotated[
        Instant | None,
        Query(description="Only models created after this time (ISO 8601 with a zone)."),
    ] = None,
    created_before: Annotated[
        Instant | None,
        Query(description="Only models created at or before this time (ISO 8601 with a zone)."),
    ] = None,
) -> Response:
    """Model resources without per-point arrays, read from metadata (never unpickled).

    `name`, `algorithm`, `tag` and the creation times narrow the listing; pages,
    `next_cursor` and `total` are then those of the models that match. Every filter is
    an indexed query of the catalogue's database, whatever the number of models."""
    page = catalogue.list(
        limit=limit or settings.default_page_size,
        cursor=cursor,
        name=name,
        algorithm=algorithm,
        tags=tag or (),
        created_after=created_after,
        created_before=created_before,
    )
    return NumpyJSONResponse(page)


@router.get(
    "/{model_id}",
    response_model=ModelResource,
    summary="Read a model",
    responses=responses(404, 422, 500),
)
def get_model(model_id: ModelId, catalogue: CatalogueDep) -> Response:
    return NumpyJSONResponse(catalogue.get(model_id))


#: The media types a PATCH body may be sent as, both JSON (``FastJSONRoute`` takes any
#: ``application/*+json``); the document lists merge-patch next to FastAPI's own entry.
_MERGE_PATCH_DOC = {
    "requestBody": {
        "content": {
            "application/merge-patch+json": {
                "schema": {"$ref": "#/components/schemas/ModelPatch"},
                "examples": PATCH_EXAMPLES,
            }
        }
    }
}


@router.patch(
    "/{model_id}",
    response_model=ModelResource,
    summary="Rename a model or change its tags",
    responses={
        **responses(400, 404, 422, 500, 503),
        415: {
            "model": Problem,
            "description": (
                "The body is not JSON (send Content-Type: application/merge-patch+json "
                "or application/json)."
            ),
        },
    },
    openapi_extra=_MERGE_PATCH_DOC,
)
def update_model(
    model_id: ModelId,
    patch: Annotated[ModelPatch, Body(openapi_examples=PATCH_EXAMPLES)],
    catalogue: CatalogueDep,
) -> Response:
    """A JSON merge patch (RFC 7396): `name` sets the name (null removes it); `tags`
    sets the tags it names, removes those it gives null, keeps the others (`"tags":
    null` removes them all); `ttl_seconds` sets `expires_at` that far from now (null
    clears it). Fields not in the body stay as they are.

    Only the model's metadata changes (signed again, written atomically); the fitted
    model is untouched. Concurrent patches never lose one another's change; a patch
    racing a delete answers 404 or 200, and the model stays deleted."""
    resource = catalogue.update(
        model_id,
        name=patch.name,
        tags=patch.tags,
        ttl_seconds=patch.ttl_seconds,
        fields=patch.model_fields_set,
    )
    return NumpyJSONResponse(resource)


@router.delete(
    "/{model_id}",
    status_code=204,
    summary="Delete a model",
    responses=responses(404, 422, 500),
)
def delete_model(model_id: ModelId, catalogue: CatalogueDep) -> Response:
    """Gone for every worker at once; a cached copy is never served afterwards."""
    catalogue.delete(model_id)
    return Response(status_code=204)


#: ``?output=``: which array an ``Accept: application/x-npy`` answer holds.
PredictOutput = Annotated[
    Literal["labels", "probabilities", "distances"],
    Query(description="With `Accept: application/x-npy`: the one array to answer."),
]
ScoreOutput = Annotated[
    Literal["log_likelihood", "percentile"],
    Query(description="With `Accept: application/x-npy`: the one array to answer."),
]
_NPY_ANSWER = {200: {"content": NPY_RESPONSE_CONTENT}}
#: Where errors about the points point: the JSON field, or a whole ``.npy`` body.
JSON_POINTS_LOC = ("body", "points")
NPY_POINTS_LOC = ("body",)


async def _points_of(
    request: Request, body: PointsRequest | None, inference: Inference
) -> tuple[Any, Sequence[str]]:
    """JSON ``points``, or the array of an ``application/x-npy`` body (parsed in the
    threadpool: it may be large), and where errors about them point."""
    if binary_body(request) is not None:
        return await run_in_threadpool(read_npy_points, request, inference.read_npy), NPY_POINTS_LOC
    if body is None:
        raise missing_body()
    return body.points, JSON_POINTS_LOC


async def answer_predict(
    inference: Inference, model_id: str, points: Any, loc: Sequence[str], output: str, npy: bool
) -> Response:
    """``predict``'s answer for points already read: JSON, or the one array ``output``
    names as ``.npy`` when the client asked for it (``npy``). The route below and the
    hot path (``service.api.hotpath``) both answer with it."""
    result = await answer_points(inference, model_id, points, partial(inference.predict, loc=loc))
    if npy:
        return npy_response(result, output, list(result))
    return NumpyJSONResponse(result)


async def answer_score(
    inference: Inference, model_id: str, points: Any, loc: Sequence[str], output: str, npy: bool
) -> Response:
    """``score``'s answer for points already read, as ``answer_predict`` is predict's."""
    result = await answer_points(inference, model_id, points, partial(inference.score, loc=loc))
    if npy:
        return npy_response(result, output, ["log_likelihood", "percentile"])
    return NumpyJSONResponse(result)


@router.post(
    "/{model_id}/predict",
    response_model=Prediction,
    summary="Labels and memberships for new points",
    responses={**_NPY_ANSWER, **responses(400, 404, 413, 422, 500)},
    openapi_extra=binary_request_doc(NPY),
)
@accepts(NPY)
async def predict(
    model_id: ModelId,
    inference: InferenceDep,
    http: Request,
    request: Annotated[PointsRequest, Body()] = None,  # type: ignore[assignment]
    output: PredictOutput = "labels",
) -> Response:
    """Mixtures answer `labels` and `probabilities` (`predict`, `predict_proba`);
    KMeans answers `labels` and `distances` to each center (`predict`, `transform`).

    The points may be a `.npy` body (`Content-Type: application/x-npy`);
    `Accept: application/x-npy` answers the one array named by `output` as `.npy`."""
    points, loc = await _points_of(http, request, inference)
    return await answer_predict(
        inference, model_id, points, loc, output, wants_npy(http.headers.get("accept", ""))
    )


@router.post(
    "/{model_id}/score",
    response_model=ScoreResult,
    summary="Log-likelihood of points: outlier scoring",
    responses={**_NPY_ANSWER, **responses(400, 404, 413, 422, 500)},
    openapi_extra=binary_request_doc(NPY),
)
@accepts(NPY)
async def score_points(
    model_id: ModelId,
    inference: InferenceDep,
    http: Request,
    request: Annotated[PointsRequest, Body()] = None,  # type: ignore[assignment]
    output: ScoreOutput = "log_likelihood",
) -> Response:
    """`score_samples` per point, their mean as `score`, and each point's percentile
    among the training points' log-likelihoods (mixtures only).

    The points may be a `.npy` body (`Content-Type: application/x-npy`);
    `Accept: application/x-npy` answers the one array named by `output` as `.npy`."""
    points, loc = await _points_of(http, request, inference)
    return await answer_score(
        inference, model_id, points, loc, output, wants_npy(http.headers.get("accept", ""))
    )


@router.post(
    "/{model_id}/sample",
    response_model=SampleResult,
    summary="Draw points from a mixture",
    responses=responses(400, 404, 413, 422, 500),
)
def sample_points(model_id: ModelId, request: SampleRequest, inference: InferenceDep) -> Response:
    """`GaussianMixture.sample(n_samples)` with `random_state` set (mixtures only)."""
    return NumpyJSONResponse(inference.sample(model_id, request.n_samples, request.random_state))
