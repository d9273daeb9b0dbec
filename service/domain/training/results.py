"""What a fit leaves behind: the fitted attributes, the bundle the store keeps, and the
training points' per-point arrays, checked for overflow. Pure functions of the fit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.domain.datasets.arrays import Dataset
from service.domain.records import Bundle
from service.domain.training import estimators, matching
from service.errors import FitFailed
from service.schemas.data import GaussianMixtureSpec, GeneratorSpec
from service.schemas.models import EFFECTIVE_WEIGHT_THRESHOLD

#: Fitted attributes that may be null by contract (-inf after max_iter=0 and the like).
_NULLABLE_ATTRIBUTES = frozenset({"lower_bound", "lower_bounds", "bic", "aic"})

#: ``per_point(estimator, names)``: the training points' arrays when they are not in
#: memory (a chunked fit computes them on the cluster).
PerPoint = Callable[[Any, set[str]], dict[str, np.ndarray]]


def _first_non_finite(values: dict[str, Any]) -> str | None:
    """The first key whose numbers hold inf or nan (nested lists and arrays too)."""
    for key, value in values.items():
        if key in _NULLABLE_ATTRIBUTES or value is None or isinstance(value, str | bool | dict):
            continue
        try:
            numbers = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if not np.isfinite(numbers).all():
            return key
    return None


def _overflowed(what: str) -> FitFailed:
    # sklearn fits data near 1e154 and beyond without complaint, but its squared
    # distances and variances overflow: centers of nan, an inertia of inf.
    return FitFailed(
        f"the fitted {what} overflowed float64: the data's values are too large in "
        "magnitude for double precision; rescale the data."
    )


@dataclass
class FitRecord:
    """A fit, described: the resource's fitted ``attributes``, the ``bundle`` to
    store, and the training points' ``arrays`` (labels always, and whatever was asked)."""

    attributes: dict[str, Any]
    bundle: Bundle
    arrays: dict[str, np.ndarray]


def describe_fit(
    *,
    algorithm: str,
    dataset: Dataset,
    fitted: estimators.Fitted,
    include: set[str],
    alignment: tuple[str, np.ndarray] | None = None,
    generator: GeneratorSpec | None = None,
    extra: dict[str, Any] | None = None,
    weighted: bool = False,
    per_point: PerPoint | None = None,
) -> FitRecord:
    """Describe an estimator fitted on ``dataset``, aligned to ``alignment`` (a model id
    and its means) first when given.

    ``weighted``: the fit was given ``sample_weight`` (k-means only). The resource
    says so, since its ``inertia`` is then the weighted sum; the weights are not kept.
    """
    est = fitted.estimator
    if not np.isfinite(estimators.means_of(algorithm, est)).all():
        raise _overflowed("means")
    attributes: dict[str, Any] = {}
    if alignment is not None:
        perm = matching.alignment_permutation(estimators.means_of(algorithm, est), alignment[1])
        matching.permute(algorithm, est, perm)
        attributes["alignment"] = {"model_id": alignment[0], "permutation": perm}
    mixture = estimators.is_mixture(algorithm)
    needed = include | {"labels"} | ({"log_likelihood"} if mixture else set())
    with np.errstate(over="ignore", invalid="ignore"):  # checked just below
        # The fit's final E-step, unless alignment has since reordered the components.
        wlp = fitted.training_wlp if alignment is None else None
        if per_point is not None:
            arrays = per_point(est, needed)
        else:
            arrays = estimators.per_point(algorithm, est, dataset.X, needed, training=True, wlp=wlp)
        train_ll = arrays.get("log_likelihood")
        described = estimators.describe(algorithm, est, dataset.X, train_ll)
    overflowed = _first_non_finite(described) or _first_non_finite(arrays)
    if overflowed is not None:
        raise _overflowed(overflowed)
    attributes.update(described)
    if not mixture:
        attributes["weighted"] = weighted
    if algorithm == "bayesian_gaussian_mixture":
        threshold = (extra or {}).get("effective_weight_threshold")
        threshold = EFFECTIVE_WEIGHT_THRESHOLD if threshold is None else threshold
        attributes["effective_weight_threshold"] = threshold
        attributes["effective_n_components"] = estimators.effective_n_components(
            est.weights_, threshold
        )
    if extra and extra.get("selection") is not None:
        attributes["selection"] = extra["selection"]
    if isinstance(generator, GaussianMixtureSpec) and dataset.y is not None:
        attributes["recovery"] = matching.recovery_report(
            algorithm,
            est,
            arrays["labels"],
            np.array([c.mean for c in generator.components], dtype=np.float64),
            np.array([c.cov for c in generator.components], dtype=np.float64),
            dataset.y,
        )
    bundle: Bundle = {
        "estimator": est,
        "dataset_id": None,
        "labels": np.asarray(arrays["labels"]),
        "train_log_likelihood": np.sort(train_ll) if train_ll is not None else None,
    }
    return FitRecord(attributes, bundle, {k: v for k, v in arrays.items() if k in include})


def omitted_by_default(
    algorithm: str,
    params: dict[str, Any],
    n_samples: int,
    wanted: set[str],
    include: list[str] | None,
    max_values: int,
) -> list[str]:
    """The per-point arrays to leave out of a fit's answer: those answered by default
    (``include`` not given) when together they would pass ``max_values`` numbers. A
    million points' probabilities are tens of megabytes of JSON that a client fitting
    them rarely reads; one that names them gets them."""
    if include is not None:
        return []
    k = params[estimators.ALGORITHMS[algorithm].k_param]
    n_values = sum(n_samples * (1 if name == "labels" else k) for name in wanted)
    if n_values <= max_values:
        return []
    return sorted(wanted)


def omission_note(
    omitted: list[str], n_samples: int, max_values: int, model_id: str
) -> dict[str, str]:
    """The warning that says which arrays were left out, and how to get them."""
    return {
        "category": "ResponseSizeWarning",
        "message": (
            f"{' and '.join(omitted)} for the {n_samples} training points were left out: "
            f"they would hold more than {max_values} numbers "
            "(GMM_MAX_DEFAULT_PER_POINT_VALUES). Name them in `include` to get them, or "
            f"POST the points to /v1/models/{model_id}/predict."
        ),
    }
