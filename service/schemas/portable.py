"""The portable model document: a fitted model as plain JSON, never a pickle.

``GET /v1/models/{id}/export`` answers one of these and ``POST /v1/models/import``
takes one back. It holds what prediction, scoring and sampling read (sklearn's fitted
attributes under their names, without the trailing underscore) and nothing else, so a
document can be checked field by field, diffed, and written by tools other than this
service. Shapes follow sklearn: ``k`` is ``n_components``, ``d`` is ``n_features``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, TypeAdapter, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError

from service.schemas.common import FiniteFloat, StrictBool, StrictInt, StrictModel
from service.schemas.models import (
    EFFECTIVE_WEIGHT_THRESHOLD,
    EffectiveWeightThreshold,
    Name,
    Tags,
)
from service.schemas.params import (
    BayesianGaussianMixtureParams,
    CovarianceType,
    GaussianMixtureParams,
    KMeansParams,
    Matrix,
    MiniBatchKMeansParams,
    Tensor,
    Vector,
)

FORMAT = "gmm-service.model"
FORMAT_VERSION = 1

#: Counters stay exact in JSON clients that read numbers as doubles.
MAX_COUNT = 2**53
Count = Annotated[StrictInt, Field(ge=1)]
Short = Annotated[str, Field(max_length=200)]


def _walk(value: Any, path: str, depth: int, min_depth: int, max_depth: int) -> None:
    if isinstance(value, list):
        if depth == max_depth:
            raise PydanticCustomError(
                "wrong_shape",
                "{path} nests deeper than {n} levels",
                {"path": path, "n": max_depth},
            )
        if not value:
            raise PydanticCustomError("too_short", "{path} is an empty array", {"path": path})
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]", depth + 1, min_depth, max_depth)
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError(
            "float_type",
            "{path} should be a number, got {got}",
            {"path": path, "got": repr(value)},
        )
    if depth < min_depth:
        raise PydanticCustomError(
            "wrong_shape", "{path} should be an array, got a number", {"path": path}
        )
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer literal beyond float range
        finite = False
    if not finite:
        raise PydanticCustomError(
            "finite_number",
            "{path} should be a finite number, got {got}",
            {"path": path, "got": repr(value)},
        )


def _nested(shape_type: Any, min_depth: int, max_depth: int) -> Any:
    """Nested lists of finite numbers whose depth the covariance_type decides.

    A union of list types would answer one error per union member for a single bad
    number; this checks once and names the entry (``covariances[0][1][1]``), and the exact
    shape is checked against n_components and n_features after parsing.
    """

    def validate(value: Any, info: ValidationInfo) -> Any:
        _walk(value, info.field_name or "value", 0, min_depth, max_depth)
        return value

    return Annotated[
        Any, PlainValidator(validate), WithJsonSchema(TypeAdapter(shape_type).json_schema())
    ]


#: 1 to 3 levels: spherical (k,), diag (k, d) and tied (d, d), full (k, d, d).
CovarianceArray = _nested(Vector | Matrix | Tensor, 1, 3)
#: dirichlet_process (2, k), dirichlet_distribution (k,).
WeightConcentrationArray = _nested(Vector | Matrix, 1, 2)
#: (k,), or one number for covariance_type 'tied'.
DegreesOfFreedomValue = _nested(FiniteFloat | Vector, 0, 1)


class ExportSource(StrictModel):
    """Where the document came from: informative only, never needed to predict."""

    model_id: Short | None = Field(None, description="Id of the exported model.")
    created_at: Short | None = Field(None, description="When it was fitted (ISO 8601, UTC).")
    n_samples: Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)] | None = Field(
        None, description="Training samples it was fitted on; the imported resource shows it."
    )
    versions: Annotated[dict[Short, Short], Field(max_length=32)] = Field(
        default_factory=dict,
        description="Library versions it was fitted with (service, python, sklearn, numpy...).",
    )


class _DocumentBase(StrictModel):
    format: Literal["gmm-service.model"] = Field(description=f"Always `{FORMAT}`.")
    format_version: Literal[1] = Field(description="Version of this layout.")
    name: Name | None = Field(None, description="The exported model's name, if any.")
    tags: Tags = Field(
        default_factory=dict,
        description="The exported model's tags; the import gets them. Optional (`{}`).",
    )
    n_features: Count
    n_components: Count = Field(description="n_components (mixtures) or n_clusters (k-means).")
    n_iter: Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]
    source: ExportSource | None = None


class _MixtureDocument(_DocumentBase):
    covariance_type: CovarianceType
    weights: Vector = Field(description="weights_, (k,): non-negative, summing to 1.")
    means: Matrix = Field(description="means_, (k, d).")
    covariances: CovarianceArray = Field(
        description=(
            "covariances_: full (k, d, d), tied (d, d), diag (k, d), spherical (k,); "
            "symmetric positive-definite."
        )
    )
    precisions_cholesky: CovarianceArray = Field(
        description=(
            "precisions_cholesky_, same shape as covariances: used as given (so that an "
            "import predicts bit-for-bit like the original) after a check that it is the "
            "Cholesky factor of the covariances' inverse."
        )
    )
    converged: StrictBool
    lower_bound: FiniteFloat | None = Field(description="lower_bound_; null when not finite.")
    lower_bounds: list[FiniteFloat | None] = Field(
        default_factory=list,
        description=(
            "lower_bounds_: the lower bound after each EM iteration of the best init "
            "(the convergence trace); null where not finite. Optional: documents "
            "written before it was exported import with an empty trace."
        ),
    )


class GaussianMixtureDocument(_MixtureDocument):
    algorithm: Literal["gaussian_mixture"]
    params: GaussianMixtureParams


class BayesianGaussianMixtureDocument(_MixtureDocument):
    algorithm: Literal["bayesian_gaussian_mixture"]
    params: BayesianGaussianMixtureParams
    weight_concentration: WeightConcentrationArray = Field(
        description=(
            "weight_concentration_: dirichlet_process two rows (2, k), "
            "dirichlet_distribution (k,); positive."
        )
    )
    mean_precision: Vector = Field(description="mean_precision_, (k,); positive.")
    degrees_of_freedom: DegreesOfFreedomValue = Field(
        description="degrees_of_freedom_: (k,), a number for tied; each above n_features - 1."
    )
    effective_weight_threshold: EffectiveWeightThreshold = EFFECTIVE_WEIGHT_THRESHOLD


class _CentroidDocument(_DocumentBase):
    cluster_centers: Matrix = Field(description="cluster_centers_, (k, d).")
    inertia: Annotated[FiniteFloat, Field(ge=0)]


class KMeansDocument(_CentroidDocument):
    algorithm: Literal["kmeans"]
    params: KMeansParams


class MiniBatchKMeansDocument(_CentroidDocument):
    algorithm: Literal["minibatch_kmeans"]
    params: MiniBatchKMeansParams
    n_steps: Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]


ModelDocument = Annotated[
    GaussianMixtureDocument
    | BayesianGaussianMixtureDocument
    | KMeansDocument
    | MiniBatchKMeansDocument,
    Field(discriminator="algorithm"),
]

IMPORT_EXAMPLES = {
    "diag-mixture": {
        "summary": "A 2-component diagonal mixture written by hand",
        "value": {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 2, "covariance_type": "diag", "random_state": 0},
            "n_features": 2,
            "n_components": 2,
            "covariance_type": "diag",
            "weights": [0.5, 0.5],
            "means": [[0.0, 0.0], [5.0, 5.0]],
            "covariances": [[1.0, 1.0], [4.0, 0.25]],
            "precisions_cholesky": [[1.0, 1.0], [0.5, 2.0]],
            "converged": True,
            "n_iter": 2,
            "lower_bound": -3.5,
            "source": {"n_samples": 200},
        },
    },
    "kmeans": {
        "summary": "Two k-means centers",
        "value": {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "algorithm": "kmeans",
            "params": {"n_clusters": 2, "n_init": 10, "random_state": 0},
            "n_features": 2,
            "n_components": 2,
            "cluster_centers": [[0.0, 0.5], [10.0, 10.5]],
            "inertia": 1.0,
            "n_iter": 2,
        },
    },
}
