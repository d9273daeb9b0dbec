"""Inference: answer with a stored model. Predict, score and sample, from the compiled
model this worker keeps in memory (``LoadedModels``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.domain.catalogue.service import Catalogue
from service.domain.datasets.service import Datasets
from service.domain.records import ModelResource
from service.domain.training import estimators
from service.errors import InvalidInput, LimitExceeded, Loc, UnsupportedOperation
from service.schemas.common import all_finite

#: The most points one ``sample`` call draws.
MAX_SAMPLE_POINTS = 1_000_000


def _require_finite(results: dict[str, Any], loc: Loc) -> None:
    """422 naming the first point whose results overflowed float64.

    A finite point far enough from the model (around 1e154 and beyond) makes sklearn's
    squared distances or log-densities overflow to inf or nan. JSON cannot carry
    those, and a label chosen among infinities means nothing: the client is told which
    row to rescale instead.
    """
    for name, value in results.items():
        if (
            isinstance(value, np.ndarray)
            and value.dtype.kind == "f"
            and value.size
            and not all_finite(value)  # the one check a good answer costs
        ):
            bad = ~np.isfinite(value.reshape(len(value), -1)).all(axis=1)
            if bad.any():
                i = int(np.argmax(bad))
                raise InvalidInput.at(
                    [*loc, i],
                    f"row {i}: its {name} overflowed float64 (the point is too far from the "
                    "model for double precision); rescale the data.",
                    "non_finite_result",
                )


def _require_mixture(resource: ModelResource, what: str) -> None:
    if not estimators.is_mixture(resource["algorithm"]):
        raise UnsupportedOperation(
            f"{what} needs a mixture model; model {resource['id']} is {resource['algorithm']}."
        )


class Inference:
    """Predictions of the models in ``catalogue``, on points checked by ``datasets``."""

    def __init__(self, catalogue: Catalogue, datasets: Datasets) -> None:
        self._catalogue = catalogue
        self._datasets = datasets

    def ready(self, model_id: str) -> bool:
        """Whether a small request for this model can be answered on the event loop:
        the model is in memory and known to be stored, so answering reads nothing
        (``LoadedModels``)."""
        return self._catalogue.ready(model_id)

    def find(self, ref: str) -> ModelResource:
        """The model a v2 client names, by id or name (``Catalogue.find``)."""
        return self._catalogue.find(ref)

    def ready_resource(self, ref: str) -> ModelResource | None:
        """``find(ref)`` when ``ref`` is the id of a ``ready`` model, else None."""
        return self._catalogue.ready_resource(ref)

    def read_npy(self, body: Any) -> np.ndarray:
        return self._datasets.read_npy(body)

    def predict(
        self,
        model_id: str,
        points: list[list[float]] | np.ndarray,
        *,
        loc: Loc = ("body", "points"),
    ) -> dict[str, Any]:
        loaded = self._catalogue.loaded(model_id)
        X = self._datasets.points(points, loc, loaded.resource["n_features"])
        fields = estimators.per_point_fields(loaded.resource["algorithm"])
        # Overflow is reported per row below, not as numpy's RuntimeWarning.
        with np.errstate(over="ignore", invalid="ignore"):
            result: dict[str, Any] = loaded.compiled.evaluate(X, fields)
        _require_finite(result, loc)
        return result

    def score(
        self,
        model_id: str,
        points: list[list[float]] | np.ndarray,
        *,
        loc: Loc = ("body", "points"),
    ) -> dict[str, Any]:
        loaded = self._catalogue.loaded(model_id)
        resource, bundle = loaded.resource, loaded.bundle
        _require_mixture(resource, "Scoring")
        X = self._datasets.points(points, loc, resource["n_features"])
        # sklearn's own arithmetic, not the compiled form: a point equal to a training
        # point must rank exactly where that training point does.
        with np.errstate(over="ignore", invalid="ignore"):
            ll = estimators.log_likelihood_of(bundle["estimator"], X)
        _require_finite({"log_likelihood": ll}, loc)
        train = bundle.get("train_log_likelihood")
        percentile = (
            100.0 * np.searchsorted(train, ll, side="right") / len(train)
            if train is not None and len(train)
            else None
        )
        out: dict[str, Any] = {
            "log_likelihood": ll,
            "score": float(ll.mean()),
            "percentile": percentile,
        }
        if resource["algorithm"] == "gaussian_mixture":
            # sklearn's bic(X)/aic(X) of these points, from the log-likelihoods at hand:
            # what a remote estimator's bic(X) answers (the resource's are the training's).
            out.update(estimators.information_criteria(bundle["estimator"], X, ll))
        return out

    def sample(self, model_id: str, n_samples: int, random_state: int | None) -> dict[str, Any]:
        resource, bundle = self._catalogue.load_bundle(model_id)
        _require_mixture(resource, "Sampling")
        limits = self._datasets.limits
        limit = min(MAX_SAMPLE_POINTS, limits.max_points)
        if n_samples > limit or n_samples * resource["n_features"] > limits.max_values:
            raise LimitExceeded.at(
                ["body", "n_samples"],
                f"n_samples={n_samples} exceeds the limit of {limit} points "
                f"(and {limits.max_values} values, GMM_MAX_VALUES).",
            )
        X, y = estimators.sample(bundle["estimator"], n_samples, random_state)
        return {"points": X, "labels": y}
