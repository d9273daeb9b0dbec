"""``points_to_array`` takes the decoder's ready array as is, under the same limits and
with the same errors as the lists it stands for."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.domain.datasets.arrays import points_to_array
from service.domain.limits import Limits
from service.errors import InvalidInput, PayloadTooLarge, ServiceError

LOC = ["body", "data", "points"]
LIMITS = Limits(
    max_points=100,
    max_features=10,
    max_values=150,
    max_components=5,
    max_model_parameters=1000,
    max_iter=50,
    max_n_init=5,
    max_grid_cells=5,
    max_parallel_fits=1,
    max_default_per_point_values=1,
)


def _refusal(points: Any, width: int | None = None) -> tuple[type, int, Any]:
    with pytest.raises(ServiceError) as info:
        points_to_array(points, LIMITS, LOC, width=width)
    return type(info.value), info.value.status, info.value.errors


def test_a_ready_array_is_not_copied() -> None:
    X = np.arange(12, dtype=np.float64).reshape(6, 2)
    assert points_to_array(X, LIMITS, LOC) is X
    assert points_to_array(X, LIMITS, LOC, width=2) is X


@pytest.mark.parametrize(
    ("rows", "width", "kind"),
    [
        ([[0.0]] * 101, None, PayloadTooLarge),  # GMM_MAX_POINTS
        ([[0.0] * 11] * 3, None, PayloadTooLarge),  # GMM_MAX_FEATURES
        ([[0.0, 1.0]] * 80, None, PayloadTooLarge),  # GMM_MAX_VALUES
        ([[0.0, 1.0, 2.0]] * 2, 2, InvalidInput),  # the model's n_features
        ([[0.0]] * 2, 2, InvalidInput),
    ],
)
def test_an_array_is_refused_exactly_as_its_lists(
    rows: list[list[float]], width: int | None, kind: type
) -> None:
    from_lists = _refusal(rows, width)
    assert from_lists[0] is kind
    assert _refusal(np.asarray(rows, dtype=np.float64), width) == from_lists


@pytest.mark.parametrize(
    ("X", "loc"),
    [
        (np.zeros((0, 2)), LOC),
        (np.zeros((2, 0)), [*LOC, 0]),
        (np.zeros(3), LOC),
        (np.array([[0.0, 1.0], [2.0, np.inf]]), [*LOC, 1, 1]),
    ],
)
def test_arrays_from_other_callers_are_checked_too(X: np.ndarray, loc: list[str | int]) -> None:
    kind, status, errors = _refusal(X)
    assert (kind, status) == (InvalidInput, 422)
    assert errors[0]["loc"] == loc
