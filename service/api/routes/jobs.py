"""``/v1/jobs``: long work followed, listed, cancelled and deleted."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from service.api.deps import JobsDep, SettingsDep, TrainingDep
from service.api.problems import responses
from service.api.responses import NumpyJSONResponse
from service.ids import JOB_ID_PATTERN
from service.schemas.jobs import Job, JobList

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

#: Checked by the service (``check_job_id``) rather than by a path pattern: an id that
#: is not one the server could have made names no job, so it is a 404, never a 422.
JobId = Annotated[
    str,
    Path(
        description=f"Server-generated job id (`{JOB_ID_PATTERN}`).",
        examples=["019abc12de34f0a1b2c3d4e5f6a7"],
    ),
]

#: The 202 of every route that can answer with a job, as OpenAPI documents it.
JOB_ACCEPTED_DOC: dict[int | str, dict[str, Any]] = {
    202: {
        "model": Job,
        "description": (
            "Accepted as a job (`wait: false`, or work not done within the wait): follow "
            "`Location`; `GET /v1/jobs/{id}/result` answers the result once it succeeded."
        ),
        "headers": {"Location": {"description": "URL of the job", "schema": {"type": "string"}}},
    }
}


def job_accepted(job: dict[str, Any]) -> NumpyJSONResponse:
    """202 with the job's ``Location``."""
    return NumpyJSONResponse(job, status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})


@router.get(
    "",
    response_model=JobList,
    summary="List jobs, newest first",
    responses=responses(422, 500),
)
def list_jobs(
    jobs: JobsDep,
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1, le=1000, description="Page size.")] = None,
    cursor: Annotated[
        str | None,
        Query(pattern=JOB_ID_PATTERN, description="`next_cursor` of the previous page."),
    ] = None,
) -> Response:
    """Every job kept in the store, of every worker process, newest first."""
    page = jobs.list(limit=limit or settings.default_page_size, cursor=cursor)
    return NumpyJSONResponse(page)


@router.get(
    "/{job_id}",
    response_model=Job,
    summary="Read a job: status, progress, result",
    responses=responses(404, 422, 500),
)
def get_job(job_id: JobId, jobs: JobsDep) -> Response:
    """Poll this until `status` is `succeeded`, `failed` or `cancelled`. While it runs,
    `progress` counts EM iterations (with the latest `lower_bound`), inits, grid cells
    or algorithms. After a crash or restart a job is never left `running`: it says
    `failed`, with the reason in `error`."""
    return NumpyJSONResponse(jobs.get(job_id))


@router.get(
    "/{job_id}/result",
    summary="Read what a succeeded job's request would have answered",
    responses={
        200: {
            "description": (
                "The 201/200 body the request would have had: a fit's model resource with "
                "its `include`d per-point arrays, a selection's or comparison's result."
            ),
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **responses(404, 409, 422, 500),
    },
)
def get_job_result(job_id: JobId, training: TrainingDep) -> Response:
    """Once the job has `succeeded`: exactly the body the synchronous request would
    have answered. For a fit, the model resource plus the per-point arrays named by
    `include` (or the default ones) for the training points, computed from the stored
    model and its training points as the fit computed them; for a model selection or
    a comparison, its `result`. **409** while the job is queued, running or was
    cancelled; a failed job answers the problem it failed with."""
    return NumpyJSONResponse(training.job_result(job_id))


@router.post(
    "/{job_id}/cancel",
    response_model=Job,
    summary="Cancel a job",
    responses={
        202: {
            "model": Job,
            "description": "Cancel requested: the running job stops at its next step.",
        },
        **responses(404, 422, 500),
    },
)
def cancel_job(job_id: JobId, jobs: JobsDep) -> Response:
    """Ask the job to stop; nothing it would have stored is stored.

    Answers the job resource: **202** while it is still running (`cancel_requested`
    is true; a fit stops at its next EM iteration, k-means init or mini-batch step,
    a grid between cells or inside a cell's fit) and **200** once it is finished: a
    queued job is cancelled at once, and a job that had already ended is answered
    unchanged. The record stays (`cancelled`) until it expires or is deleted.
    """
    job = jobs.cancel(job_id)
    status = 200 if job["status"] in ("succeeded", "failed", "cancelled") else 202
    return NumpyJSONResponse(job, status_code=status)


@router.delete(
    "/{job_id}",
    status_code=204,
    summary="Delete a job",
    responses=responses(404, 422, 500),
)
def delete_job(job_id: JobId, jobs: JobsDep) -> Response:
    """Cancel the job if it still runs (nothing it would have stored is stored) and
    remove its record: afterwards `GET /v1/jobs/{id}` answers 404. A model the job
    already stored stays."""
    jobs.delete(job_id)
    return Response(status_code=204)
