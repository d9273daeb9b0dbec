"""Requests and responses of ``/v1/model-selection``: a BIC/AIC grid over GaussianMixture."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationInfo,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from service.schemas.common import StrictInt, StrictModel, Wait, WarningItem
from service.schemas.data import DataSpec
from service.schemas.examples import SEED_BLOBS, SEED_SELECTION
from service.schemas.models import Name
from service.schemas.params import CovarianceType, GaussianMixtureParams

PositiveInt = Annotated[StrictInt, Field(ge=1)]
ComponentsList = Annotated[list[PositiveInt], Field(min_length=1)]
Criterion = Literal["bic", "aic"]


class ComponentsRange(StrictModel):
    """Every ``n_components`` from ``min`` to ``max``, both included."""

    min: PositiveInt
    max: PositiveInt


_COMPONENTS_LIST = TypeAdapter(ComponentsList)


def _one_shape(value: Any) -> Any:
    """Validate ``n_components`` as the shape the client meant, list or range.

    A plain union would report both members' failures under pydantic's member names
    (``["n_components", "list[...]", 0]``); choosing the member here and re-raising
    its own ``ValidationError`` keeps the locations the JSON paths a client sent.
    """
    if isinstance(value, dict):
        return ComponentsRange.model_validate(value)
    return _COMPONENTS_LIST.validate_python(value)


class Grid(StrictModel):
    """The cells to fit: every ``n_components`` with every ``covariance_type``."""

    n_components: Annotated[ComponentsList | ComponentsRange, BeforeValidator(_one_shape)] = Field(
        description=(
            'A list of component counts, or `{"min", "max"}` for every count in between. '
            "Each must be at most n_samples and GMM_MAX_COMPONENTS; a list is fitted in "
            "ascending order and may not repeat a value."
        ),
        examples=[[1, 2, 3, 4, 5, 6], {"min": 1, "max": 6}],
    )
    covariance_type: Annotated[list[CovarianceType], Field(min_length=1)] = Field(
        ["full"],  # pydantic copies a mutable default per instance
        description="Covariance types to try, in this order; no repeats.",
    )


class SelectionParams(GaussianMixtureParams):
    """``GaussianMixture`` parameters shared by every cell.

    ``n_components`` and ``covariance_type`` vary per cell, so they live in ``grid``;
    giving them here is a 422 that says so rather than a silent override.
    """

    n_components: SkipJsonSchema[None] = Field(None, exclude=True)  # type: ignore[assignment]
    covariance_type: SkipJsonSchema[None] = Field(None, exclude=True)  # type: ignore[assignment]

    @field_validator("n_components", "covariance_type", mode="before")
    @classmethod
    def _belongs_in_grid(cls, value: Any, info: ValidationInfo) -> None:
        name = info.field_name
        raise ValueError(f"{name} varies per cell: give it in grid.{name}, not in params")


class SelectionRequest(StrictModel):
    data: DataSpec
    grid: Grid
    criterion: Criterion = Field(
        "bic", description="`bic` or `aic` (sklearn's `bic(X)` / `aic(X)`); lower is better."
    )
    params: SelectionParams = Field(default_factory=SelectionParams)
    store_best: Annotated[bool, Strict()] = Field(
        False,
        description=(
            "Store the winning cell's fitted estimator (not refitted) as a model; "
            "`best.model_id` names it."
        ),
    )
    name: Name | None = Field(None, description="Name of the stored model (with store_best).")
    wait: Wait = Field(
        None,
        description=(
            "`false`: answer 202 at once with `Location: /v1/jobs/{id}` and the job "
            "resource, whose progress counts grid cells and whose `result` is this "
            "answer. `true`: answer when every cell is fitted, however long it takes. "
            "Unset: wait up to GMM_SYNC_WAIT_SECONDS (or `Prefer: wait=N`), then 202."
        ),
    )


SELECTION_EXAMPLES = {
    "seed-blobs": {
        "summary": "Choose k for the notebook's blobs",
        "value": {
            "data": {"generator": SEED_BLOBS},
            "grid": {
                "n_components": {"min": 1, "max": 6},
                "covariance_type": ["full", "tied", "diag", "spherical"],
            },
            "criterion": "bic",
            "params": {"random_state": 0},
        },
    },
    "store-best": {
        "summary": "Explicit list of k, store the winner",
        "value": {
            "data": {"generator": SEED_BLOBS},
            "grid": {"n_components": [2, 3, 4, 5]},
            "criterion": "aic",
            "params": {"random_state": 0, "n_init": 2},
            "store_best": True,
            "name": "blobs-best-aic",
        },
    },
}


#: The plot route refuses ``store_best``, so it shows only the examples without it.
PLOT_EXAMPLES = {
    name: example
    for name, example in SELECTION_EXAMPLES.items()
    if not example["value"].get("store_best")
}


class CellScore(BaseModel):
    """One fitted cell, under sklearn's attribute and method names."""

    n_components: int
    covariance_type: CovarianceType
    bic: float | None = Field(description="`bic(X)` on the request's data; null if it failed.")
    aic: float | None = Field(description="`aic(X)` on the request's data; null if it failed.")
    converged: bool | None
    n_iter: int | None
    lower_bound: float | None = Field(description="null when not finite or the fit failed.")
    fit_seconds: float
    warnings: list[WarningItem] = Field(default_factory=list)
    error: str | None = Field(
        None,
        description=(
            "Why scikit-learn could not fit this cell (for example an ill-defined "
            "covariance); such a cell is never the best."
        ),
    )


class BestCell(CellScore):
    model_id: str | None = Field(None, description="The stored model, with `store_best`.")


class SelectionResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [SEED_SELECTION]})

    criterion: Criterion
    scores: list[CellScore] = Field(
        description=(
            "One item per cell, ordered by covariance_type as requested, then "
            "n_components ascending."
        )
    )
    best: BestCell = Field(
        description=(
            "The cell with the lowest criterion; ties go to the fewest components, "
            "then to the earlier cell in `scores`."
        )
    )
    warnings: list[WarningItem] = Field(
        default_factory=list, description="Warnings about the data (for example its generator)."
    )
