"""The ``/v1/jobs`` resource: long work followed, read and cancelled."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.schemas.common import Problem

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["fit", "model_selection", "comparison"]


class JobProgress(BaseModel):
    """Work done, honestly counted: what the job has finished, not time elapsed."""

    fraction: float = Field(ge=0, le=1, description="`done / total`.", examples=[0.35])
    done: int = Field(examples=[35])
    total: int = Field(
        description=(
            "Fits: EM iterations `max_iter * n_init` at most (an init that converges "
            "early counts its remaining iterations as done when the next starts); "
            "k-means: inits; mini-batch k-means: steps. Model selection: grid cells. "
            "Comparisons: algorithms."
        ),
        examples=[100],
    )
    unit: Literal["iterations", "inits", "steps", "cells", "algorithms"]
    lower_bound: float | None = Field(
        None, description="Mixture fits: the latest EM lower bound (rises as EM converges)."
    )
    init: int | None = Field(
        None, description="Fits: which init runs (1-based), of `n_init`.", examples=[1]
    )
    n_init: int | None = Field(None, examples=[2])
    stage: Literal["initializing", "iterating", "finished"] | None = Field(
        None,
        description=(
            "Fits: `initializing` while a mixture's init computes its starting point "
            "(`init_params`, k-means by default: seconds on large data, before any EM "
            "iteration), `iterating` during EM (or k-means' compiled iterations), "
            "`finished` at the end."
        ),
    )
    iteration: int | None = Field(
        None,
        description=(
            "Mixture fits: the EM iteration of the current init (the model's `n_iter` "
            "once finished with one init); mini-batch k-means: the step."
        ),
        examples=[4],
    )
    max_iter: int | None = Field(None, examples=[100])
    change: float | None = Field(
        None,
        description=(
            "Mixture fits: how much the lower bound changed in the latest iteration; EM "
            "stops (converged) once it is below `tol`."
        ),
        examples=[0.0004],
    )
    tol: float | None = Field(None, examples=[0.001])


class JobSummary(BaseModel):
    """A job as a listing shows it: everything but the result."""

    id: str = Field(examples=["019abc12de34f0a1b2c3d4e5f6a7"])
    kind: JobKind
    status: JobStatus
    progress: JobProgress
    error: Problem | None = Field(
        description="Why it failed: the problem the request would have answered."
    )
    model_id: str | None = Field(
        description="The stored model: fits, and model selections with `store_best`."
    )
    created_at: str = Field(description="ISO 8601, UTC.")
    started_at: str | None
    finished_at: str | None
    expires_at: str | None = Field(
        None,
        description=(
            "Finished jobs: when the record is removed (`GMM_JOB_RETENTION_SECONDS` after "
            "it finished)."
        ),
    )
    cancel_requested: bool = Field(
        False, description="A cancel was asked; the job stops at its next step."
    )
    request: dict[str, Any] | None = Field(
        None,
        description=(
            "Fits: what was asked (algorithm, params, name, tags, n_samples, n_features) "
            "and the per-point arrays its result answers (`include`, and `omitted` "
            "when they were left out for their size)."
        ),
    )


class Job(JobSummary):
    result: dict[str, Any] | None = Field(
        description=("Model selections and comparisons: the body the synchronous request answers.")
    )


class JobList(BaseModel):
    items: list[JobSummary] = Field(
        description="Without results: `GET /v1/jobs/{id}` (or its `/result`) has them."
    )
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
    total: int = Field(description="Jobs kept in the store.")
