"""Arrays on the wire: ``.npy`` bytes both ways, never pickled."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

NPY = "application/x-npy"


def as_points(X: Any) -> np.ndarray:
    """``X`` as the 2-D float64 array the service reads (a 1-D array is one feature,
    as scikit-learn's estimators would refuse; here the service says so)."""
    arr = np.asarray(X)
    if arr.dtype == object:
        raise TypeError("points must be numbers, not objects")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"points must be numbers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def to_npy(X: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(X), allow_pickle=False)
    return buf.getvalue()


def from_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)  # type: ignore[no-any-return]
