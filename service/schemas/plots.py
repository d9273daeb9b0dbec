"""Plot options (query parameters) and the ``/ellipses`` document."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.examples import SEED_ELLIPSES

#: The widest and tallest picture drawn, in pixels.
MAX_PLOT_SIDE = 4096
#: Smaller pictures leave no room for the axes, labels and legend.
MIN_PLOT_SIDE = 100

Pixels = Annotated[int, Field(ge=MIN_PLOT_SIDE, le=MAX_PLOT_SIDE)]


class PlotOptions(BaseModel):
    """Picture format and size, the same for every plot the service draws.

    ``width`` and ``height`` are pixels: a PNG is exactly ``width x height``, whatever
    ``dpi``. ``dpi`` scales text, lines and markers against the picture (the figure is
    ``width / dpi`` x ``height / dpi`` inches and fonts are sized in points); an SVG is
    that many inches, with ``dpi`` also the resolution of the scatter points rasterised
    inside it when there are very many.
    """

    format: Literal["png", "svg"] = Field(
        "png", description="`png` (image/png) or `svg` (image/svg+xml)."
    )
    width: Pixels = Field(
        640,
        description=("Picture width in pixels (100 to 4096). An SVG is width / dpi inches wide."),
    )
    height: Pixels = Field(
        480,
        description=("Picture height in pixels (100 to 4096). An SVG is height / dpi inches tall."),
    )
    dpi: Annotated[int, Field(ge=20, le=600)] = Field(
        100,
        description=(
            "Dots per inch (20 to 600). It does not change the pixel size: a higher dpi "
            "draws larger text, lines and markers on the same pixels."
        ),
    )


class ModelPlotOptions(PlotOptions):
    """A model's plot: which picture, in the format and size of every plot."""

    kind: Literal["model", "convergence"] = Field(
        "model",
        description=(
            "`model`: the points and components. `convergence`: the EM lower bound after "
            "each iteration (`lower_bounds`), mixtures only (422 for k-means)."
        ),
    )


class SigmaEllipse(BaseModel):
    """One n-sigma contour, as matplotlib's ``Ellipse(mean, width, height, angle=angle)``."""

    n_sigma: int = Field(examples=[1])
    width: float = Field(
        description="Full major axis: 2 * n_sigma * sqrt(largest eigenvalue).", examples=[3.2]
    )
    height: float = Field(
        description="Full minor axis: 2 * n_sigma * sqrt(smallest eigenvalue).", examples=[1.1]
    )
    angle: float = Field(
        description=(
            "Direction of the major axis in degrees, counterclockwise from the x axis, "
            "in [0, 180); 0 for a circle."
        ),
        examples=[30.5],
    )


class ComponentEllipses(BaseModel):
    component: int = Field(description="Component index, as in `means` and `labels`.")
    mean: list[float] = Field(description="Centre in plotted coordinates: [x, y].")
    weight: float | None = Field(description="Mixture weight; null for KMeans.")
    sigmas: list[SigmaEllipse] = Field(
        description="The 1-, 2- and 3-sigma ellipses; empty for KMeans (no covariances)."
    )


class PcaBasis(BaseModel):
    """Plotted coordinates are ``(x - mean) @ components.T`` (sklearn's ``PCA.transform``)."""

    mean: list[float] = Field(description="Training data mean, (n_features,).")
    components: list[list[float]] = Field(description="Principal axes, (2, n_features).")
    explained_variance_ratio: list[float] = Field(description="Of PC1 and PC2.")


class EllipsesResult(BaseModel):
    """Everything a client needs to draw the model's components itself.

    With 1 or 2 features the coordinates are the data's own (``projection``
    ``identity``; 1 feature puts every centre at y = 0 and each ellipse becomes the
    interval mean +- n_sigma * sd, of height 0). With more, they are the first two
    principal components of the training data (``pca``, basis in ``pca``), where
    each component's covariance is ``components @ cov @ components.T``.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [SEED_ELLIPSES]})

    model_id: str
    algorithm: str
    covariance_type: str | None = None
    projection: Literal["identity", "pca"]
    n_features: int
    n_sigmas: list[int] = Field(examples=[[1, 2, 3]])
    components: list[ComponentEllipses]
    pca: PcaBasis | None = Field(None, description="The projection basis when `pca`.")


class TrainingPoints(BaseModel):
    """A model's training points, thinned to at most ``limit`` rows for drawing."""

    model_id: str
    n_samples: int = Field(description="How many training points the model has.")
    n_features: int
    step: int = Field(description="Every step-th point is here: row i is training point i * step.")
    points: list[list[float]] = Field(description="(ceil(n_samples / step), n_features)")
