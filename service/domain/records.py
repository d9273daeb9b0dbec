"""The records the services pass around, typed: a model's resource and bundle, a
dataset's resource, a job. They stay plain JSON-ready dicts at run time (``TypedDict``),
because that is what the store keeps and the response layer serialises; the types are
for the reader and the type checker.

Also the three helpers every service needs to make a record: the time stamp, the
library versions a stored thing was made with, and numpy to JSON.
"""

from __future__ import annotations

import datetime as dt
import platform
from typing import Any, NotRequired, TypedDict

import joblib
import numpy as np
import sklearn

from service import __version__


class ModelResource(TypedDict, total=False):
    """``GET /v1/models/{id}``: identity, request and fitted attributes (``estimators.describe``).

    The first block is always there; the fitted attributes depend on the algorithm.
    """

    id: str
    name: str | None
    tags: dict[str, str]
    algorithm: str
    params: dict[str, Any]
    created_at: str
    n_samples: int | None
    n_features: int
    n_components: int
    fit_seconds: float
    warnings: list[dict[str, str]]
    imported: bool
    dataset_id: str | None
    means: list[list[float]]


class Bundle(TypedDict):
    """What the store pickles for a model: the estimator, the id of its training
    dataset, the training points' labels and their sorted log-likelihoods (None each
    for an import). ``X`` is added when read: the training points, or None."""

    estimator: Any
    dataset_id: str | None
    labels: np.ndarray | None
    train_log_likelihood: np.ndarray | None
    X: NotRequired[np.ndarray | None]


class ModelMetadata(TypedDict):
    """The stored, signed metadata of a model: never unpickled, listed as it is."""

    resource: ModelResource
    versions: dict[str, str]
    imported_from: NotRequired[dict[str, Any]]


class DatasetResource(TypedDict):
    id: str
    name: str | None
    n_samples: int
    n_features: int
    dtype: str
    sha256: str
    created_at: str


class Page(TypedDict):
    items: list[Any]
    next_cursor: str | None
    total: int


def now() -> str:
    """UTC, milliseconds, ``Z``: how every record stamps its times."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def expires_after(seconds: float) -> str:
    """The ``expires_at`` of a record kept ``seconds`` from now, stamped as ``now``."""
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def versions() -> dict[str, str]:
    """What a stored thing was made with, so a reader can tell why numbers differ."""
    return {
        "service": __version__,
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }


def jsonable(value: Any) -> Any:
    """Numpy -> plain Python for the metadata JSON (non-finite floats become None)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
