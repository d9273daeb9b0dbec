"""Counting a fit's progress, and stopping it, without changing a single number.

sklearn's mixtures call ``_print_verbose_msg_iter_end(n_iter, diff_ll)`` after every
EM iteration and ``_print_verbose_msg_init_beg(init)`` before every initialisation;
KMeans calls ``_init_centroids`` once per init and MiniBatchKMeans
``_mini_batch_convergence`` once per step. A subclass that overrides only those
hooks (``sklearn_compat`` builds them around sklearn's own) sees the fit advance, and
is the one place where a cancelled fit can stop: the hook raises ``FitCancelled`` and
the fit unwinds before anything is stored. The arithmetic is sklearn's own,
untouched, so a tracked fit gives bit-for-bit the result of an untracked one.

After the fit the estimator's class is set back to the plain sklearn class, so what
is pickled, exported or compared is an ordinary ``GaussianMixture``/``KMeans``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from service.domain import sklearn_compat
from service.errors import ServiceError


class FitCancelled(ServiceError):
    """The fit was asked to stop (its job was cancelled); nothing is stored."""

    status = 409
    slug = "cancelled"
    title = "Cancelled"


#: What a fit reports beside its count (``FitProgress.detail``): which init runs of
#: how many, its stage, the EM iteration within it, the latest lower bound's change
#: against the ``tol`` that stops it. The count alone misleads: an init that converges
#: at iteration 4 of 100 jumps to 100 / 200, and the k-means start of a mixture's init
#: (seconds on large data) sits at 0.
DETAIL = ("init", "n_init", "stage", "iteration", "max_iter", "change", "tol")


class FitProgress:
    """Work done out of a known total, in ``unit``s, plus the latest EM lower bound and
    the ``DETAIL`` of where the fit is.

    ``on_change`` is called (from the fitting thread) at most every ``interval``
    seconds and once more at the end; ``should_stop`` is asked at every step.
    """

    def __init__(
        self,
        total: int,
        unit: str,
        *,
        on_change: Callable[[FitProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        interval: float = 0.25,
    ) -> None:
        self.total = max(int(total), 1)
        self.unit = unit
        self.done = 0
        self.lower_bound: float | None = None
        #: ``DETAIL``: None each until the fit says (a grid or comparison has none).
        self.detail: dict[str, Any] = dict.fromkeys(DETAIL)
        self._on_change = on_change
        self._should_stop = should_stop
        self._interval = interval
        self._last = 0.0
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            done = min(self.done, self.total)
            return {
                "done": done,
                "total": self.total,
                "unit": self.unit,
                "fraction": done / self.total,
                "lower_bound": self.lower_bound,
                **self.detail,
            }

    def advance_to(self, done: int, *, force: bool = False) -> None:
        """Record ``done`` units; raise ``FitCancelled`` if the fit should stop."""
        with self._lock:
            self.done = max(self.done, done)
        self.check()
        now = time.monotonic()
        if self._on_change is not None and (force or now - self._last >= self._interval):
            self._last = now
            self._on_change(self)

    def check(self) -> None:
        """Raise ``FitCancelled`` if the fit should stop (between steps, or while waiting
        on a worker process)."""
        if self._should_stop is not None and self._should_stop():
            raise FitCancelled("The job was cancelled; the fit stopped and nothing was stored.")

    def replay(self, snapshot: dict[str, Any]) -> None:
        """Take over a ``snapshot()`` made elsewhere (a worker process's fit)."""
        with self._lock:
            self.total = max(int(snapshot["total"]), 1)
            self.unit = str(snapshot["unit"])
            self.lower_bound = snapshot.get("lower_bound")
            self.detail = {key: snapshot.get(key) for key in DETAIL}
        self.advance_to(int(snapshot["done"]))

    def describe(self, **detail: Any) -> None:
        """Update ``DETAIL`` fields (reported with the next change of the count)."""
        with self._lock:
            self.detail.update(detail)

    def finish(self) -> None:
        with self._lock:
            self.done = self.total
            if self.detail["stage"] is not None:
                self.detail["stage"] = "finished"
        if self._on_change is not None:
            self._on_change(self)


def _init_begun(estimator: Any, n_init: int) -> None:
    estimator._gmm_init = n_init
    progress: FitProgress = estimator._gmm_progress
    progress.describe(
        init=n_init + 1,
        n_init=int(estimator.n_init),
        stage="initializing",  # init_params (k-means by default) runs now, then EM
        iteration=0,
        max_iter=int(estimator.max_iter),
        change=None,
        tol=float(estimator.tol),
    )
    progress.advance_to(n_init * estimator.max_iter, force=True)


def _lower_bound(estimator: Any, bound: Any) -> None:
    estimator._gmm_progress.lower_bound = float(np.squeeze(bound))


def _iteration_done(estimator: Any, n_iter: int, diff_ll: float) -> None:
    progress: FitProgress = estimator._gmm_progress
    change = float(np.squeeze(diff_ll))  # an array of one for some mixtures, as the bound
    progress.describe(
        stage="iterating", iteration=int(n_iter), change=change if np.isfinite(change) else None
    )
    progress.advance_to(estimator._gmm_init * estimator.max_iter + n_iter)


def _before_init(estimator: Any) -> None:
    progress: FitProgress = estimator._gmm_progress
    # n_init="auto" is resolved inside fit, before the first init.
    progress.total = max(sklearn_compat.resolved_n_init(estimator, progress.total), 1)
    # Lloyd's (or Elkan's) iterations run in compiled code: an init is all there is.
    progress.describe(init=estimator._gmm_init + 1, n_init=progress.total, stage="iterating")
    progress.advance_to(estimator._gmm_init, force=True)
    estimator._gmm_init += 1


def _step_done(estimator: Any, step: int, n_steps: int) -> None:
    progress: FitProgress = estimator._gmm_progress
    progress.total = max(int(n_steps), 1)
    progress.describe(stage="iterating", iteration=step + 1, max_iter=int(n_steps))
    progress.advance_to(step + 1)


def _is_mixture(cls: type) -> bool:
    return "BaseMixture" in {m.__name__ for m in cls.__mro__}


_TRACKED: dict[type, type] = {}
_TRACKED_LOCK = threading.Lock()


def _tracked_class(base: type) -> type:
    with _TRACKED_LOCK:
        if base not in _TRACKED:
            if _is_mixture(base):
                hooks = sklearn_compat.mixture_progress_hooks(
                    base,
                    init_begun=_init_begun,
                    lower_bound=_lower_bound,
                    iteration_done=_iteration_done,
                )
            elif base.__name__ == "MiniBatchKMeans":
                hooks = sklearn_compat.minibatch_progress_hooks(base, step_done=_step_done)
            else:
                hooks = sklearn_compat.kmeans_progress_hooks(base, before_init=_before_init)
            _TRACKED[base] = type(f"Tracked{base.__name__}", (base,), hooks)
        return _TRACKED[base]


def progress_plan(estimator: Any) -> tuple[int, str]:
    """The total and unit a fit of ``estimator`` is counted in.

    Mixtures: EM iterations, ``max_iter * n_init`` at most (an init that converges
    early counts as done). KMeans: inits (its iterations run in compiled code).
    MiniBatchKMeans: mini-batch steps (the total is known once the fit starts).
    """
    if _is_mixture(type(estimator)):
        return max(estimator.max_iter, 1) * estimator.n_init, "iterations"
    if type(estimator).__name__ == "MiniBatchKMeans":
        return 1, "steps"
    n_init = estimator.n_init
    return (n_init if isinstance(n_init, int) else 1), "inits"


def fit_tracked(estimator: Any, X: Any, progress: FitProgress, **fit_kwargs: Any) -> Any:
    """``estimator.fit(X, **fit_kwargs)`` with ``progress`` counting and able to stop it.

    The estimator comes back as an instance of its own sklearn class.
    """
    base = type(estimator)
    estimator.__class__ = _tracked_class(base)
    estimator._gmm_progress = progress
    estimator._gmm_init = 0
    try:
        estimator.fit(X, **fit_kwargs)
    finally:
        estimator.__class__ = base
        del estimator._gmm_progress, estimator._gmm_init
    progress.finish()
    return estimator
