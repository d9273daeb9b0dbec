"""Requests and responses of the ``/v1/models`` resource."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from service.schemas.common import Matrix, StrictModel, WarningItem
from service.schemas.data import SEED_BLOBS, DataSpec
from service.schemas.params import CovarianceType, GaussianMixtureParams, KMeansParams

PerPoint = Literal["labels", "probabilities", "distances"]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]


class _FitRequestBase(StrictModel):
    data: DataSpec
    name: Name | None = Field(None, description="A free label for people; not unique.")
    include: list[PerPoint] | None = Field(
        None,
        description=(
            "Per-point arrays to answer for the training data. Default: `labels` and, "
            "for mixtures, `probabilities`. `[]` answers the model resource alone."
        ),
    )


class GaussianMixtureFit(_FitRequestBase):
    algorithm: Literal["gaussian_mixture"]
    params: GaussianMixtureParams = Field(default_factory=GaussianMixtureParams)


class KMeansFit(_FitRequestBase):
    algorithm: Literal["kmeans"]
    params: KMeansParams = Field(default_factory=KMeansParams)


FitRequest = Annotated[GaussianMixtureFit | KMeansFit, Field(discriminator="algorithm")]
ALGORITHMS = ("gaussian_mixture", "kmeans")

FIT_EXAMPLES = {
    "seed-blobs": {
        "summary": "The notebook's blobs, 4-component mixture",
        "value": {
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 4, "random_state": 0},
            "data": {"generator": SEED_BLOBS},
            "name": "seed-blobs",
        },
    },
    "kmeans-points": {
        "summary": "KMeans on explicit points",
        "value": {
            "algorithm": "kmeans",
            "params": {"n_clusters": 2, "n_init": 10, "random_state": 0},
            "data": {"points": [[0, 0], [0, 1], [10, 10], [10, 11]]},
        },
    },
}

Covariances = list[float] | list[list[float]] | list[list[list[float]]]


class _ModelBase(BaseModel):
    id: str
    name: str | None
    created_at: str = Field(description="ISO 8601, UTC.")
    n_samples: int
    n_features: int
    n_components: int
    fit_seconds: float
    means: list[list[float]] = Field(description="(n_components, n_features)")
    n_iter: int
    warnings: list[WarningItem] = Field(default_factory=list)


class GaussianMixtureModel(_ModelBase):
    algorithm: Literal["gaussian_mixture"]
    params: GaussianMixtureParams
    covariance_type: CovarianceType
    weights: list[float] = Field(description="(n_components,)")
    covariances: Covariances = Field(description="Shape as sklearn's covariance_type gives.")
    precisions: Covariances = Field(description="Inverse covariances, same shape.")
    converged: bool
    lower_bound: float | None = Field(description="null when not finite (max_iter=0).")
    bic: float | None
    aic: float | None


class KMeansModel(_ModelBase):
    algorithm: Literal["kmeans"]
    params: KMeansParams
    inertia: float


ModelResource = Annotated[GaussianMixtureModel | KMeansModel, Field(discriminator="algorithm")]


class _PerPointFields(BaseModel):
    labels: list[int] | None = Field(None, description="(n_samples,)")
    probabilities: list[list[float]] | None = Field(
        None, description="(n_samples, n_components); mixtures only."
    )
    distances: list[list[float]] | None = Field(
        None, description="(n_samples, n_clusters) distances to each center; KMeans only."
    )


class GaussianMixtureFitted(GaussianMixtureModel, _PerPointFields):
    pass


class KMeansFitted(KMeansModel, _PerPointFields):
    pass


FittedModel = Annotated[GaussianMixtureFitted | KMeansFitted, Field(discriminator="algorithm")]


class ModelList(BaseModel):
    items: list[ModelResource]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next page; null on the last page."
    )
    total: int


class PointsRequest(StrictModel):
    points: Matrix


class Prediction(BaseModel):
    labels: list[int]
    probabilities: list[list[float]] | None = Field(None, description="Mixtures only.")
    distances: list[list[float]] | None = Field(None, description="KMeans only.")
