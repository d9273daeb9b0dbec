"""``service.domain.datasets.arrays``: generator specs give exactly sklearn's / numpy's arrays, and
oversized specs are refused from the spec alone, before a byte is allocated."""

from __future__ import annotations

import dataclasses
import tracemalloc
import warnings
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter
from sklearn import datasets

from service.config import Settings
from service.domain.datasets import arrays as data
from service.domain.limits import Limits
from service.errors import InvalidInput, PayloadTooLarge
from service.schemas.data import DataSpec, GeneratorSpec
from service.services import limits_from

LOC = ["body", "data", "generator"]
SPEC = TypeAdapter(GeneratorSpec)


@pytest.fixture
def limits(settings: Settings) -> Limits:
    """The limits the app builds from its default limits."""
    return limits_from(settings)


def generate(spec: dict[str, Any], limits: Limits) -> data.Dataset:
    return data.generate(SPEC.validate_python(spec), limits, LOC)


def sklearn_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in spec.items() if k != "kind"}
    if isinstance(kwargs.get("centers"), list):
        kwargs["centers"] = np.asarray(kwargs["centers"], dtype=np.float64)
    if "center_box" in kwargs:  # JSON has no tuples; make_blobs insists on one
        kwargs["center_box"] = tuple(kwargs["center_box"])
    return kwargs


# -- blobs -----------------------------------------------------------------------------

BLOBS_SPECS = {
    "seed-notebook": {
        "n_samples": 200,
        "n_features": 2,
        "centers": 4,
        "cluster_std": 1.6,
        "random_state": 10,
    },
    "defaults": {"random_state": 0},
    "n_samples-list-random-centers": {"n_samples": [10, 20, 5], "random_state": 1},
    "n_samples-list-explicit-centers": {
        "n_samples": [7, 3, 11],
        "centers": [[0, 0], [5, 5], [-5, 5.5]],
        "random_state": 2,
    },
    "explicit-centers-3d": {
        "n_samples": 40,
        "centers": [[0, 0, 0], [1, 2, 3]],
        "random_state": 3,
    },
    "cluster_std-list": {
        "n_samples": 60,
        "centers": 3,
        "cluster_std": [0.5, 1.0, 2.0],
        "random_state": 4,
    },
    "center_box-no-shuffle-5d": {
        "n_samples": 50,
        "n_features": 5,
        "centers": 2,
        "center_box": [-3, 3],
        "shuffle": False,
        "random_state": 5,
    },
    "zero-std": {"n_samples": 9, "centers": 3, "cluster_std": 0.0, "random_state": 6},
    "one-sample": {"n_samples": 1, "random_state": 7},
}


@pytest.mark.parametrize("spec", BLOBS_SPECS.values(), ids=BLOBS_SPECS)
def test_blobs_equal_make_blobs(limits: Limits, spec: dict[str, Any]) -> None:
    got = generate({"kind": "blobs", **spec}, limits)
    X, y = datasets.make_blobs(**sklearn_kwargs(spec))
    np.testing.assert_array_equal(got.X, X)
    np.testing.assert_array_equal(got.y, y)
    assert got.X.dtype == np.float64
    assert got.warnings == []


def test_blobs_without_random_state_have_the_right_shape(limits: Limits) -> None:
    got = generate({"kind": "blobs", "n_samples": 30, "n_features": 4, "centers": 3}, limits)
    assert got.X.shape == (30, 4)
    assert got.y is not None
    assert set(got.y.tolist()) <= {0, 1, 2}


@pytest.mark.parametrize(
    "spec",
    [
        {"n_samples": [3, 4], "centers": 3},  # sklearn: list n_samples needs matching centers
        {"n_samples": [3, 4], "centers": [[0, 0], [1, 1], [2, 2]]},
        {"n_samples": 10, "centers": 2, "cluster_std": [1.0, 2.0, 3.0]},
        {"n_samples": 10, "centers": [[0, 0], [1]]},  # ragged centers
    ],
)
def test_blobs_sklearn_refuses_are_invalid_input(limits: Limits, spec: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        generate({"kind": "blobs", "random_state": 0, **spec}, limits)
    assert info.value.status == 422
    assert info.value.errors is not None
    assert info.value.errors[0]["loc"] == LOC


# -- gaussian_mixture ------------------------------------------------------------------

COMPONENTS = [
    {"mean": [0.0, 1.0], "cov": [[1.0, 0.9], [0.9, 2.0]], "n_samples": 30},
    {"mean": [1.0, -2.0], "cov": [[2.0, -1.0], [-1.0, 1.0]], "n_samples": 20},
    {"mean": [5.0, 5.0], "cov": [[0.5, 0.0], [0.0, 0.5]], "n_samples": 0},
    {"mean": [-4.0, 0.0], "cov": [[1.0, 0.0], [0.0, 0.1]], "n_samples": 10},
]


def draws(components: list[dict[str, Any]], seed: int, **kwargs: Any) -> np.ndarray:
    rs = np.random.RandomState(seed)
    return np.concatenate(
        [rs.multivariate_normal(c["mean"], c["cov"], c["n_samples"], **kwargs) for c in components]
    )


def component_labels(components: list[dict[str, Any]]) -> np.ndarray:
    return np.concatenate([np.full(c["n_samples"], i) for i, c in enumerate(components)])


def test_gaussian_mixture_draws_components_in_order(limits: Limits) -> None:
    got = generate(
        {"kind": "gaussian_mixture", "components": COMPONENTS, "random_state": 11}, limits
    )
    np.testing.assert_array_equal(got.X, draws(COMPONENTS, 11))
    np.testing.assert_array_equal(got.y, component_labels(COMPONENTS))
    assert got.X.flags["C_CONTIGUOUS"]
    assert got.warnings == []


def test_gaussian_mixture_shuffle_permutes_with_the_same_random_state(limits: Limits) -> None:
    """Documented: draw in order, then permute points and labels together with the same
    RandomState, so a shuffled spec is as reproducible as an ordered one."""
    spec = {"kind": "gaussian_mixture", "components": COMPONENTS, "random_state": 12}
    ordered = generate(spec, limits)
    shuffled = generate({**spec, "shuffle": True}, limits)

    rs = np.random.RandomState(12)
    X = np.concatenate(
        [rs.multivariate_normal(c["mean"], c["cov"], c["n_samples"]) for c in COMPONENTS]
    )
    perm = rs.permutation(len(X))
    np.testing.assert_array_equal(shuffled.X, X[perm])
    np.testing.assert_array_equal(shuffled.y, component_labels(COMPONENTS)[perm])
    # Same points, same labels per point, another order.
    assert not np.array_equal(shuffled.X, ordered.X)
    order_a = np.lexsort(ordered.X.T)
    order_b = np.lexsort(shuffled.X.T)
    np.testing.assert_array_equal(ordered.X[order_a], shuffled.X[order_b])
    np.testing.assert_array_equal(ordered.y[order_a], shuffled.y[order_b])


NOT_PSD = [
    {"mean": [0, 1], "cov": [[1, 2], [0.7, 2]], "n_samples": 5},
    {"mean": [1, -2], "cov": [[2, 1], [-2, 1]], "n_samples": 5},
]


def test_not_psd_raises_naming_the_component(limits: Limits) -> None:
    components = [COMPONENTS[0], *NOT_PSD]
    with pytest.raises(InvalidInput) as info:
        generate({"kind": "gaussian_mixture", "components": components}, limits)
    assert info.value.errors is not None
    assert info.value.errors[0]["loc"] == [*LOC, "components", 1, "cov"]
    assert info.value.errors[0]["type"] == "not_positive_semidefinite"


def test_not_psd_with_warn_draws_like_numpy_and_reports(limits: Limits) -> None:
    spec = {
        "kind": "gaussian_mixture",
        "components": NOT_PSD,
        "random_state": 13,
        "check_valid": "warn",
    }
    got = generate(spec, limits)
    with pytest.warns(RuntimeWarning) as record:
        X = draws(NOT_PSD, 13, check_valid="warn")
    np.testing.assert_array_equal(got.X, X)
    assert got.warnings == [
        {"category": "RuntimeWarning", "message": f"component {i}: {w.message}"}
        for i, w in enumerate(record)
    ]


def test_not_psd_with_ignore_draws_silently(limits: Limits) -> None:
    spec = {
        "kind": "gaussian_mixture",
        "components": NOT_PSD,
        "random_state": 14,
        "check_valid": "ignore",
    }
    got = generate(spec, limits)
    np.testing.assert_array_equal(got.X, draws(NOT_PSD, 14, check_valid="ignore"))
    assert got.warnings == []


def test_tol_is_numpys_tolerance(limits: Limits) -> None:
    nearly = [{"mean": [0, 0], "cov": [[1, 1e-9], [0, 1]], "n_samples": 3}]
    spec = {"kind": "gaussian_mixture", "components": nearly, "random_state": 0}
    got = generate(spec, limits)
    np.testing.assert_array_equal(got.X, draws(nearly, 0, check_valid="raise"))
    with pytest.raises(InvalidInput):
        generate({**spec, "tol": 1e-12}, limits)


@pytest.mark.parametrize(
    ("components", "loc"),
    [
        (
            [COMPONENTS[0], {"mean": [0.0], "cov": [[1.0]], "n_samples": 3}],
            [*LOC, "components", 1, "mean"],
        ),
        (
            [{"mean": [0.0, 0.0], "cov": [[1.0, 0.0]], "n_samples": 3}],
            [*LOC, "components", 0, "cov"],
        ),
        (
            [{"mean": [0.0, 0.0], "cov": [[1.0, 0.0], [0.0]], "n_samples": 3}],
            [*LOC, "components", 0, "cov"],
        ),
        (
            [{"mean": [0.0], "cov": [[1.0]], "n_samples": 0}],
            [*LOC, "components"],
        ),
    ],
    ids=["mean-width", "cov-rows", "cov-ragged", "no-samples"],
)
def test_gaussian_mixture_bad_shapes_name_the_place(
    limits: Limits, components: list[dict[str, Any]], loc: list[str | int]
) -> None:
    with pytest.raises(InvalidInput) as info:
        generate({"kind": "gaussian_mixture", "components": components}, limits)
    assert info.value.errors is not None
    assert info.value.errors[0]["loc"] == loc


# -- moons and circles -------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        {"random_state": 0},
        {"n_samples": 51, "noise": 0.1, "random_state": 1},
        {"n_samples": 20, "noise": 0.05, "shuffle": False, "random_state": 2},
    ],
)
def test_moons_equal_make_moons(limits: Limits, spec: dict[str, Any]) -> None:
    got = generate({"kind": "moons", **spec}, limits)
    X, y = datasets.make_moons(**spec)
    np.testing.assert_array_equal(got.X, X)
    np.testing.assert_array_equal(got.y, y)


@pytest.mark.parametrize(
    "spec",
    [
        {"random_state": 0},
        {"n_samples": 51, "noise": 0.1, "factor": 0.3, "random_state": 1},
        {"n_samples": 20, "shuffle": False, "factor": 0.0, "random_state": 2},
    ],
)
def test_circles_equal_make_circles(limits: Limits, spec: dict[str, Any]) -> None:
    got = generate({"kind": "circles", **spec}, limits)
    X, y = datasets.make_circles(**spec)
    np.testing.assert_array_equal(got.X, X)
    np.testing.assert_array_equal(got.y, y)


# -- limits, before allocation ------------------------------------------------------------

#: Each spec asks for ~3-16 MB: harmless to allocate, so the test can tell "refused
#: first" from "generated, then measured" by watching the allocator.
OVERSIZED = {
    "blobs": {"kind": "blobs", "n_samples": 200_000, "random_state": 0},
    "blobs-list": {"kind": "blobs", "n_samples": [100_000, 100_000], "random_state": 0},
    "blobs-centers-width": {
        "kind": "blobs",
        "n_samples": 1_000,
        "centers": [[0.0] * 2_000],
        "random_state": 0,
    },
    "gaussian_mixture": {
        "kind": "gaussian_mixture",
        "components": [
            {"mean": [0, 0], "cov": [[1, 0], [0, 1]], "n_samples": 100_000},
            {"mean": [0, 0], "cov": [[1, 0], [0, 1]], "n_samples": 100_000},
        ],
    },
    "moons": {"kind": "moons", "n_samples": 200_000},
    "circles": {"kind": "circles", "n_samples": 200_000},
}


@pytest.mark.parametrize("spec", OVERSIZED.values(), ids=OVERSIZED)
def test_oversized_specs_are_refused_before_allocation(
    limits: Limits, spec: dict[str, Any]
) -> None:
    small = dataclasses.replace(limits, max_points=1_000, max_values=1_500)
    parsed = SPEC.validate_python(spec)
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as info:
            data.generate(parsed, small, LOC)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 512 * 1024, f"allocated {peak} bytes before refusing"
    assert info.value.status == 413
    assert "GMM_MAX_" in info.value.detail


@pytest.mark.parametrize(
    ("n_samples", "n_features", "knob"),
    [(101, 1, "GMM_MAX_POINTS"), (10, 11, "GMM_MAX_FEATURES"), (60, 3, "GMM_MAX_VALUES")],
)
def test_check_size_names_the_limit(
    limits: Limits, n_samples: int, n_features: int, knob: str
) -> None:
    small = dataclasses.replace(limits, max_points=100, max_features=10, max_values=150)
    with pytest.raises(PayloadTooLarge) as info:
        data.check_size(n_samples, n_features, small, LOC)
    assert knob in info.value.detail
    data.check_size(50, 3, small, LOC)  # within every limit


# -- points ------------------------------------------------------------------------------


def test_points_become_contiguous_float64(limits: Limits) -> None:
    points = [[1, 2.5], [3, -4e-300]]
    X = data.points_to_array(points, limits, ["body", "points"])
    assert X.dtype == np.float64
    assert X.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(X, np.array(points, dtype=np.float64))


@pytest.mark.parametrize(
    ("points", "width", "loc", "err_type"),
    [
        ([[1.0, 2.0], [3.0]], None, ["body", "points", 1], "ragged_rows"),
        ([[1.0, 2.0], [3.0, 4.0]], 3, ["body", "points", 0], "wrong_width"),
        ([[], []], None, ["body", "points", 0], "value_error"),
    ],
)
def test_points_name_the_bad_row(
    limits: Limits,
    points: list[list[float]],
    width: int | None,
    loc: list[str | int],
    err_type: str,
) -> None:
    with pytest.raises(InvalidInput) as info:
        data.points_to_array(points, limits, ["body", "points"], width=width)
    assert info.value.errors == [{"loc": loc, "msg": info.value.detail, "type": err_type}]


def test_resolve_points_and_generator(limits: Limits) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_points = data.resolve(DataSpec(points=[[0.0, 1.0], [2.0, 3.0]]), limits)
    assert from_points.y is None
    np.testing.assert_array_equal(from_points.X, [[0.0, 1.0], [2.0, 3.0]])

    spec = DataSpec.model_validate({"generator": {"kind": "moons", "random_state": 0}})
    from_generator = data.resolve(spec, limits)
    X, y = datasets.make_moons(random_state=0)
    np.testing.assert_array_equal(from_generator.X, X)
    np.testing.assert_array_equal(from_generator.y, y)

    tiny = dataclasses.replace(limits, max_points=10)
    with pytest.raises(PayloadTooLarge) as info:
        data.resolve(spec, tiny)
    assert info.value.errors is not None
    assert info.value.errors[0]["loc"] == ["body", "data", "generator"]
