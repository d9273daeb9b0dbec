"""Tracked fits count their steps, can be stopped, and change no number."""

from __future__ import annotations

import itertools
import pickle
from typing import Any

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from service.domain.training.progress import FitCancelled, FitProgress, fit_tracked, progress_plan

X, _ = make_blobs(n_samples=400, n_features=2, centers=4, cluster_std=1.6, random_state=10)

ESTIMATORS = [
    GaussianMixture(4, n_init=3, random_state=0, tol=1e-6),
    GaussianMixture(4, covariance_type="tied", max_iter=5, random_state=0),
    BayesianGaussianMixture(n_components=4, random_state=0, max_iter=200),
    # Its lower bound, and the change EM reports, are arrays of one.
    BayesianGaussianMixture(n_components=3, covariance_type="tied", random_state=0),
    KMeans(4, n_init=4, random_state=0),
    KMeans(4, random_state=0),  # n_init="auto"
    MiniBatchKMeans(4, random_state=0, n_init=2, batch_size=50),
]


def _fitted_state(est: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_")}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("template", ESTIMATORS, ids=lambda e: repr(e))
def test_tracked_fit_is_bit_identical_and_counts(template: Any) -> None:
    plain = clone(template).fit(X)
    seen: list[dict[str, Any]] = []
    total, unit = progress_plan(template)
    progress = FitProgress(total, unit, on_change=lambda p: seen.append(p.snapshot()), interval=0)
    tracked = fit_tracked(clone(template), X, progress)

    assert type(tracked) is type(plain)
    pickle.loads(pickle.dumps(tracked))  # an ordinary sklearn object again
    a, b = _fitted_state(plain), _fitted_state(tracked)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(
            np.asarray(a[key], dtype=object), np.asarray(b[key], dtype=object)
        )
    done = [s["done"] for s in seen]
    assert done == sorted(done) and len(seen) >= 2
    assert seen[-1]["fraction"] == 1.0
    if hasattr(plain, "lower_bound_"):
        assert seen[-1]["lower_bound"] is not None


def test_cancel_stops_the_fit_at_its_next_step() -> None:
    steps: list[int] = []

    def stop() -> bool:
        steps.append(1)
        return len(steps) >= 3

    est = GaussianMixture(4, max_iter=1000, tol=0, random_state=0)
    with pytest.raises(FitCancelled):
        fit_tracked(est, X, FitProgress(1000, "iterations", should_stop=stop))
    assert type(est) is GaussianMixture
    assert not hasattr(est, "means_") or len(steps) == 3
    assert len(steps) == 3


def test_a_mixture_fit_says_its_init_stage_iteration_and_change_against_tol() -> None:
    """The count alone jumped (an init converging at 4 of 100 reads 100 / 200) and ended
    at "100 / 100" for a model that converged in 2 iterations."""
    template = GaussianMixture(4, n_init=2, max_iter=100, tol=1e-3, random_state=0)
    seen: list[dict[str, Any]] = []
    total, unit = progress_plan(template)
    progress = FitProgress(total, unit, on_change=lambda p: seen.append(p.snapshot()), interval=0)
    fitted = fit_tracked(clone(template), X, progress)
    assert seen[0]["stage"] == "initializing" and seen[0]["init"] == 1 and seen[0]["n_init"] == 2
    assert seen[0]["iteration"] == 0 and seen[0]["max_iter"] == 100 and seen[0]["tol"] == 1e-3
    iterating = [s for s in seen if s["stage"] == "iterating"]
    assert {s["init"] for s in iterating} == {1, 2}
    for before, after in itertools.pairwise(iterating):
        if after["init"] == before["init"]:
            assert after["iteration"] == before["iteration"] + 1
    # EM stops at the first change under tol: every change seen before the last is not
    # (the first iteration's is infinite, from no bound at all: null).
    last_of_init = {s["init"]: s for s in iterating}
    for snapshot in iterating:
        if snapshot["iteration"] == 1:
            assert snapshot["change"] is None
        elif snapshot is not last_of_init[snapshot["init"]]:
            assert snapshot["change"] >= template.tol
    assert all(s["change"] < template.tol for s in last_of_init.values())
    assert seen[-1]["stage"] == "finished" and seen[-1]["fraction"] == 1.0
    one = fit_tracked(clone(template).set_params(n_init=1), X, progress := FitProgress(1, unit))
    assert progress.snapshot()["iteration"] == one.n_iter_
    assert (
        fitted.n_iter_ == last_of_init[2]["iteration"]
        or fitted.n_iter_ == last_of_init[1]["iteration"]
    )


def test_kmeans_says_which_init_runs() -> None:
    seen: list[dict[str, Any]] = []
    template = KMeans(4, n_init=3, random_state=0)
    total, unit = progress_plan(template)
    progress = FitProgress(total, unit, on_change=lambda p: seen.append(p.snapshot()), interval=0)
    fit_tracked(clone(template), X, progress)
    assert [s["init"] for s in seen if s["stage"] == "iterating"] == [1, 2, 3]
    assert seen[-1]["stage"] == "finished" and seen[-1]["n_init"] == 3
