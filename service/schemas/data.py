"""Where data comes from: explicit points or a synthetic generator spec."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from service.ids import DATASET_ID_PATTERN
from service.schemas.common import (
    FiniteFloat,
    Matrix,
    Points,
    Seed,
    StrictBool,
    StrictInt,
    StrictModel,
    TtlSeconds,
)
from service.schemas.examples import SEED_GENERATED

PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeFloat = Annotated[FiniteFloat, Field(ge=0)]


class BlobsSpec(StrictModel):
    """``sklearn.datasets.make_blobs``: same parameters, bit-identical points."""

    kind: Literal["blobs"]
    n_samples: PositiveInt | Annotated[list[PositiveInt], Field(min_length=1)] = 100
    n_features: PositiveInt = 2
    centers: PositiveInt | Matrix | None = None
    cluster_std: NonNegativeFloat | Annotated[list[NonNegativeFloat], Field(min_length=1)] = 1.0
    center_box: tuple[FiniteFloat, FiniteFloat] = (-10.0, 10.0)
    shuffle: StrictBool = True
    random_state: Seed | None = None


class ComponentSpec(StrictModel):
    """One Gaussian of a ``gaussian_mixture`` generator."""

    mean: Annotated[list[FiniteFloat], Field(min_length=1)]
    cov: Matrix
    n_samples: Annotated[StrictInt, Field(ge=0)]


class GaussianMixtureSpec(StrictModel):
    """Explicit components drawn in order with ``RandomState.multivariate_normal``."""

    kind: Literal["gaussian_mixture"]
    components: Annotated[list[ComponentSpec], Field(min_length=1)]
    random_state: Seed | None = None
    check_valid: Literal["raise", "warn", "ignore"] = Field(
        "raise",
        description=(
            "numpy's option for a covariance that is not symmetric positive "
            "semi-definite: `raise` answers 422 naming the component, `warn` draws "
            "anyway and reports the warning."
        ),
    )
    tol: Annotated[FiniteFloat, Field(gt=0)] = 1e-8
    shuffle: StrictBool = Field(
        False,
        description="Permute points and labels after drawing, with the same RandomState.",
    )


class MoonsSpec(StrictModel):
    """``sklearn.datasets.make_moons``."""

    kind: Literal["moons"]
    n_samples: Annotated[StrictInt, Field(ge=2)] = 100
    shuffle: StrictBool = True
    noise: NonNegativeFloat | None = None
    random_state: Seed | None = None


class CirclesSpec(StrictModel):
    """``sklearn.datasets.make_circles``."""

    kind: Literal["circles"]
    n_samples: Annotated[StrictInt, Field(ge=2)] = 100
    shuffle: StrictBool = True
    noise: NonNegativeFloat | None = None
    random_state: Seed | None = None
    factor: Annotated[FiniteFloat, Field(ge=0, lt=1)] = 0.8


GeneratorSpec = Annotated[
    BlobsSpec | GaussianMixtureSpec | MoonsSpec | CirclesSpec, Field(discriminator="kind")
]
GENERATOR_KINDS = ("blobs", "gaussian_mixture", "moons", "circles")


DatasetIdStr = Annotated[
    str,
    Field(
        pattern=DATASET_ID_PATTERN,
        description="A stored dataset's id (`POST /v1/datasets`): the sha256 of its points.",
        examples=["9f2c0c7d1a6b43e5c1c2b9d0e4f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0"],
    ),
]


class DataSpec(StrictModel):
    """Exactly one of ``points``, ``generator`` or ``dataset_id``."""

    points: Points | None = Field(
        None, description="Rows of finite numbers, every row the same length."
    )
    generator: GeneratorSpec | None = None
    dataset_id: DatasetIdStr | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> DataSpec:
        given = [self.points, self.generator, self.dataset_id]
        if sum(v is not None for v in given) != 1:
            raise ValueError("give exactly one of 'points', 'generator' or 'dataset_id'")
        return self


class DatasetCreate(StrictModel):
    """The JSON body of ``POST /v1/datasets``: exactly one of ``points`` or ``generator``."""

    points: Matrix | None = Field(
        None, description="Rows of finite numbers, every row the same length."
    )
    generator: GeneratorSpec | None = None
    name: (
        Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] | None
    ) = Field(None, description="A free label for people; not unique, not part of the id.")
    ttl_seconds: TtlSeconds | None = Field(
        None,
        description=(
            "Delete the dataset this many seconds after it is stored (`expires_at`). An "
            "array stored already is answered as it is, its own expiry kept."
        ),
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DatasetCreate:
        if (self.points is None) == (self.generator is None):
            raise ValueError("give exactly one of 'points' or 'generator'")
        return self


class DatasetResource(StrictModel):
    """A stored dataset: float64 points, addressed by the sha256 of their content."""

    id: str = Field(description="The sha256 of the points (see `sha256`).")
    name: str | None = None
    n_samples: int
    n_features: int
    dtype: Literal["float64"] = Field(description="Every dataset is stored as float64.")
    sha256: str = Field(
        description=(
            "sha256 of the shape as two little-endian uint64 followed by the values as "
            "C-ordered little-endian float64: `hashlib.sha256(np.array(X.shape, "
            "'<u8').tobytes() + np.ascontiguousarray(X, '<f8').tobytes())`."
        )
    )
    created_at: str = Field(description="ISO 8601, UTC.")
    expires_at: str | None = Field(
        None,
        description=(
            "When the service deletes the dataset (`ttl_seconds`); null: never. Models "
            "fitted on it keep their own copy of its points."
        ),
    )


class DatasetList(StrictModel):
    items: list[DatasetResource]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next page; null on the last page."
    )
    total: int


class GeneratedData(StrictModel):
    points: list[list[float]]
    labels: list[int]
    warnings: list[dict[str, str]] | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [SEED_GENERATED]})
