"""``/v1/datasets``: data uploaded once and fitted many times, and synthetic data a
client can look at before fitting it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request, Response

from service.api.binary import (
    CSV,
    NPY,
    BinaryBodyRoute,
    accepts,
    binary_body,
    binary_request_doc,
    missing_body,
)
from service.api.deps import DatasetsDep, SettingsDep
from service.api.problems import responses
from service.api.responses import NumpyJSONResponse
from service.domain.datasets.files import csv_header_param
from service.ids import DATASET_CURSOR_PATTERN
from service.schemas.common import MAX_TTL_SECONDS
from service.schemas.data import (
    DatasetCreate,
    DatasetList,
    DatasetResource,
    DataSpec,
    GeneratedData,
    GeneratorSpec,
)
from service.schemas.examples import GENERATE_EXAMPLES, SEED_BLOBS

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=BinaryBodyRoute)

DATASET_EXAMPLES = {
    "points": {
        "summary": "Explicit points",
        "value": {"points": [[0, 0], [0, 1], [10, 10], [10, 11]], "name": "four-points"},
    },
    "seed-blobs": {
        "summary": "The notebook's blobs, generated and stored",
        "value": {"generator": SEED_BLOBS, "name": "seed-blobs"},
    },
}


@router.post(
    "/generate",
    response_model=GeneratedData,
    summary="Generate synthetic data",
    responses=responses(400, 413, 422),
)
def generate_dataset(
    spec: Annotated[GeneratorSpec, Body(openapi_examples=GENERATE_EXAMPLES)],  # type: ignore[arg-type]
    datasets: DatasetsDep,
) -> Response:
    """The points and true labels a `generator` spec stands for, exactly as
    `make_blobs` (or numpy's `multivariate_normal`) gives them."""
    dataset = datasets.generate(spec)
    body = {"points": dataset.X, "labels": dataset.y}
    if dataset.warnings:
        body["warnings"] = dataset.warnings
    return NumpyJSONResponse(body)


# -- stored datasets ----------------------------------------------------------------
#: Routes whose bodies may grow past GMM_MAX_BODY_BYTES, up to GMM_MAX_UPLOAD_BYTES.
UPLOAD_ROUTES = frozenset({("POST", "/v1/datasets")})

DatasetId = Annotated[
    str,
    Path(
        description=(
            "A dataset id: the sha256 (64 hex digits) of its points. Anything else answers 404."
        ),
        examples=["9f2c0c7d1a6b43e5c1c2b9d0e4f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0"],
    ),
]

_DATASET_DOC = {
    "headers": {"Location": {"description": "URL of the dataset", "schema": {"type": "string"}}}
}


@router.post(
    "",
    status_code=201,
    response_model=DatasetResource,
    summary="Upload a dataset (.npy, CSV or JSON)",
    responses={
        200: {
            "model": DatasetResource,
            "description": "The same array is stored already: its resource, unchanged.",
            **_DATASET_DOC,
        },
        201: {"description": "Stored.", **_DATASET_DOC},
        **responses(400, 413, 422, 500, 503, 507),
    },
    openapi_extra=binary_request_doc(NPY, CSV),
)
@accepts(NPY, CSV, limit="max_upload_bytes")
def create_dataset(
    request: Request,
    datasets: DatasetsDep,
    spec: Annotated[DatasetCreate, Body(openapi_examples=DATASET_EXAMPLES)] = None,  # type: ignore[assignment]
    name: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=r"^[^\x00-\x1f\x7f]*$",
            description="A label for a .npy or CSV upload (JSON bodies carry `name`).",
        ),
    ] = None,
    ttl_seconds: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_TTL_SECONDS,
            description=(
                "For a .npy or CSV upload (JSON bodies carry `ttl_seconds`): delete the "
                "dataset this many seconds after it is stored."
            ),
        ),
    ] = None,
) -> Response:
    """Store points once, by content: `Content-Type: application/x-npy` (a `.npy`
    file, never unpickled: integers or floats, 2-D), `text/csv` (numbers only, an
    optional header row; `text/csv; header=present|absent` says which), or JSON
    `{"points"}` / `{"generator"}`. Everything is stored as float64.

    Without `header=`, a CSV's first line is a header only when none of its cells
    is a number; a first line with a number in it is data, and a cell of it that is
    not a number is a 422 naming its row and column.

    The id is the sha256 of the float64 array and its shape: the same array sent again
    answers 200 with the stored resource instead of 201. `.npy` and CSV bodies may be
    up to `GMM_MAX_UPLOAD_BYTES`, JSON ones up to `GMM_MAX_BODY_BYTES`; the points
    must fit `GMM_MAX_POINTS`, `GMM_MAX_FEATURES` and `GMM_MAX_VALUES` as for any fit.
    `{"dataset_id": ...}` then works wherever a request takes `data`.
    """
    body = binary_body(request)
    if body is not None:
        resource, created = datasets.upload(
            body.media_type,
            body.file,
            csv_header=csv_header_param(body.content_type),
            name=name,
            ttl_seconds=ttl_seconds,
        )
    elif spec is None:
        raise missing_body()
    else:
        data = DataSpec(points=spec.points, generator=spec.generator)
        resource, created = datasets.create_from_spec(
            data, name=spec.name or name, ttl_seconds=spec.ttl_seconds or ttl_seconds
        )
    return NumpyJSONResponse(
        resource,
        status_code=201 if created else 200,
        headers={"Location": f"/v1/datasets/{resource['id']}"},
    )


@router.get(
    "",
    response_model=DatasetList,
    summary="List datasets, newest first",
    responses=responses(422, 500),
)
def list_datasets(
    datasets: DatasetsDep,
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1, le=1000, description="Page size.")] = None,
    cursor: Annotated[
        str | None,
        Query(pattern=DATASET_CURSOR_PATTERN, description="`next_cursor` of the previous page."),
    ] = None,
) -> Response:
    """Dataset resources from their metadata; no array is read."""
    page = datasets.list(limit=limit or settings.default_page_size, cursor=cursor)
    return NumpyJSONResponse(page)


@router.get(
    "/{dataset_id}",
    response_model=DatasetResource,
    summary="Read a dataset's description",
    responses=responses(404, 422, 500),
)
def get_dataset(dataset_id: DatasetId, datasets: DatasetsDep) -> Response:
    return NumpyJSONResponse(datasets.get(dataset_id))


@router.delete(
    "/{dataset_id}",
    status_code=204,
    summary="Delete a dataset",
    responses=responses(404, 422, 500, 503),
)
def delete_dataset(dataset_id: DatasetId, datasets: DatasetsDep) -> Response:
    """Gone for every worker at once. Models fitted on it keep working: each holds its
    own reference to its training points (plots and score percentiles need them), and
    the bytes are freed with the last model that uses them."""
    datasets.delete(dataset_id)
    return Response(status_code=204)
