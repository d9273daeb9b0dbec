"""Use cases: generate, train, read, list, delete, predict. No HTTP here.

Routes call one function each; the functions return plain dicts (with numpy arrays
inside, serialised once by the response layer) and raise ``ServiceError``s.
"""

from __future__ import annotations

import datetime as dt
import platform
from typing import Any

import joblib
import numpy as np
import sklearn

from service import __version__
from service.config import Settings
from service.domain import data as data_mod
from service.domain import estimators
from service.errors import InvalidInput
from service.schemas.data import DataSpec, GeneratorSpec
from service.store.base import ModelStore, check_id, new_model_id


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _versions() -> dict[str, str]:
    return {
        "service": __version__,
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }


def _jsonable(value: Any) -> Any:
    """Numpy -> plain Python for the metadata JSON (non-finite floats become None)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


class ModelService:
    """Trains and serves models held in a ``ModelStore``."""

    def __init__(self, store: ModelStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    # -- data ---------------------------------------------------------------------
    def generate(self, spec: GeneratorSpec) -> data_mod.Dataset:
        return data_mod.generate(spec, self.settings, ["body", "generator"])

    # -- models -------------------------------------------------------------------
    def create_model(
        self,
        *,
        algorithm: str,
        params: dict[str, Any],
        data: DataSpec,
        name: str | None,
        include: list[str] | None,
    ) -> dict[str, Any]:
        """Fit, store, and answer the resource plus the requested per-point arrays."""
        allowed = estimators.per_point_fields(algorithm)
        wanted = estimators.default_include(algorithm) if include is None else set(include)
        for i, item in enumerate(include or []):
            if item not in allowed:
                raise InvalidInput.at(
                    ["body", "include", i],
                    f"{item!r} is not available for {algorithm}; choose from {sorted(allowed)}.",
                )
        dataset = data_mod.resolve(data, self.settings)
        n_samples, n_features = dataset.X.shape
        estimators.check_params(algorithm, params, n_samples, n_features, self.settings)
        fitted = estimators.fit(algorithm, params, dataset.X)
        resource: dict[str, Any] = {
            "id": new_model_id(),
            "name": name,
            "algorithm": algorithm,
            "params": params,
            "created_at": _now(),
            "n_samples": int(n_samples),
            "n_features": int(n_features),
            "fit_seconds": fitted.fit_seconds,
            **estimators.describe(algorithm, fitted.estimator, dataset.X),
            "warnings": dataset.warnings + fitted.warnings,
        }
        resource = _jsonable(resource)
        arrays = estimators.per_point(algorithm, fitted.estimator, dataset.X, wanted, training=True)
        self.store.put(
            resource["id"],
            fitted.estimator,
            {"resource": resource, "versions": _versions()},
        )
        return {**resource, **arrays}

    def get_model(self, model_id: str) -> dict[str, Any]:
        resource: dict[str, Any] = self.store.get_metadata(check_id(model_id))["resource"]
        return resource

    def list_models(self, *, limit: int, cursor: str | None) -> dict[str, Any]:
        if cursor is not None:
            check_id(cursor)
        items, next_cursor = self.store.list(limit=limit, cursor=cursor)
        return {
            "items": [m["resource"] for m in items],
            "next_cursor": next_cursor,
            "total": self.store.count(),
        }

    def delete_model(self, model_id: str) -> None:
        self.store.delete(check_id(model_id))

    def predict(self, model_id: str, points: list[list[float]]) -> dict[str, Any]:
        resource = self.get_model(model_id)
        X = data_mod.points_to_array(
            points, self.settings, ["body", "points"], width=resource["n_features"]
        )
        algorithm = resource["algorithm"]
        est = self.store.load(model_id)
        return estimators.per_point(algorithm, est, X, estimators.per_point_fields(algorithm))
