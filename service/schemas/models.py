"""Requests and responses of the ``/v1/models`` resource."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from service.ids import MODEL_ID_PATTERN
from service.schemas.common import (
    FiniteFloat,
    Points,
    Seed,
    StrictInt,
    StrictModel,
    TtlSeconds,
    Wait,
    WarningItem,
)
from service.schemas.data import DataSpec
from service.schemas.examples import (
    SEED_BLOBS,
    SEED_FITTED,
    SEED_MODEL,
    SEED_POINTS,
    SEED_PREDICTION,
    SEED_SAMPLE,
    SEED_SAMPLE_REQUEST,
    SEED_SCORE,
    SEED_SUMMARY,
)
from service.schemas.params import (
    BayesianGaussianMixtureItem,
    BayesianGaussianMixtureParams,
    CovarianceType,
    GaussianMixtureItem,
    GaussianMixtureParams,
    KMeansItem,
    KMeansParams,
    MiniBatchKMeansItem,
    MiniBatchKMeansParams,
)

PerPoint = Literal["labels", "probabilities", "distances"]
#: Text for people (names, tag values): no control characters.
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=PRINTABLE_PATTERN)]
#: The fitted algorithms, as ``estimators.ALGORITHMS`` names them (a test checks).
AlgorithmName = Literal[
    "gaussian_mixture", "bayesian_gaussian_mixture", "kmeans", "minibatch_kmeans"
]

#: A model has at most this many tags.
MAX_TAGS = 32
TAG_KEY_PATTERN = r"^[A-Za-z0-9_.:/-]+$"
TAG_KEY_MAX = 64
TAG_VALUE_MAX = 256
#: ``?tag=key:value``: a tag written as its key, a colon and its value.
TAG_FILTER_PATTERN = rf"^[A-Za-z0-9_.:/-]{{1,{TAG_KEY_MAX}}}:[^\x00-\x1f\x7f]{{0,{TAG_VALUE_MAX}}}$"
TagKey = Annotated[str, Field(min_length=1, max_length=TAG_KEY_MAX, pattern=TAG_KEY_PATTERN)]
TagValue = Annotated[str, Field(max_length=TAG_VALUE_MAX, pattern=PRINTABLE_PATTERN)]
_TAG_VALUE_SCHEMA = {"type": "string", "maxLength": TAG_VALUE_MAX, "pattern": PRINTABLE_PATTERN}


def _tags_schema(value: dict[str, object]) -> WithJsonSchema:
    """pydantic documents a key pattern as ``patternProperties``, which lets any other
    key through in JSON Schema; ``propertyNames`` says what the validator enforces, so
    a client (or a fuzzer) generating from the document sends only keys we accept."""
    return WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_TAGS,
            "propertyNames": {
                "minLength": 1,
                "maxLength": TAG_KEY_MAX,
                "pattern": TAG_KEY_PATTERN,
            },
            "additionalProperties": value,
        }
    )


#: A model's tags: a small map of strings, for people and for ``GET /v1/models?tag=``.
Tags = Annotated[
    dict[TagKey, TagValue], Field(max_length=MAX_TAGS), _tags_schema(_TAG_VALUE_SCHEMA)
]
#: Tags in a merge patch: a value sets its key, null removes it.
TagsPatch = Annotated[
    dict[TagKey, TagValue | None],
    Field(max_length=MAX_TAGS),
    _tags_schema({"anyOf": [_TAG_VALUE_SCHEMA, {"type": "null"}]}),
]
_TAGS_DESCRIPTION = (
    f"At most {MAX_TAGS} tags; keys 1-{TAG_KEY_MAX} characters of `A-Za-z0-9_.:/-`, "
    f"values at most {TAG_VALUE_MAX} characters (no control characters)."
)
ModelIdStr = Annotated[str, Field(pattern=MODEL_ID_PATTERN, description="A model id.")]

#: A Bayesian mixture's components with a weight above this count as effective, unless
#: the request (or an imported document) says otherwise.
EFFECTIVE_WEIGHT_THRESHOLD = 0.01
EffectiveWeightThreshold = Annotated[
    FiniteFloat,
    Field(ge=0, le=1, description="Components with a weight above this count as effective."),
]


class _FitRequestBase(StrictModel):
    data: DataSpec
    name: Name | None = Field(None, description="A free label for people; not unique.")
    ttl_seconds: TtlSeconds | None = Field(
        None,
        description=(
            "Delete the model this many seconds after it is stored (its `expires_at`), "
            "as if `DELETE` had been called. Unset: kept until deleted."
        ),
    )
    tags: Tags = Field(
        default_factory=dict,
        description=f"Labels to find the model by (`GET /v1/models?tag=key:value`). "
        f"{_TAGS_DESCRIPTION}",
        examples=[{"project": "seed", "stage": "dev"}],
    )
    include: list[PerPoint] | None = Field(
        None,
        description=(
            "Per-point arrays to answer for the training data. Default: `labels` and, "
            "for mixtures, `probabilities`, unless together they would hold more than "
            "GMM_MAX_DEFAULT_PER_POINT_VALUES numbers (1,000,000 by default): then they "
            "are left out and `omitted` names them. Named here, they are answered at any "
            "size. `[]` answers the model resource alone."
        ),
    )
    align_to: ModelIdStr | None = Field(
        None,
        description=(
            "Permute the new model's components to best match this model's means "
            "(Hungarian matching); it must have the same n_components and n_features."
        ),
    )
    engine: Literal["local", "dask"] = Field(
        "local",
        description=(
            "`local`: fit in this service, as sklearn in-process. `dask`: fit on the Dask "
            "cluster of GMM_DASK_SCHEDULER, out of core: the dataset is read in row "
            "chunks by the workers straight from the store (points or a generator in "
            "the body are stored as a dataset first), so it may be larger than any "
            "worker's memory. For `gaussian_mixture` (EM, n_init=1, started by k-means "
            "on a 20,000-row sample or from weights_init/means_init/precisions_init, "
            "which give sklearn's numbers from the same start) and `kmeans` (Lloyd, "
            "n_init=1, k-means++ or given centres). GMM_MAX_POINTS does not apply to "
            "stored datasets fitted this way. 422 without a cluster."
        ),
    )
    wait: Wait = Field(
        None,
        description=(
            "`false`: answer 202 at once with `Location: /v1/jobs/{id}` and the job "
            "resource; the fit runs in the background and the job's `model_id` names the "
            "stored model (`GET /v1/jobs/{id}/result` then answers what 201 would have). "
            "`true`: answer 201 with the model when the fit is done, however long it "
            "takes. Unset: wait up to GMM_SYNC_WAIT_SECONDS (or `Prefer: wait=N`) for the "
            "fit, then answer 201 if it is done and 202 with the job if not."
        ),
    )


class GaussianMixtureFit(GaussianMixtureItem, _FitRequestBase):
    pass


class BayesianGaussianMixtureFit(BayesianGaussianMixtureItem, _FitRequestBase):
    effective_weight_threshold: EffectiveWeightThreshold = EFFECTIVE_WEIGHT_THRESHOLD


#: Per-point weights of a k-means fit: sklearn's ``fit(X, sample_weight=...)``.
#: Negative weights are refused although sklearn's k-means takes them: they turn the
#: objective into one that is not bounded below, and no centroid means anything then.
SampleWeight = Annotated[list[Annotated[FiniteFloat, Field(ge=0)]], Field(min_length=1)]
_SAMPLE_WEIGHT_DESCRIPTION = (
    "Each training point's weight, (n_samples,), in the order of the data's rows: "
    "sklearn's `fit(X, sample_weight=...)`. Non-negative finite numbers, not all zero; "
    "omitted, every point weighs 1. The model's `inertia` is then the weighted sum of "
    "squared distances, and the resource says `weighted: true`; the weights are not "
    "stored. k-means only: the mixtures' fit takes no weights."
)


class _WeightedFit(StrictModel):
    sample_weight: SampleWeight | None = Field(
        None, description=_SAMPLE_WEIGHT_DESCRIPTION, examples=[[3, 1, 1, 3]]
    )


class KMeansFit(KMeansItem, _WeightedFit, _FitRequestBase):
    pass


class MiniBatchKMeansFit(MiniBatchKMeansItem, _WeightedFit, _FitRequestBase):
    pass


FitRequest = Annotated[
    GaussianMixtureFit | BayesianGaussianMixtureFit | KMeansFit | MiniBatchKMeansFit,
    Field(discriminator="algorithm"),
]

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
    "bayesian": {
        "summary": "Bayesian mixture that switches off unneeded components",
        "value": {
            "algorithm": "bayesian_gaussian_mixture",
            "params": {"n_components": 8, "random_state": 0, "max_iter": 500},
            "data": {"generator": SEED_BLOBS},
        },
    },
}

Covariances = list[float] | list[list[float]] | list[list[list[float]]]


class ComponentRecovery(BaseModel):
    true_component: int
    component: int
    mean_error: float = Field(description="Euclidean distance between the two means.")
    covariance_error: float | None = Field(
        description="Frobenius norm of the covariance difference; null for k-means."
    )


class Recovery(BaseModel):
    """How well the fit recovered a ``gaussian_mixture`` generator's true components."""

    matching: list[ComponentRecovery]
    adjusted_rand_score: float


class Alignment(BaseModel):
    model_id: str
    permutation: list[int] = Field(
        description="permutation[i] is sklearn's index of the component now at index i."
    )


class _ModelBase(BaseModel):
    id: str
    name: str | None
    tags: Tags = Field(
        default_factory=dict,
        description="Labels set at creation or by `PATCH /v1/models/{id}`; `{}` when none.",
    )
    created_at: str = Field(description="ISO 8601, UTC.")
    expires_at: str | None = Field(
        None,
        description="When the service deletes the model (`ttl_seconds`); null: never.",
    )
    n_samples: int | None = Field(
        description="Training points; null for an imported model whose source did not say."
    )
    n_features: int
    n_components: int
    fit_seconds: float
    means: list[list[float]] = Field(description="(n_components, n_features)")
    n_iter: int
    warnings: list[WarningItem] = Field(default_factory=list)
    recovery: Recovery | None = None
    alignment: Alignment | None = None
    imported: bool = False
    dataset_id: str | None = Field(
        None,
        description=(
            "The stored dataset of the training points (`GET /v1/datasets/{id}`); null "
            "for an imported model. The model keeps its own reference to the points, so "
            "it keeps working when the dataset is deleted."
        ),
    )


#: What a listing leaves out of each model: its arrays of n_components x n_features^2
#: numbers and its convergence trace. ``GET /v1/models/{id}`` answers them.
LIST_OMITS = ("covariances", "precisions", "lower_bounds")


class _MixtureSummary(_ModelBase):
    covariance_type: CovarianceType
    weights: list[float] = Field(description="(n_components,)")
    converged: bool
    lower_bound: float | None = Field(description="null when not finite (max_iter=0).")


class _MixtureArrays(BaseModel):
    covariances: Covariances = Field(description="Shape as sklearn's covariance_type gives.")
    precisions: Covariances = Field(description="Inverse covariances, same shape.")
    lower_bounds: list[float | None] = Field(
        default_factory=list,
        description=(
            "sklearn's lower_bounds_: the lower bound after each EM iteration of the best "
            "init, the convergence trace (null where not finite). Empty for models stored "
            "before it was recorded."
        ),
    )


class SelectionCurve(BaseModel):
    """The model selection a model won (``store_best``): its criterion and every cell's
    score, as ``POST /v1/model-selection`` answered them."""

    criterion: Literal["bic", "aic"]
    scores: list[dict[str, Any]] = Field(
        description="The answer's `scores`: n_components, covariance_type, bic, aic."
    )


class GaussianMixtureSummary(_MixtureSummary):
    algorithm: Literal["gaussian_mixture"]
    params: GaussianMixtureParams
    bic: float | None
    aic: float | None
    selection: SelectionCurve | None = Field(
        None, description="Set when a model selection stored this model as its best."
    )


class GaussianMixtureModel(GaussianMixtureSummary, _MixtureArrays):
    model_config = ConfigDict(json_schema_extra={"examples": [SEED_MODEL]})


class BayesianGaussianMixtureSummary(_MixtureSummary):
    algorithm: Literal["bayesian_gaussian_mixture"]
    params: BayesianGaussianMixtureParams
    weight_concentration: list[float] | list[list[float]] = Field(
        description="dirichlet_process: two rows (n_components each); otherwise one row."
    )
    mean_precision: list[float]
    degrees_of_freedom: float | list[float] = Field(
        description="(n_components,); one number for covariance_type 'tied'."
    )
    effective_n_components: int
    effective_weight_threshold: float
    weight_concentration_prior: float | None = Field(
        None,
        description=(
            "sklearn's weight_concentration_prior_: the prior as the fit resolved it "
            "(1 / n_components when the parameter is null). Null for an imported model "
            "and for models stored before the priors were kept; so are the four below."
        ),
    )
    mean_precision_prior: float | None = Field(
        None, description="sklearn's mean_precision_prior_ (1.0 when the parameter is null)."
    )
    mean_prior: list[float] | None = Field(
        None,
        description="sklearn's mean_prior_, (n_features,): the data's mean by default.",
    )
    degrees_of_freedom_prior: float | None = Field(
        None,
        description="sklearn's degrees_of_freedom_prior_: n_features by default.",
    )
    covariance_prior: float | list[float] | list[list[float]] | None = Field(
        None,
        description=(
            "sklearn's covariance_prior_, by covariance_type: (n_features, n_features) "
            "for full and tied, (n_features,) for diag, one number for spherical; the "
            "data's covariance by default."
        ),
    )


class BayesianGaussianMixtureModel(BayesianGaussianMixtureSummary, _MixtureArrays):
    pass


_WEIGHTED_DESCRIPTION = (
    "The fit was given `sample_weight`: `inertia` is the weighted sum of squared "
    "distances. false for models stored before weights existed, and for imports."
)


class KMeansModel(_ModelBase):
    algorithm: Literal["kmeans"]
    params: KMeansParams
    inertia: float
    weighted: bool = Field(False, description=_WEIGHTED_DESCRIPTION)


class MiniBatchKMeansModel(_ModelBase):
    algorithm: Literal["minibatch_kmeans"]
    params: MiniBatchKMeansParams
    inertia: float
    n_steps: int
    weighted: bool = Field(False, description=_WEIGHTED_DESCRIPTION)


ModelResource = Annotated[
    GaussianMixtureModel | BayesianGaussianMixtureModel | KMeansModel | MiniBatchKMeansModel,
    Field(discriminator="algorithm"),
]
#: A model as ``GET /v1/models`` lists it: the resource without ``LIST_OMITS``.
ModelSummary = Annotated[
    GaussianMixtureSummary | BayesianGaussianMixtureSummary | KMeansModel | MiniBatchKMeansModel,
    Field(discriminator="algorithm"),
]


class _PerPointFields(BaseModel):
    labels: list[int] | None = Field(None, description="(n_samples,)")
    probabilities: list[list[float]] | None = Field(
        None, description="(n_samples, n_components); mixtures only."
    )
    distances: list[list[float]] | None = Field(
        None, description="(n_samples, n_clusters) distances to each center; k-means only."
    )
    omitted: list[PerPoint] | None = Field(
        None,
        description=(
            "Per-point arrays left out because the request did not name them in `include` "
            "and they would exceed GMM_MAX_DEFAULT_PER_POINT_VALUES numbers. Ask for them "
            "with `include`, or predict on the same points with the stored model."
        ),
    )


class GaussianMixtureFitted(GaussianMixtureModel, _PerPointFields):
    model_config = ConfigDict(json_schema_extra={"examples": [SEED_FITTED]})


class BayesianGaussianMixtureFitted(BayesianGaussianMixtureModel, _PerPointFields):
    pass


class KMeansFitted(KMeansModel, _PerPointFields):
    pass


class MiniBatchKMeansFitted(MiniBatchKMeansModel, _PerPointFields):
    pass


FittedModel = Annotated[
    GaussianMixtureFitted | BayesianGaussianMixtureFitted | KMeansFitted | MiniBatchKMeansFitted,
    Field(discriminator="algorithm"),
]


class ModelList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [SEED_SUMMARY], "next_cursor": None, "total": 1}]}
    )

    items: list[ModelSummary] = Field(
        description=(
            "Each model's resource without its covariances, precisions and lower_bounds "
            "(`GET /v1/models/{id}` has them)."
        )
    )
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next page; null on the last page."
    )
    total: int


class ModelPatch(StrictModel):
    """A JSON merge patch (RFC 7396) of a model's ``name`` and ``tags``."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "seed-blobs-v2", "tags": {"stage": "prod"}}]}
    )

    name: Name | None = Field(
        None, description="The new name; null removes it; absent leaves it as it is."
    )
    tags: TagsPatch | None = Field(
        None,
        description=(
            "Merged into the model's tags: a string sets that tag, null removes it, tags "
            "not named stay. `null` for the whole field removes every tag. "
            + _TAGS_DESCRIPTION
            + " The limit applies to the tags after the merge."
        ),
    )
    ttl_seconds: TtlSeconds | None = Field(
        None,
        description=(
            "The model is deleted this many seconds from now (`expires_at`); null keeps "
            "it until deleted; absent leaves `expires_at` as it is."
        ),
    )


PATCH_EXAMPLES = {
    # No null here: FastAPI drops every null from the OpenAPI document, examples too.
    # Removing a tag (`"draft": null`) is described on the field instead.
    "rename-and-tag": {
        "summary": "Rename and set a tag",
        "value": {"name": "seed-blobs-v2", "tags": {"stage": "prod"}},
    },
    "tags-only": {
        "summary": "Set tags, keep the name",
        "value": {"tags": {"project": "seed", "owner": "data-team"}},
    },
}


class PointsRequest(StrictModel):
    # Two points of the seed model's width: Swagger UI pre-fills its body from this.
    model_config = ConfigDict(json_schema_extra={"examples": [{"points": SEED_POINTS}]})

    points: Points


class Prediction(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [SEED_PREDICTION]})

    labels: list[int]
    probabilities: list[list[float]] | None = Field(None, description="Mixtures only.")
    distances: list[list[float]] | None = Field(None, description="k-means only.")


class ScoreResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [SEED_SCORE]})

    log_likelihood: list[float] = Field(description="score_samples: (n_points,)")
    score: float = Field(description="Mean log-likelihood, as sklearn's score.")
    percentile: list[float] | None = Field(
        description=(
            "Per point, the percentage of training points whose log-likelihood is at most "
            "this point's: a low percentile flags an outlier. null for imported models."
        ),
    )
    bic: float | None = Field(
        None,
        description=(
            "gaussian_mixture only: sklearn's bic(X) of these points (null when it "
            "overflows); the model resource's bic is the training data's."
        ),
    )
    aic: float | None = Field(
        None, description="gaussian_mixture only: sklearn's aic(X) of these points."
    )


class SampleRequest(StrictModel):
    model_config = ConfigDict(json_schema_extra={"examples": [SEED_SAMPLE_REQUEST]})

    n_samples: Annotated[StrictInt, Field(ge=1)] = 1
    random_state: Seed | None = Field(
        None, description="Defaults to the model's own random_state, as sklearn does."
    )


class SampleResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [SEED_SAMPLE]})

    points: list[list[float]]
    labels: list[int]
