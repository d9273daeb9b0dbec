"""Portable models: ``GET /v1/models/{id}/export`` and ``POST /v1/models/import``.

A model leaves and enters the service as a JSON document, never as a pickle, so a
model can move between deployments, library versions and tools without trusting
executable bytes. It can also leave as ONNX (``?format=onnx``), for runtimes that
know nothing of this service; nothing imports that back.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response

from service.api.deps import CatalogueDep, ModelId
from service.api.problems import responses
from service.api.responses import MODEL_CREATED_DOC, NumpyJSONResponse, model_created
from service.api.routing import FastJSONRoute
from service.domain.catalogue import onnx_export, portable
from service.schemas.models import ModelResource
from service.schemas.portable import IMPORT_EXAMPLES, ModelDocument

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=FastJSONRoute)


_ONNX_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "The portable JSON document (`format=json`), or the ONNX model's bytes (`format=onnx`)."
        ),
        "content": {onnx_export.MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.get(
    "/{model_id}/export",
    response_model=ModelDocument,
    summary="Export a model as a portable JSON document, or as ONNX",
    responses={**_ONNX_RESPONSE, **responses(404, 422, 500, 501)},
)
def export_model(
    model_id: ModelId,
    catalogue: CatalogueDep,
    format: Annotated[
        Literal["json", "onnx"],
        Query(
            description=(
                "`json`: the portable document `POST /v1/models/import` takes back. "
                "`onnx`: an ONNX model for onnxruntime (needs the server's `onnx` extra)."
            )
        ),
    ] = "json",
) -> Response:
    """`format=json` (the default): everything needed to predict, score and sample
    (sklearn's fitted attributes and the params), with no pickle inside: `POST
    /v1/models/import` takes it back.

    `format=onnx`: the model as ONNX (`application/onnx`), converted by skl2onnx, in
    float64 throughout, for onnxruntime in any language. Input `points`, float64
    `[N, n_features]`. Outputs: `labels`, int64 `[N]` (sklearn's `predict`); for
    mixtures `probabilities`, float64 `[N, n_components]` (`predict_proba`) and
    `log_likelihood`, float64 `[N]` (`score_samples`); for k-means `distances`, float64
    `[N, n_clusters]` (`transform`). The model's `metadata_props` say the same
    (`gmm_service.inputs`, `gmm_service.outputs`, as JSON) with `gmm_service.model_id`,
    `algorithm`, `n_features`, `n_components` and, for mixtures, `covariance_type`.
    onnxruntime's answers are sklearn's within 1e-9 (k-means distances of a point at a
    center: within 1e-7, as sklearn's own `transform` there). A server installed
    without the `onnx` extra answers 501 naming it (`pip install 'gmm-service[onnx]'`).
    """
    if format == "onnx":
        content = onnx_export.export_onnx(catalogue, model_id)
        return Response(
            content,
            media_type=onnx_export.MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{model_id}.onnx"'},
        )
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
