"""Building blocks shared by every request and response model."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict

#: A JSON number that is finite: NaN and +-Infinity literals are refused by name.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
#: Integers must be JSON integers: ``2.0`` or ``true`` for a count is a client bug.
StrictInt = Annotated[int, Strict()]
#: Seeds as numpy's RandomState accepts them.
Seed = Annotated[int, Strict(), Field(ge=0, le=2**32 - 1)]

Row = list[FiniteFloat]
Matrix = Annotated[list[Row], Field(min_length=1)]


class StrictModel(BaseModel):
    """Unknown fields are rejected, not ignored: a typo must not silently change a fit."""

    model_config = ConfigDict(extra="forbid")


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
