"""A fit request checked against the data, the limits and ``align_to`` before any work
starts, so that bad input is refused before a job exists."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from service.domain.datasets.arrays import Dataset
from service.domain.datasets.service import Datasets
from service.domain.outofcore import chunked
from service.domain.records import ModelResource
from service.domain.training import estimators
from service.domain.training.results import omitted_by_default
from service.errors import InvalidInput, NotFound
from service.schemas.data import DataSpec
from service.store.signing import StoredRows


@dataclass
class PreparedFit:
    """A fit request checked against the data and the limits, ready to run."""

    algorithm: str
    params: dict[str, Any]
    data: DataSpec
    dataset: Dataset
    name: str | None
    tags: dict[str, str]
    #: Seconds the stored model lives (its ``expires_at``); None: until deleted.
    ttl_seconds: int | None
    #: The per-point arrays to answer (``include``, or the algorithm's default).
    wanted: set[str]
    #: Of ``wanted``, those left out for their size (see ``omitted_by_default``).
    omitted: list[str]
    alignment: tuple[str, np.ndarray] | None
    extra: dict[str, Any] | None
    #: (n_samples,) float64, k-means only; None fits every point with weight 1.
    sample_weight: np.ndarray | None = None
    #: engine "dask": where the workers read the dataset's rows. ``dataset.X`` is then
    #: only the shape of the points, which never enter this process.
    rows: StoredRows | None = None


def alignment_reference(
    get_model: Callable[[str], ModelResource],
    align_to: str | None,
    algorithm: str,
    params: dict[str, Any],
    n_features: int,
) -> np.ndarray | None:
    """The means of the model ``align_to`` names, checked against this fit."""
    if align_to is None:
        return None
    loc = ["body", "align_to"]
    try:
        ref = get_model(align_to)
    except NotFound as exc:  # a store outage stays a 503, not the client's fault
        raise InvalidInput.at(loc, f"align_to names no stored model ({align_to}).") from exc
    k = params[estimators.ALGORITHMS[algorithm].k_param]
    if ref["n_components"] != k or ref["n_features"] != n_features:
        raise InvalidInput.at(
            loc,
            f"align_to model {align_to} has {ref['n_components']} components and "
            f"{ref['n_features']} features; this fit has {k} and {n_features}.",
        )
    if params.get("weight_concentration_prior_type") == "dirichlet_process":
        raise InvalidInput.at(
            loc,
            "a dirichlet_process prior orders its components (stick breaking), so they "
            "cannot be permuted; use weight_concentration_prior_type "
            "'dirichlet_distribution' to align.",
        )
    return np.asarray(ref["means"], dtype=np.float64)


def prepare_fit(
    datasets: Datasets,
    get_model: Callable[[str], ModelResource],
    *,
    algorithm: str,
    params: dict[str, Any],
    data: DataSpec,
    name: str | None,
    tags: dict[str, str],
    ttl_seconds: int | None = None,
    include: list[str] | None,
    align_to: str | None,
    extra: dict[str, Any] | None,
    sample_weight: list[float] | None,
    engine: Literal["local", "dask"],
    has_cluster: bool,
) -> PreparedFit:
    """Check everything a fit needs (parameters, data, limits, ``align_to``)."""
    limits = datasets.limits
    allowed = estimators.per_point_fields(algorithm)
    wanted = estimators.default_include(algorithm) if include is None else set(include)
    for i, item in enumerate(include or []):
        if item not in allowed:
            raise InvalidInput.at(
                ["body", "include", i],
                f"{item!r} is not available for {algorithm}; choose from {sorted(allowed)}.",
            )
    rows = None
    if engine == "dask":
        if not has_cluster:
            raise InvalidInput.at(
                ["body", "engine"],
                "engine 'dask' needs a Dask cluster, and this service has none: set "
                "GMM_DASK_SCHEDULER to its scheduler's address.",
            )
        chunked.check(algorithm, params, weighted=sample_weight is not None)
        dataset, rows = datasets.rows(data)
    else:
        dataset = datasets.resolve(data)
    n_samples, n_features = dataset.X.shape
    estimators.check_params(algorithm, params, n_samples, n_features, limits)
    weights = estimators.check_sample_weight(algorithm, sample_weight, n_samples)
    reference = alignment_reference(get_model, align_to, algorithm, params, n_features)
    omitted = omitted_by_default(
        algorithm, params, n_samples, wanted, include, limits.max_default_per_point_values
    )
    return PreparedFit(
        algorithm=algorithm,
        params=params,
        data=data,
        dataset=dataset,
        name=name,
        tags=tags,
        ttl_seconds=ttl_seconds,
        wanted=wanted,
        omitted=omitted,
        alignment=(align_to, reference) if align_to and reference is not None else None,
        extra=extra,
        sample_weight=weights,
        rows=rows,
    )
