"""One map-reduce over the row chunks of a dask array, and a row sample gathered from them.

Out-of-core EM and k-means (``dask_em``, ``dask_kmeans``) make one pass over the data
per iteration: a function maps each row chunk to a few small arrays (sufficient
statistics, a few kilobytes whatever the chunk's size) and those are combined
pairwise-ish up a tree, so that no worker, and not the client, ever holds more than
one chunk of ``X`` plus ``split_every`` partial results. ``X`` is never computed whole.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import dask
import dask.array as da
import numpy as np
from sklearn.utils import check_random_state

T = TypeVar("T")

#: How many partial results one combine task takes (dask.array's reductions use 4-32).
SPLIT_EVERY = 8

#: The scheduler this thread's computations run on (``using``); None: dask's default.
_SCHEDULER: contextvars.ContextVar[Any] = contextvars.ContextVar("gmm_dask_scheduler", default=None)


@contextlib.contextmanager
def using(scheduler: Any) -> Iterator[None]:
    """Run this thread's map-reduces on ``scheduler`` (a ``distributed.Client``).

    A context variable rather than ``Client.as_current``/``dask.config.set``, which
    change process-wide configuration: the service runs several fits at once, each in
    its own thread, and none may steer another's computations.
    """
    token = _SCHEDULER.set(scheduler)
    try:
        yield
    finally:
        _SCHEDULER.reset(token)


def compute(*collections: Any) -> tuple[Any, ...]:
    """``dask.compute`` on this thread's scheduler (see ``using``)."""
    return dask.compute(*collections, scheduler=_SCHEDULER.get())


def row_chunked(X: da.Array) -> da.Array:
    """``X`` with every chunk holding whole rows (one chunk along the features).

    Raises ``ValueError`` unless ``X`` is 2-D; a feature axis split in pieces is
    rechunked lazily (rows stay split as they were).
    """
    if not isinstance(X, da.Array):
        raise TypeError(f"X must be a dask.array.Array, got {type(X).__name__}.")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}.")
    if any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError(
            "X has unknown chunk sizes; call X.compute_chunk_sizes() (or build it with "
            "known chunks) first, so that n_samples is known."
        )
    return X if X.numblocks[1] == 1 else X.rechunk({1: -1})


def map_reduce(
    X: da.Array,
    chunk_fn: Callable[[np.ndarray], T],
    combine: Callable[[Sequence[T]], T],
    *,
    split_every: int = SPLIT_EVERY,
) -> T:
    """``combine`` of ``chunk_fn(chunk)`` over the row chunks of ``X``, as one dask graph.

    Parameters
    ----------
    X : dask array of shape (n_samples, n_features), chunked by rows
    chunk_fn : maps one chunk, an ndarray (n_chunk_rows, n_features), to a small result
    combine : merges a list of results into one; must be associative, and is applied
        in a fixed order (chunk order), so a given chunking gives the same bits on any
        scheduler
    split_every : how many results one combine task merges (tree reduction)

    Runs on dask's current scheduler: a ``distributed.Client``'s workers when one is
    active, else threads in this process.
    """
    blocks = row_chunked(X).to_delayed().ravel()
    parts = [dask.delayed(chunk_fn)(block) for block in blocks]
    while len(parts) > 1:
        parts = [
            dask.delayed(combine)(parts[i : i + split_every])
            for i in range(0, len(parts), split_every)
        ]
    (result,) = compute(parts[0])
    return result


def sum_dicts(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Key-wise sum of dicts of arrays (the combine step of sufficient statistics)."""
    out = {key: np.array(value, copy=True) for key, value in parts[0].items()}
    for part in parts[1:]:
        for key, value in part.items():
            out[key] += value
    return out


def sample_rows(X: da.Array, size: int, random_state: Any = None) -> np.ndarray:
    """A uniform sample of ``size`` rows of ``X`` without replacement, in row order.

    Only the sampled rows travel to the client: dask takes them chunk by chunk.

    Returns
    -------
    sample : ndarray of shape (min(size, n_samples), n_features)
    """
    X = row_chunked(X)
    n_samples = X.shape[0]
    if size >= n_samples:
        index = np.arange(n_samples)
    else:
        # Generator.choice draws without replacement in O(size), not O(n_samples)
        # as RandomState.choice does.
        seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
        index = np.sort(np.random.default_rng(seed).choice(n_samples, size, replace=False))
    (sample,) = compute(X[index])
    return np.asarray(sample)
