"""Pictures: a model's plot and ellipses, and the plot of a generated dataset."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response

from service.api.deps import CatalogueDep, DatasetsDep, ModelId
from service.api.problems import responses
from service.api.responses import NumpyJSONResponse
from service.api.routing import FastJSONRoute
from service.domain.analysis import geometry, plotting
from service.schemas.data import GeneratorSpec
from service.schemas.examples import PLOT_GENERATOR_EXAMPLES
from service.schemas.plots import EllipsesResult, ModelPlotOptions, PlotOptions, TrainingPoints

router = APIRouter(tags=["plots"], route_class=FastJSONRoute)

_IMAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The picture, as `format` asks.",
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/svg+xml": {"schema": {"type": "string"}},
        },
    }
}


def _image(content: bytes, options: PlotOptions, stem: str) -> Response:
    return Response(
        content,
        media_type=plotting.MEDIA_TYPES[options.format],
        headers={"Content-Disposition": f'inline; filename="{stem}.{options.format}"'},
    )


def _size(options: PlotOptions) -> plotting.FigureSize:
    return plotting.FigureSize(width=options.width, height=options.height, dpi=options.dpi)


@router.get(
    "/v1/models/{model_id}/plot",
    response_class=Response,
    summary="Plot a model: training points, means, covariance ellipses; or its convergence",
    responses={**_IMAGE_RESPONSE, **responses(404, 422, 500)},
)
def plot_model(
    model_id: ModelId, options: Annotated[ModelPlotOptions, Query()], catalogue: CatalogueDep
) -> Response:
    """`kind=model` (default): the training points coloured by label, the means as
    crosses and, for mixtures, each component's 1-, 2- and 3-sigma covariance
    ellipses (any `covariance_type`). `kind=convergence`: the convergence trace, the
    lower bound after each EM iteration of the best init; k-means has none (422).

    More than 2 features are projected onto the first two principal components of
    the training data; 1 feature is drawn as a histogram with each component's
    weighted density. Over 20,000 training points are shown as a fixed random
    subsample. The title says which applies. Imported models hold no training
    points: 422 (use `/ellipses`).
    """
    resource, bundle = catalogue.load_bundle(model_id)
    if options.kind == "convergence":
        content = plotting.convergence_plot(
            resource, bundle, fmt=options.format, size=_size(options)
        )
        return _image(content, options, f"convergence-{model_id}")
    content = plotting.model_plot(resource, bundle, fmt=options.format, size=_size(options))
    return _image(content, options, f"model-{model_id}")


@router.get(
    "/v1/models/{model_id}/ellipses",
    response_model=EllipsesResult,
    summary="Covariance ellipses of a model's components, for a client to draw",
    responses=responses(404, 422, 500),
)
def get_model_ellipses(model_id: ModelId, catalogue: CatalogueDep) -> Response:
    """Per component: its centre, its weight and its 1-, 2- and 3-sigma ellipses
    (full axis lengths `width` >= `height`, `angle` in degrees counterclockwise from
    the x axis), in the same coordinates as `/plot`: the data's own for 1-2 features,
    the training data's first two principal components beyond (basis in `pca`).

    KMeans has no covariances: each component gives its centre only (`weight` null,
    `sigmas` empty). An imported model with more than 2 features is a 422, as its
    principal components would need its training points.
    """
    resource, bundle = catalogue.load_bundle(model_id)
    return NumpyJSONResponse(geometry.model_ellipses(resource, bundle))


#: The most training points one ``/points`` answer holds (a JSON page a browser draws).
MAX_DRAWN_POINTS = 50_000


@router.get(
    "/v1/models/{model_id}/points",
    response_model=TrainingPoints,
    summary="A model's training points, thinned for a client to draw",
    responses=responses(404, 422, 500),
)
def get_model_points(
    model_id: ModelId,
    catalogue: CatalogueDep,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=MAX_DRAWN_POINTS,
            description="At most this many points: every step-th is answered.",
        ),
    ] = 5000,
) -> Response:
    """The points the model was fitted on, in the data's own features, as every
    `step`-th row: what the explorer draws when it opens a stored model
    (`/explorer?model=<id or name>`). Its `/ellipses` say how to project them beyond two
    features. An imported model holds none (422)."""
    resource, bundle = catalogue.load_bundle(model_id)
    return NumpyJSONResponse(geometry.training_points(resource, bundle, limit))


@router.post(
    "/v1/datasets/plot",
    response_class=Response,
    summary="Plot generated data by true label",
    responses={**_IMAGE_RESPONSE, **responses(400, 413, 422)},
)
def plot_dataset(
    spec: Annotated[GeneratorSpec, Body(openapi_examples=PLOT_GENERATOR_EXAMPLES)],  # type: ignore[arg-type]
    options: Annotated[PlotOptions, Query()],
    datasets: DatasetsDep,
) -> Response:
    """The points `POST /v1/datasets/generate` answers for the same spec, coloured by
    their true labels; a `gaussian_mixture` spec also shows its true means and 1-, 2-
    and 3-sigma ellipses. Same `format`, sizes and projection rules as a model's plot.
    """
    dataset = datasets.generate(spec)
    assert dataset.y is not None  # generators always know their labels
    content = plotting.generated_plot(
        spec, dataset.X, dataset.y, fmt=options.format, size=_size(options)
    )
    return _image(content, options, f"dataset-{spec.kind}")
