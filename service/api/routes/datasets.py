"""``/v1/datasets``: synthetic data a client can look at before fitting it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from service.api.deps import ServiceDep
from service.api.problems import responses
from service.api.responses import NumpyJSONResponse
from service.api.routing import FastJSONRoute
from service.schemas.data import GeneratedData, GeneratorSpec
from service.schemas.examples import GENERATE_EXAMPLES

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=FastJSONRoute)


@router.post(
    "/generate",
    response_model=GeneratedData,
    summary="Generate synthetic data",
    responses=responses(400, 413, 422),
)
def generate_dataset(
    spec: Annotated[GeneratorSpec, Body(openapi_examples=GENERATE_EXAMPLES)],  # type: ignore[arg-type]
    service: ServiceDep,
) -> Response:
    """The points and true labels a `generator` spec stands for, exactly as
    `make_blobs` (or numpy's `multivariate_normal`) gives them."""
    dataset = service.generate(spec)
    body = {"points": dataset.X, "labels": dataset.y}
    if dataset.warnings:
        body["warnings"] = dataset.warnings
    return NumpyJSONResponse(body)
