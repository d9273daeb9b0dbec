"""Portable models: ``GET /v1/models/{id}/export`` and ``POST /v1/models/import``.

A model leaves and enters the service as a JSON document, never as a pickle, so a
model can move between deployments, library versions and tools without trusting
executable bytes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from service.api.deps import CatalogueDep, ModelId
from service.api.problems import responses
from service.api.responses import MODEL_CREATED_DOC, NumpyJSONResponse, model_created
from service.api.routing import FastJSONRoute
from service.domain.catalogue import portable
from service.schemas.models import ModelResource
from service.schemas.portable import IMPORT_EXAMPLES, ModelDocument

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=FastJSONRoute)


@router.get(
    "/{model_id}/export",
    response_model=ModelDocument,
    summary="Export a model as a portable JSON document",
    responses=responses(404, 422, 500),
)
def export_model(model_id: ModelId, catalogue: CatalogueDep) -> Response:
    """Everything needed to predict, score and sample (sklearn's fitted attributes and the
    params), with no pickle inside: `POST /v1/models/import` takes it back."""
    return NumpyJSONResponse(portable.export_model(catalogue, model_id))


@router.post(
    "/import",
    status_code=201,
    response_model=ModelResource,
    summary="Import a model from a portable JSON document",
    responses={
        201: MODEL_CREATED_DOC,
        **responses(400, 413, 422, 500, 503, 507),
    },
)
def import_model(
    document: Annotated[ModelDocument, Body(openapi_examples=IMPORT_EXAMPLES)],  # type: ignore[arg-type]
    catalogue: CatalogueDep,
) -> Response:
    """Build the estimator from the document's numbers (nothing is unpickled) and store it
    as a new model whose predictions, scores and samples equal the exported model's.

    Every array is checked first: shapes for the covariance_type, weights summing to 1,
    covariances symmetric positive-definite, `precisions_cholesky` their inverse's
    Cholesky factor. An imported model has no training data: its resource says
    `"imported": true`, and score percentiles and plots are unavailable.
    """
    resource = portable.import_model(catalogue, document)
    return model_created(resource)
