"""Turn a request's data (points or a generator spec) into a float64 array.

Limits are checked before anything is allocated: a generator asking for a billion
samples is refused from its spec, not after numpy ran out of memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn import datasets

from service.domain.limits import Limits
from service.domain.training.warnings_capture import capture_warnings
from service.errors import InvalidInput, Loc, NotFound, PayloadTooLarge
from service.schemas.common import all_finite
from service.schemas.data import (
    BlobsSpec,
    CirclesSpec,
    DataSpec,
    GaussianMixtureSpec,
    GeneratorSpec,
    MoonsSpec,
)


@dataclass
class Dataset:
    """Points ``X`` (n_samples, n_features) and, for generated data, true labels ``y``.

    ``dataset_id`` names the stored dataset ``X`` was read from (a read-only memory
    map), so that a model fitted on it refers to it instead of storing it again.
    """

    X: np.ndarray
    y: np.ndarray | None = None
    warnings: list[dict[str, str]] = field(default_factory=list)
    dataset_id: str | None = None


def check_size(n_samples: int, n_features: int, limits: Limits, loc: Loc) -> None:
    """Raise 413 when the data would exceed the configured limits."""
    if n_samples > limits.max_points:
        raise PayloadTooLarge.at(
            loc, f"{n_samples} samples exceed the limit of {limits.max_points} (GMM_MAX_POINTS)."
        )
    check_features(n_features, limits, loc)
    if n_samples * n_features > limits.max_values:
        raise PayloadTooLarge.at(
            loc,
            f"{n_samples} x {n_features} = {n_samples * n_features} values exceed the limit "
            f"of {limits.max_values} (GMM_MAX_VALUES).",
        )


def check_features(n_features: int, limits: Limits, loc: Loc) -> None:
    """Raise 413 past GMM_MAX_FEATURES: the one size limit that also holds for data
    fitted out of core, which never enter this process."""
    if n_features > limits.max_features:
        raise PayloadTooLarge.at(
            loc,
            f"{n_features} features exceed the limit of {limits.max_features} (GMM_MAX_FEATURES).",
        )


def points_to_array(
    points: Sequence[Sequence[float]] | np.ndarray,
    limits: Limits,
    loc: Loc,
    width: int | None = None,
) -> np.ndarray:
    """Rows of finite floats (already checked by the schema) -> C-contiguous float64.

    ``points`` is either the rows as lists, or the (n_samples, n_features) float64
    array the JSON decoder built for a large body; that array is used as is, not
    copied, under the same limits and with the same errors. ``width``, when given, is
    the number of features a fitted model expects.
    """
    if isinstance(points, np.ndarray):
        return _checked_array(points, limits, loc, width)
    if not points:
        raise InvalidInput.at(loc, "points must hold at least one row.")
    expected = len(points[0]) if width is None else width
    for i, row in enumerate(points):
        if len(row) != expected:
            what = "the width of row 0" if width is None else "the model's n_features"
            raise InvalidInput.at(
                [*loc, i],
                f"row {i} has {len(row)} values, expected {expected} ({what}).",
                "ragged_rows" if width is None else "wrong_width",
            )
    if expected == 0:
        raise InvalidInput.at([*loc, 0], "rows must hold at least one value.")
    check_size(len(points), expected, limits, loc)
    return np.asarray(points, dtype=np.float64)


def _checked_array(X: np.ndarray, limits: Limits, loc: Loc, width: int | None) -> np.ndarray:
    """``points_to_array`` for an array: the list checks, in the same order, in O(1)
    Python steps (an array cannot be ragged), plus finiteness for callers other than
    the schema."""
    if X.ndim != 2:
        raise InvalidInput.at(loc, f"points must be rows (2-D), got an array of shape {X.shape}.")
    n_samples, n_features = X.shape
    if n_samples == 0:
        raise InvalidInput.at(loc, "points must hold at least one row.")
    if width is not None and n_features != width:
        raise InvalidInput.at(
            [*loc, 0],
            f"row 0 has {n_features} values, expected {width} (the model's n_features).",
            "wrong_width",
        )
    if n_features == 0:
        raise InvalidInput.at([*loc, 0], "rows must hold at least one value.")
    check_size(n_samples, n_features, limits, loc)
    X = np.ascontiguousarray(X, dtype=np.float64)  # no copy for the decoder's arrays
    if not all_finite(X):
        i, j = (int(k) for k in np.argwhere(~np.isfinite(X))[0])
        raise InvalidInput.at(
            [*loc, i, j], f"row {i}: value {j} is not a finite number.", "finite_number"
        )
    return X


def _blobs(spec: BlobsSpec, limits: Limits, loc: Loc) -> Dataset:
    n_samples = spec.n_samples if isinstance(spec.n_samples, int) else sum(spec.n_samples)
    centers = spec.centers
    n_features = len(centers[0]) if isinstance(centers, list) else spec.n_features
    check_size(n_samples, n_features, limits, loc)
    try:
        centers_arg = (
            np.asarray(centers, dtype=np.float64) if isinstance(centers, list) else centers
        )
        # sklearn's own checks (centers vs n_samples, cluster_std length) name the problem.
        X, y = datasets.make_blobs(
            n_samples=spec.n_samples,
            n_features=spec.n_features,
            centers=centers_arg,
            cluster_std=spec.cluster_std,
            center_box=spec.center_box,
            shuffle=spec.shuffle,
            random_state=spec.random_state,
        )
    except ValueError as exc:
        raise InvalidInput.at(loc, f"make_blobs refused the spec: {exc}") from exc
    return Dataset(X, y)


def _gaussian_mixture(spec: GaussianMixtureSpec, limits: Limits, loc: Loc) -> Dataset:
    d = len(spec.components[0].mean)
    for i, comp in enumerate(spec.components):
        cloc = [*loc, "components", i]
        if len(comp.mean) != d:
            raise InvalidInput.at(
                [*cloc, "mean"],
                f"component {i} has a mean of length {len(comp.mean)}, expected {d} "
                "(the length of component 0's mean).",
            )
        if len(comp.cov) != d or any(len(r) != d for r in comp.cov):
            raise InvalidInput.at(
                [*cloc, "cov"], f"component {i}'s cov must be a {d} x {d} matrix."
            )
    check_size(sum(c.n_samples for c in spec.components), d, limits, loc)
    if sum(c.n_samples for c in spec.components) == 0:
        raise InvalidInput.at([*loc, "components"], "the components draw no samples in total.")
    rs = np.random.RandomState(spec.random_state)
    parts: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    collected: list[dict[str, str]] = []
    for i, comp in enumerate(spec.components):
        with capture_warnings() as caught:
            try:
                draw = rs.multivariate_normal(
                    comp.mean,
                    comp.cov,
                    comp.n_samples,
                    check_valid=spec.check_valid,
                    tol=spec.tol,
                )
            except ValueError as exc:
                raise InvalidInput.at(
                    [*loc, "components", i, "cov"],
                    f'component {i}: {exc} Fix the matrix, or set "check_valid": "warn" '
                    "to draw from it anyway as numpy does.",
                    "not_positive_semidefinite",
                ) from exc
        collected += [
            {"category": w["category"], "message": f"component {i}: {w['message']}"} for w in caught
        ]
        parts.append(draw)
        labels.append(np.full(comp.n_samples, i, dtype=np.int64))
    X = np.concatenate(parts)
    y = np.concatenate(labels)
    if spec.shuffle:
        perm = rs.permutation(len(X))
        X, y = X[perm], y[perm]
    return Dataset(np.ascontiguousarray(X), y, collected)


def _moons(spec: MoonsSpec, limits: Limits, loc: Loc) -> Dataset:
    check_size(spec.n_samples, 2, limits, loc)
    X, y = datasets.make_moons(
        n_samples=spec.n_samples,
        shuffle=spec.shuffle,
        noise=spec.noise,
        random_state=spec.random_state,
    )
    return Dataset(X, y)


def _circles(spec: CirclesSpec, limits: Limits, loc: Loc) -> Dataset:
    check_size(spec.n_samples, 2, limits, loc)
    X, y = datasets.make_circles(
        n_samples=spec.n_samples,
        shuffle=spec.shuffle,
        noise=spec.noise,
        random_state=spec.random_state,
        factor=spec.factor,
    )
    return Dataset(X, y)


_GENERATORS = {
    "blobs": _blobs,
    "gaussian_mixture": _gaussian_mixture,
    "moons": _moons,
    "circles": _circles,
}


def generate(spec: GeneratorSpec, limits: Limits, loc: Loc) -> Dataset:
    dataset: Dataset = _GENERATORS[spec.kind](spec, limits, loc)  # type: ignore[operator]
    # Finite parameters can still draw past float64's range (noise=1e308): JSON cannot
    # carry the infinities, and no estimator can fit them.
    finite_rows = np.isfinite(dataset.X).all(axis=1)
    if not finite_rows.all():
        i = int(np.argmin(finite_rows))
        raise InvalidInput.at(
            loc,
            f"the {spec.kind} generator drew values beyond float64's range (point {i} is "
            "not finite); use smaller scales (noise, cluster_std, center_box, cov).",
            "non_finite_result",
        )
    return dataset


def resolve(
    data: DataSpec,
    limits: Limits,
    loc: Loc = ("body", "data"),
    load_dataset: Callable[[str], np.ndarray] | None = None,
) -> Dataset:
    """The array a request's ``data`` stands for (and true labels when generated).

    ``load_dataset`` reads a stored dataset by id (``NotFound`` when there is none).
    """
    if data.points is not None:
        return Dataset(points_to_array(data.points, limits, [*loc, "points"]))
    if data.dataset_id is not None:
        where = [*loc, "dataset_id"]
        if load_dataset is None:
            raise InvalidInput.at(where, "stored datasets are not available here.")
        try:
            X = load_dataset(data.dataset_id)
        except NotFound:
            raise InvalidInput.at(
                where,
                f"no dataset with id {data.dataset_id!r}; upload it with POST /v1/datasets "
                "(GET /v1/datasets lists the stored ones).",
                "unknown_dataset",
            ) from None
        # Stored under other limits, perhaps: each request is held to today's.
        check_size(X.shape[0], X.shape[1], limits, where)
        return Dataset(X, dataset_id=data.dataset_id)
    assert data.generator is not None
    return generate(data.generator, limits, [*loc, "generator"])
