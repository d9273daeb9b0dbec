"""Building blocks shared by every request and response model."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

#: A JSON number that is finite: NaN and +-Infinity literals are refused by name, and
#: so are ``true`` and ``"1.5"``, which the schema does not call numbers.
FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]
#: Integers must be JSON integers: ``true``, ``"2"`` or ``2.5`` for a count is a client
#: bug. (``2.0`` is the integer 2: see ``StrictModel``.)
StrictInt = Annotated[int, Strict()]
#: Only ``true`` and ``false``: not ``1``, ``0`` or ``"yes"``.
StrictBool = Annotated[bool, Strict()]
#: Seeds as numpy's RandomState accepts them.
Seed = Annotated[int, Strict(), Field(ge=0, le=2**32 - 1)]

#: ISO 8601 with seconds optional, a fraction of at most 6 digits, and a zone.
INSTANT_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$"


def _instant(value: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not a valid date and time") from None


#: A moment, written as ISO 8601 text with its zone. Not pydantic's datetime, which
#: also takes a number of seconds (``0.5``) that the documented string format is not.
Instant = Annotated[
    str,
    Field(pattern=INSTANT_PATTERN, json_schema_extra={"format": "date-time"}),
    AfterValidator(_instant),
]

#: Ten years: a time to live is for things that should go, not a way to keep one.
MAX_TTL_SECONDS = 10 * 365 * 86400
TtlSeconds = Annotated[int, Strict(), Field(ge=1, le=MAX_TTL_SECONDS)]

#: Up to this many values, ``all_finite`` reads them as Python floats. Measured on the
#: 2-core machine: ``np.isfinite(X).all()`` costs about 1.0 us at any small size (two
#: ufunc calls), the Python floats 0.25 us for 2 values, 0.58 us for 16 and 0.91 us for
#: 32. A one-point predict or infer checks its points and its answer this way.
SMALL_FINITE_CHECK = 16


def all_finite(values: np.ndarray) -> bool:
    """Whether no value of ``values`` (a numeric array) is NaN or infinite."""
    if values.size <= SMALL_FINITE_CHECK:
        return all(map(math.isfinite, values.ravel().tolist()))
    return bool(np.isfinite(values).all())


#: A point: at least one coordinate (the document says so, not only the domain code).
Row = Annotated[list[FiniteFloat], Field(min_length=1)]
Matrix = Annotated[list[Row], Field(min_length=1)]


def is_points_array(value: Any) -> bool:
    """Whether ``value`` is already what ``Matrix`` would make of valid JSON: a 2-D
    float64 array, (n_samples >= 1, n_features >= 1), every value finite."""
    return (
        isinstance(value, np.ndarray)
        and value.dtype == np.float64
        and value.ndim == 2
        and value.shape[0] >= 1
        and value.shape[1] >= 1
        and all_finite(value)
    )


def _accept_points_array(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A ready array (the JSON decoder's fast path, ``service.api.routing``) is taken
    as is; anything else is validated number by number, which names the exact place
    of a NaN, a bool or a ragged row. An array that is not ready is validated as the
    lists it stands for, so a Python caller gets the same errors as a JSON client."""
    if is_points_array(value):
        return value
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return handler(value)


def _points_as_lists(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


#: Request points: exactly ``Matrix`` in the OpenAPI document (both validation and
#: serialization schemas), but a float64 ndarray in the model when the body decoder
#: could build one without pydantic walking each number. Dumps give lists in every
#: mode, so persisting or echoing a request reads as it always did.
Points = Annotated[
    Matrix,
    WrapValidator(_accept_points_array),
    PlainSerializer(_points_as_lists, return_type=Matrix),
]


def _integral_to_int(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _integral_numbers(value: Any) -> Any:
    """A field's value with ``2.0`` read as ``2``, also inside a flat list of numbers;
    rows of points (lists of lists) are left alone, in O(1)."""
    if isinstance(value, float):
        return _integral_to_int(value)
    if isinstance(value, list) and value and not isinstance(value[0], list | dict):
        return [_integral_to_int(item) for item in value]
    return value


class StrictModel(BaseModel):
    """Unknown fields are rejected, not ignored: a typo must not silently change a fit."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _integral_numbers_are_integers(cls, data: Any) -> Any:
        """``2.0`` is the integer 2: JSON has one number type, and JSON Schema's
        ``integer`` (so the published OpenAPI document's) is any number without a
        fraction. A float field takes the ``int`` back as the same float.

        Done here rather than in ``StrictInt``: a validator inside the type would push
        its ``ge``/``le`` out of the JSON Schema.
        """
        if isinstance(data, dict):
            return {key: _integral_numbers(value) for key, value in data.items()}
        return data


#: ``wait`` on long work (fits, model selection, comparisons): see ``/v1/jobs``.
Wait = StrictBool | None


class WarningItem(BaseModel):
    """A warning raised while serving the request (for example ``ConvergenceWarning``)."""

    category: str = Field(examples=["ConvergenceWarning"])
    message: str


class ValidationErrorItem(BaseModel):
    loc: list[str | int] = Field(examples=[["body", "data", "points", 3, 1]])
    msg: str = Field(examples=["Input should be a finite number"])
    type: str = Field(examples=["finite_number"])


class Problem(BaseModel):
    """RFC 9457 problem details, as every error of this service answers."""

    type: str = Field(examples=["urn:gmm-service:problem:invalid-input"])
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ValidationErrorItem] | None = None
