"""Plot options (query parameters) and the ``/ellipses`` document."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.schemas.examples import SEED_ELLIPSES

#: The largest picture drawn, in pixels (width x height x dpi^2): 4096 x 4096.
MAX_PLOT_PIXELS = 4096 * 4096

#: Query parameters arrive as text, so not the (strict) body ``FiniteFloat``.
Inches = Annotated[float, Field(ge=1, le=40, allow_inf_nan=False)]


class PlotOptions(BaseModel):
    """Picture format and size; sizes are in inches, as matplotlib's ``figsize``.

    A PNG is ``width * dpi`` x ``height * dpi`` pixels (defaults: 640 x 480); an SVG
    is ``width`` x ``height`` inches, with ``dpi`` setting only the resolution of the
    scatter points rasterised inside it when there are very many.
    """

    format: Literal["png", "svg"] = Field(
        "png", description="`png` (image/png) or `svg` (image/svg+xml)."
    )
    width: Inches = Field(6.4, description="Figure width in inches (1 to 40).")
    height: Inches = Field(4.8, description="Figure height in inches (1 to 40).")
    dpi: Annotated[int, Field(ge=20, le=600)] = Field(
        100,
        description=(
            "Dots per inch (20 to 600): PNG pixels = inches x dpi. The picture may hold "
            "at most 4096 x 4096 pixels in all (width x height x dpi^2)."
        ),
    )

    @model_validator(mode="after")
    def _bounded_pixels(self) -> PlotOptions:
        pixels = round(self.width * self.dpi) * round(self.height * self.dpi)
        if pixels > MAX_PLOT_PIXELS:
            raise ValueError(
                f"width x height x dpi^2 = {pixels:,} pixels exceeds the limit of "
                f"{MAX_PLOT_PIXELS:,} (4096 x 4096); lower dpi or the size"
            )
        return self


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
