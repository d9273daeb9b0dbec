"""Collect the warnings one fit raises, even while other fits run in other threads.

``warnings.catch_warnings`` swaps process-wide state and is not thread-safe: two
overlapping fits would lose or swap each other's warnings, and could leave the
filters wrong. Instead, while any capture is active, one process-wide hook stays
installed (reference counted) and hands each warning to the collector of the thread
that raised it.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from typing import Any

_lock = threading.Lock()
_active = 0
_saved: tuple[Any, list[Any]] | None = None
_local = threading.local()


def _dispatch(
    message: Any,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    sink: list[dict[str, str]] | None = getattr(_local, "sink", None)
    if sink is not None:
        item = {"category": category.__name__, "message": str(message)}
        if item not in sink:
            sink.append(item)
    elif _saved is not None:
        _saved[0](message, category, filename, lineno, file, line)


@contextlib.contextmanager
def capture_warnings() -> Iterator[list[dict[str, str]]]:
    """Yield a list that fills with ``{"category", "message"}`` of this thread's warnings."""
    global _active, _saved
    with _lock:
        if _active == 0:
            _saved = (warnings.showwarning, list(warnings.filters))
            warnings.showwarning = _dispatch
            warnings.simplefilter("always")
        _active += 1
    sink: list[dict[str, str]] = []
    previous = getattr(_local, "sink", None)
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = previous
        with _lock:
            _active -= 1
            if _active == 0 and _saved is not None:
                warnings.showwarning, filters = _saved
                warnings.filters[:] = filters
                warnings._filters_mutated()  # type: ignore[attr-defined]
                _saved = None
