"""Requests and responses of ``/v1/comparisons``: several algorithms on the same data."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.common import Seed, StrictInt, StrictModel, Wait, WarningItem
from service.schemas.data import DataSpec
from service.schemas.examples import ELLIPSES_COMPARISON
from service.schemas.params import (
    BayesianGaussianMixtureItem,
    GaussianMixtureItem,
    KMeansItem,
    MiniBatchKMeansItem,
)

#: Silhouette is O(n^2): above this many points it is computed on a sample.
SILHOUETTE_DEFAULT_SAMPLE = 10_000
#: The largest sample a request may ask for (about 2.5e9 distance terms per algorithm).
SILHOUETTE_MAX_SAMPLE = 50_000
MAX_ALGORITHMS = 10


AlgorithmItem = Annotated[
    GaussianMixtureItem | BayesianGaussianMixtureItem | KMeansItem | MiniBatchKMeansItem,
    Field(discriminator="algorithm"),
]


class SilhouetteOptions(StrictModel):
    """Arguments of ``sklearn.metrics.silhouette_score``."""

    sample_size: Annotated[StrictInt, Field(ge=2, le=SILHOUETTE_MAX_SAMPLE)] | None = Field(
        None,
        description=(
            "Compute on a random sample of this many points. Default: every point up to "
            f"{SILHOUETTE_DEFAULT_SAMPLE}, a sample of {SILHOUETTE_DEFAULT_SAMPLE} above that."
        ),
    )
    random_state: Seed | None = Field(
        None,
        description="Seed of the sample. Default: 0 whenever a sample is drawn.",
    )


class ComparisonRequest(StrictModel):
    data: DataSpec
    algorithms: Annotated[list[AlgorithmItem], Field(min_length=1, max_length=MAX_ALGORITHMS)]
    true_labels: Annotated[list[StrictInt], Field(min_length=1)] | None = Field(
        None,
        description=(
            "The known grouping of the points (n_samples,), for the metrics that need "
            "one. A generator's own labels are used when this is absent; this wins "
            "when both are there."
        ),
    )
    silhouette: SilhouetteOptions = Field(default_factory=SilhouetteOptions)
    wait: Wait = Field(
        None,
        description=(
            "`false`: answer 202 at once with `Location: /v1/jobs/{id}` and the job "
            "resource, whose progress counts algorithms and whose `result` is this "
            "answer. `true`: answer when every algorithm is fitted and scored, however "
            "long it takes. Unset: wait up to GMM_SYNC_WAIT_SECONDS (or `Prefer: "
            "wait=N`), then 202."
        ),
    )


NOTEBOOK_ELLIPSES = {
    "kind": "gaussian_mixture",
    "random_state": 0,
    "components": [
        {"mean": [0, 1], "cov": [[1, 0.9], [0.9, 2]], "n_samples": 1000},
        {"mean": [1, -2], "cov": [[2, -1], [-1, 1]], "n_samples": 1000},
    ],
}

COMPARISON_EXAMPLES: dict[str, dict[str, Any]] = {
    "kmeans-vs-mixture": {
        "summary": "The notebook's scene: k-means against a mixture on elongated Gaussians",
        "value": {
            "data": {"generator": NOTEBOOK_ELLIPSES},
            "algorithms": [
                {
                    "algorithm": "kmeans",
                    "params": {
                        "n_clusters": 2,
                        "init": "random",
                        "n_init": 10,
                        "random_state": 0,
                    },
                },
                {
                    "algorithm": "gaussian_mixture",
                    "params": {"n_components": 2, "random_state": 0},
                },
            ],
        },
    },
}


class ComparisonItemResult(BaseModel):
    """One algorithm's clustering of the data and its scores under sklearn's names."""

    algorithm: str
    params: dict[str, Any] = Field(description="The parameters used, defaults filled in.")
    labels: list[int] = Field(description="(n_samples,) cluster of each point.")
    n_clusters: int = Field(description="Distinct labels found (may be fewer than asked).")
    fit_seconds: float
    silhouette_score: float | None = Field(
        description="null, with a warning, when fewer than 2 (or n_samples) distinct labels."
    )
    adjusted_rand_score: float | None = Field(None, description="Only with true labels.")
    adjusted_mutual_info_score: float | None = Field(None, description="Only with true labels.")
    normalized_mutual_info_score: float | None = Field(None, description="Only with true labels.")
    homogeneity_score: float | None = Field(None, description="Only with true labels.")
    completeness_score: float | None = Field(None, description="Only with true labels.")
    v_measure_score: float | None = Field(None, description="Only with true labels.")
    warnings: list[WarningItem] = Field(default_factory=list)


class SilhouetteUsed(BaseModel):
    sample_size: int | None = Field(description="null: every point was used.")
    random_state: int | None


class ComparisonResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [ELLIPSES_COMPARISON]})

    results: list[ComparisonItemResult] = Field(description="In the order of `algorithms`.")
    silhouette: SilhouetteUsed = Field(description="The silhouette_score arguments used.")
    warnings: list[WarningItem] = Field(
        default_factory=list, description="Warnings about the data (for example its generator)."
    )
