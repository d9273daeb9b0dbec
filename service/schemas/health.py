"""What the readiness probe answers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class DaskStatus(BaseModel):
    """The Dask cluster fits run on (``GMM_DASK_SCHEDULER``), as its scheduler reports it."""

    scheduler: str = Field(examples=["tcp://scheduler:8786"])
    workers: int = Field(
        ge=0,
        description=(
            "Workers connected now. With none, fits wait for one and are given up with a "
            "503 `cluster-unavailable` problem after 30 s; predictions are unaffected."
        ),
        examples=[2],
    )
    threads: int = Field(ge=0, description="Their threads: fits that run at once.", examples=[2])


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    dask: DaskStatus | None = Field(
        None,
        description=(
            "Present when fits run on a Dask cluster. An unreachable scheduler answers 503 instead."
        ),
    )
