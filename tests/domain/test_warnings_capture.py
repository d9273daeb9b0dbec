"""``capture_warnings``: each thread gets its own warnings, and the process-wide
warnings state is exactly as it was once no capture is active.

The server fits in a threadpool, so two requests fitting at once must not swap or
lose each other's ``ConvergenceWarning``; ``warnings.catch_warnings`` would.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from service.domain.training.warnings_capture import capture_warnings

X = np.random.RandomState(0).standard_normal((60, 2))


def run_in_threads(*targets: Callable[[], None]) -> None:
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # surfaced in the main thread below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    if errors:
        raise errors[0]


def test_two_threads_each_see_only_their_own_warnings() -> None:
    """Both captures are open at once (the barrier), and each thread warns while the
    other's capture is active: a shared sink or a swapped hook would show here."""
    barrier = threading.Barrier(2, timeout=10)
    results: dict[str, list[dict[str, str]]] = {}

    def worker(name: str) -> Callable[[], None]:
        def run() -> None:
            with capture_warnings() as caught:
                barrier.wait()
                for i in range(20):
                    warnings.warn(f"{name} {i}", UserWarning, stacklevel=1)
                barrier.wait()
                warnings.warn(f"{name} last", RuntimeWarning, stacklevel=1)
            results[name] = caught

        return run

    run_in_threads(worker("a"), worker("b"))
    for name in ("a", "b"):
        expected = [{"category": "UserWarning", "message": f"{name} {i}"} for i in range(20)]
        expected.append({"category": "RuntimeWarning", "message": f"{name} last"})
        assert results[name] == expected


def test_concurrent_sklearn_fits_keep_their_warnings_apart() -> None:
    """Two real fits: a mixture stopped after one EM step, and k-means asked for more
    clusters than there are distinct points. Each warning lands with its own fit."""
    barrier = threading.Barrier(2, timeout=10)
    results: dict[str, list[dict[str, str]]] = {}
    duplicates = np.repeat([[0.0, 0.0], [1.0, 1.0]], 10, axis=0)

    def mixture() -> None:
        with capture_warnings() as caught:
            barrier.wait()
            GaussianMixture(n_components=3, max_iter=1, random_state=0).fit(X)
            barrier.wait()
        results["mixture"] = caught

    def kmeans() -> None:
        with capture_warnings() as caught:
            barrier.wait()
            KMeans(n_clusters=3, n_init=1, random_state=0).fit(duplicates)
            barrier.wait()
        results["kmeans"] = caught

    run_in_threads(mixture, kmeans)

    with pytest.warns(ConvergenceWarning) as gm_record:
        GaussianMixture(n_components=3, max_iter=1, random_state=0).fit(X)
    with pytest.warns(ConvergenceWarning) as km_record:
        KMeans(n_clusters=3, n_init=1, random_state=0).fit(duplicates)
    as_items: Callable[[Any], list[dict[str, str]]] = lambda record: [  # noqa: E731
        {"category": w.category.__name__, "message": str(w.message)} for w in record
    ]
    assert results["mixture"] == as_items(gm_record)
    assert results["kmeans"] == as_items(km_record)


def test_state_is_restored_after_concurrent_captures() -> None:
    filters_before = list(warnings.filters)
    showwarning_before = warnings.showwarning
    barrier = threading.Barrier(3, timeout=10)

    def worker() -> None:
        with capture_warnings():
            barrier.wait()  # all three captures open together
            warnings.warn("inside", UserWarning, stacklevel=1)
            barrier.wait()

    run_in_threads(worker, worker, worker)
    assert warnings.showwarning is showwarning_before
    assert warnings.filters == filters_before


def test_state_is_restored_when_the_body_raises() -> None:
    filters_before = list(warnings.filters)
    showwarning_before = warnings.showwarning
    with pytest.raises(ValueError, match="boom"), capture_warnings():
        warnings.warn("before the error", UserWarning, stacklevel=1)
        raise ValueError("boom")
    assert warnings.showwarning is showwarning_before
    assert warnings.filters == filters_before
    # pytest's "error" filter is in force again: warnings outside a capture still raise.
    with pytest.raises(UserWarning):
        warnings.warn("after", UserWarning, stacklevel=1)


def test_warnings_of_other_threads_reach_the_previous_handler() -> None:
    """A thread without a capture must not have its warnings swallowed by someone
    else's: they go to whatever handler was installed before."""
    seen: list[str] = []

    def recorder(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        seen.append(str(message))

    opened = threading.Event()
    release = threading.Event()
    captured: list[dict[str, str]] = []

    def capturing() -> None:
        with capture_warnings() as caught:
            opened.set()
            release.wait(10)
        captured.extend(caught)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = recorder
        thread = threading.Thread(target=capturing)
        thread.start()
        try:
            assert opened.wait(10)
            warnings.warn("from the main thread", UserWarning, stacklevel=1)
        finally:
            release.set()
            thread.join(10)
        assert warnings.showwarning is recorder
    assert seen == ["from the main thread"]
    assert captured == []


def test_nested_capture_gets_its_own_and_outer_resumes() -> None:
    with capture_warnings() as outer:
        warnings.warn("outer 1", UserWarning, stacklevel=1)
        with capture_warnings() as inner:
            warnings.warn("inner", UserWarning, stacklevel=1)
        warnings.warn("outer 2", UserWarning, stacklevel=1)
    assert [w["message"] for w in inner] == ["inner"]
    assert [w["message"] for w in outer] == ["outer 1", "outer 2"]


def test_repeated_warnings_are_reported_once() -> None:
    """sklearn may warn the same thing every init; a response lists it once."""
    with capture_warnings() as caught:
        for _ in range(3):
            warnings.warn("same", ConvergenceWarning, stacklevel=1)
        warnings.warn("other", ConvergenceWarning, stacklevel=1)
    assert caught == [
        {"category": "ConvergenceWarning", "message": "same"},
        {"category": "ConvergenceWarning", "message": "other"},
    ]


def test_warnings_ignored_by_default_filters_are_still_captured() -> None:
    """``simplefilter("always")`` while capturing: a DeprecationWarning or a warning
    already shown once (the "default" action) must still reach the response."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with capture_warnings() as caught:
            warnings.warn("hidden elsewhere", DeprecationWarning, stacklevel=1)
    assert caught == [{"category": "DeprecationWarning", "message": "hidden elsewhere"}]
