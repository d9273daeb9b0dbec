"""Estimator parameters: scikit-learn's constructor names, defaults and valid values.

Declared once here; the service's limits (``GMM_MAX_*``) are checked on top of them
in ``service.domain.training.estimators``. A test compares every default with sklearn's own.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from service.schemas.common import FiniteFloat, Seed, StrictBool, StrictInt, StrictModel

NonNegativeFloat = Annotated[FiniteFloat, Field(ge=0)]
Vector = Annotated[list[FiniteFloat], Field(min_length=1)]
Matrix = Annotated[list[Vector], Field(min_length=1)]
Tensor = Annotated[list[Matrix], Field(min_length=1)]
CovarianceType = Literal["full", "tied", "diag", "spherical"]


class _MixtureParams(StrictModel):
    """Parameters GaussianMixture and BayesianGaussianMixture share."""

    n_components: Annotated[StrictInt, Field(ge=1)] = 1
    covariance_type: CovarianceType = "full"
    tol: NonNegativeFloat = 1e-3
    reg_covar: NonNegativeFloat = 1e-6
    max_iter: Annotated[StrictInt, Field(ge=0)] = 100
    n_init: Annotated[StrictInt, Field(ge=1)] = 1
    init_params: Literal["kmeans", "k-means++", "random", "random_from_data"] = "kmeans"
    random_state: Seed | None = None


class GaussianMixtureParams(_MixtureParams):
    """``sklearn.mixture.GaussianMixture`` constructor parameters."""

    # A matrix is taken only to be refused with sklearn's shape message, by the domain.
    weights_init: Vector | Matrix | None = Field(None, description="Shape (n_components,).")
    means_init: Matrix | None = Field(None, description="Shape (n_components, n_features).")
    precisions_init: Vector | Matrix | Tensor | None = Field(
        None,
        description=(
            "Shape by covariance_type: full (n_components, n_features, n_features), "
            "tied (n_features, n_features), diag (n_components, n_features), "
            "spherical (n_components,)."
        ),
    )


PositiveFloat = Annotated[FiniteFloat, Field(gt=0)]


class BayesianGaussianMixtureParams(_MixtureParams):
    """``sklearn.mixture.BayesianGaussianMixture`` constructor parameters."""

    weight_concentration_prior_type: Literal["dirichlet_process", "dirichlet_distribution"] = (
        "dirichlet_process"
    )
    weight_concentration_prior: PositiveFloat | None = None
    mean_precision_prior: PositiveFloat | None = None
    mean_prior: Vector | None = Field(None, description="Shape (n_features,).")
    degrees_of_freedom_prior: PositiveFloat | None = Field(
        None, description="Must be greater than n_features - 1."
    )
    covariance_prior: PositiveFloat | Vector | Matrix | None = Field(
        None,
        description=(
            "Shape by covariance_type: full and tied (n_features, n_features), "
            "diag (n_features,), spherical a number."
        ),
    )


class KMeansParams(StrictModel):
    """``sklearn.cluster.KMeans`` constructor parameters."""

    n_clusters: Annotated[StrictInt, Field(ge=1)] = 8
    init: Literal["k-means++", "random"] | Matrix = Field(
        "k-means++", description="A method name, or initial centers (n_clusters, n_features)."
    )
    n_init: Literal["auto"] | Annotated[StrictInt, Field(ge=1)] = "auto"
    max_iter: Annotated[StrictInt, Field(ge=1)] = 300
    tol: NonNegativeFloat = 1e-4
    random_state: Seed | None = None
    algorithm: Literal["lloyd", "elkan"] = "lloyd"


class MiniBatchKMeansParams(StrictModel):
    """``sklearn.cluster.MiniBatchKMeans`` constructor parameters."""

    n_clusters: Annotated[StrictInt, Field(ge=1)] = 8
    init: Literal["k-means++", "random"] | Matrix = Field(
        "k-means++", description="A method name, or initial centers (n_clusters, n_features)."
    )
    max_iter: Annotated[StrictInt, Field(ge=1)] = 100
    batch_size: Annotated[StrictInt, Field(ge=1)] = 1024
    compute_labels: StrictBool = True
    random_state: Seed | None = None
    tol: NonNegativeFloat = 0.0
    max_no_improvement: Annotated[StrictInt, Field(ge=0)] | None = 10
    init_size: Annotated[StrictInt, Field(ge=1)] | None = None
    n_init: Literal["auto"] | Annotated[StrictInt, Field(ge=1)] = "auto"
    reassignment_ratio: NonNegativeFloat = 0.01


# An algorithm with its parameters: the shape every request that fits shares.
class GaussianMixtureItem(StrictModel):
    algorithm: Literal["gaussian_mixture"]
    params: GaussianMixtureParams = Field(default_factory=GaussianMixtureParams)


class BayesianGaussianMixtureItem(StrictModel):
    algorithm: Literal["bayesian_gaussian_mixture"]
    params: BayesianGaussianMixtureParams = Field(default_factory=BayesianGaussianMixtureParams)


class KMeansItem(StrictModel):
    algorithm: Literal["kmeans"]
    params: KMeansParams = Field(default_factory=KMeansParams)


class MiniBatchKMeansItem(StrictModel):
    algorithm: Literal["minibatch_kmeans"]
    params: MiniBatchKMeansParams = Field(default_factory=MiniBatchKMeansParams)
