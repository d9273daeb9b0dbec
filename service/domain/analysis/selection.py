"""Model selection: fit a grid of GaussianMixtures in parallel and rank them by BIC or AIC.

Every cell is ``GaussianMixture(**params, n_components=k, covariance_type=c).fit(X)``
and its ``bic(X)`` / ``aic(X)``, exactly as in-process. Cells run in a joblib pool
bounded by ``GMM_MAX_PARALLEL_FITS``; the winner can be stored as a model without
being refitted. No HTTP here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from joblib import Parallel, delayed

from service.domain.analysis import plotting
from service.domain.analysis.plotting import FigureSize, PlotFormat
from service.domain.datasets.arrays import Dataset
from service.domain.datasets.service import Datasets
from service.domain.jobs.manager import JobContext
from service.domain.jobs.service import Jobs, Started, Waiting
from service.domain.limits import Limits
from service.domain.records import jsonable
from service.domain.training import estimators
from service.domain.training.progress import FitProgress
from service.domain.training.service import Training
from service.domain.training.warnings_capture import capture_warnings
from service.errors import FitFailed, InvalidInput, LimitExceeded, Loc, ServiceError
from service.schemas.data import DataSpec
from service.schemas.selection import ComponentsRange, Grid

#: joblib backend for grid cells and comparisons. Threads, measured against loky's
#: worker processes with ``bench/model_selection.py`` (6 x 4 grid, 10,000 x 4 points,
#: two cores): threads were faster in every run (the EM loop spends most of its time
#: in numpy calls that release the GIL), need no pickling of data or fitted estimators,
#: and have no cold start, whereas loky's first request (and the first after its idle
#: workers exit) waits seconds for fresh processes to import scikit-learn.
BACKEND: Literal["loky", "threading"] = "threading"

GRID_LOC: tuple[str, ...] = ("body", "grid")


#: Fits a cell: ``estimators.fit``, or the service's killable process runner.
Fit = Callable[[str, dict[str, Any], np.ndarray], estimators.Fitted]


def run_parallel(
    training: Training,
    func: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    job: Job | None = None,
) -> list[Any]:
    """``[func(*args, fit) for args in calls]``, at most ``max_parallel_fits`` at a time.

    Without ``GMM_FIT_TIMEOUT_SECONDS`` the calls run in a joblib ``BACKEND`` pool and
    ``fit`` is None (``estimators.fit``). With it, every fit must go through the
    service's fit runner (killable worker processes with the time limit), so the calls
    run in threads that hand their fits to it; on a Dask cluster (``GMM_DASK_SCHEDULER``)
    that runner makes each fit a task, and the pool has one thread per worker thread
    of the cluster (``training.fit_parallelism``). The pool is otherwise sized
    ``max_parallel_fits`` (so that loky, when chosen, keeps its one reusable pool
    instead of resizing it under other requests); a single call, or a limit of one,
    runs in the calling thread.

    Inside a ``job`` (its context and the progress counting the calls) every finished
    call advances the progress, and every fit, run through the service with the job's
    cancel, stops at its next step when the job is cancelled; the calls then run in
    threads, which share the job's context.
    """
    fit: Fit | None = None
    backend: str = BACKEND
    if training.fits_isolated:
        fit, backend = training.fit, "threading"
    if job is not None:
        ctx, progress = job
        fit, backend = _cancellable_fit(training, ctx), "threading"
        func = _counted(func, ctx, progress)
    n_jobs = training.fit_parallelism
    if n_jobs <= 1 or len(calls) <= 1:
        return [func(*args, fit) for args in calls]
    # batch_size=1: cells differ in cost tenfold, so hand them out one at a time.
    run = Parallel(n_jobs=n_jobs, backend=backend, batch_size=1)
    return list(run(delayed(func)(*args, fit) for args in calls))


#: A job running the calls: its context (for cancel) and the progress counting them.
Job = tuple[JobContext, FitProgress]


def _cancellable_fit(training: Training, ctx: JobContext) -> Fit:
    def fit(algorithm: str, params: dict[str, Any], X: np.ndarray) -> estimators.Fitted:
        return training.fit(algorithm, params, X, ctx.stopper())

    return fit


def _counted(
    func: Callable[..., Any], ctx: JobContext, progress: FitProgress
) -> Callable[..., Any]:
    """``func`` that stops first if the job was cancelled and counts itself when done."""
    lock = threading.Lock()
    finished = [0]

    def counted(*args: Any) -> Any:
        ctx.check()
        out = func(*args)
        with lock:
            finished[0] += 1
            done = finished[0]
        progress.advance_to(done, force=True)
        return out

    return counted


def relocate(exc: ServiceError, moves: dict[tuple[str | int, ...], Loc]) -> ServiceError:
    """Rewrite the locations of ``exc`` that start with a key of ``moves``.

    ``estimators.check_params`` names fields under ``["body", "params"]``; a grid cell
    or a comparison item lives elsewhere in the request body.
    """
    for item in exc.errors or []:
        loc = tuple(item["loc"])
        for old, new in moves.items():
            if loc[: len(old)] == old:
                item["loc"] = [*new, *loc[len(old) :]]
                break
    return exc


def expand_grid(grid: Grid, limits: Limits) -> list[tuple[int, str, Loc]]:
    """The cells ``(n_components, covariance_type, loc of that n_components)`` in answer order.

    Checks that need no data: repeats, ``min > max``, the component limit and the cell
    limit, before anything is generated or fitted.
    """
    where = [*GRID_LOC, "n_components"]
    spec = grid.n_components
    if isinstance(spec, ComponentsRange):
        if spec.min > spec.max:
            raise InvalidInput.at(
                [*where, "max"], f"max ({spec.max}) must be at least min ({spec.min})."
            )
        if spec.max > limits.max_components:
            raise LimitExceeded.at(
                [*where, "max"],
                f"n_components up to {spec.max} exceeds the limit of "
                f"{limits.max_components} (GMM_MAX_COMPONENTS).",
            )
        ks: list[tuple[int, Loc]] = [
            (k, [*where, "min" if k == spec.min else "max"]) for k in range(spec.min, spec.max + 1)
        ]
    else:
        seen: dict[int, int] = {}
        for i, k in enumerate(spec):
            if k in seen:
                raise InvalidInput.at(
                    [*where, i],
                    f"n_components {k} appears twice (items {seen[k]} and {i}); "
                    "give each value once.",
                    "duplicate",
                )
            seen[k] = i
            if k > limits.max_components:
                raise LimitExceeded.at(
                    [*where, i],
                    f"n_components={k} exceeds the limit of {limits.max_components} "
                    "(GMM_MAX_COMPONENTS).",
                )
        ks = sorted(((k, [*where, i]) for i, k in enumerate(spec)), key=lambda item: item[0])
    seen_types: dict[str, int] = {}
    for i, cov in enumerate(grid.covariance_type):
        if cov in seen_types:
            raise InvalidInput.at(
                [*GRID_LOC, "covariance_type", i],
                f"covariance_type {cov!r} appears twice (items {seen_types[cov]} and {i}); "
                "give each value once.",
                "duplicate",
            )
        seen_types[cov] = i
    n_cells = len(ks) * len(grid.covariance_type)
    if n_cells > limits.max_grid_cells:
        raise LimitExceeded.at(
            list(GRID_LOC),
            f"the grid has {len(ks)} n_components x {len(grid.covariance_type)} "
            f"covariance_type = {n_cells} cells, over the limit of "
            f"{limits.max_grid_cells} (GMM_MAX_GRID_CELLS).",
        )
    return [(k, cov, loc) for cov in grid.covariance_type for k, loc in ks]


def fit_cell(
    params: dict[str, Any], X: np.ndarray, fit: Fit | None = None
) -> tuple[dict[str, Any], estimators.Fitted | None]:
    """One grid cell: the score item and the fitted estimator (None when sklearn refused).

    Runs in a joblib worker; it returns sklearn's refusal instead of raising it, so
    that one ill-defined cell does not sink the grid (a time-out still does).
    """
    start = time.perf_counter()
    cell: dict[str, Any] = {
        "n_components": params["n_components"],
        "covariance_type": params["covariance_type"],
    }
    try:
        fitted = (fit or estimators.fit)("gaussian_mixture", params, X)
    except FitFailed as exc:
        nothing = dict.fromkeys(("bic", "aic", "converged", "n_iter", "lower_bound"))
        return {
            **cell,
            **nothing,
            "fit_seconds": time.perf_counter() - start,
            "warnings": [],
            "error": exc.detail,
        }, None
    est = fitted.estimator
    with capture_warnings() as caught:
        bic, aic = est.bic(X), est.aic(X)
    cell.update(
        bic=estimators.finite_or_none(bic),
        aic=estimators.finite_or_none(aic),
        converged=bool(est.converged_),
        n_iter=int(est.n_iter_),
        lower_bound=estimators.finite_or_none(est.lower_bound_),
        fit_seconds=fitted.fit_seconds,
        warnings=fitted.warnings + [w for w in caught if w not in fitted.warnings],
        error=None,
    )
    return cell, fitted


def _best_index(scores: list[dict[str, Any]], criterion: str) -> int | None:
    """Lowest criterion; ties go to the fewest components, then to the earlier cell."""
    ranked = [
        (cell[criterion], cell["n_components"], i)
        for i, cell in enumerate(scores)
        if cell[criterion] is not None
    ]
    return min(ranked)[2] if ranked else None


def _checked_params(
    params: dict[str, Any],
    k: int,
    cov: str,
    k_loc: Loc,
    grid: Grid,
    n_samples: int,
    n_features: int,
    limits: Limits,
) -> dict[str, Any]:
    """One cell's parameters, checked against the data as ``POST /v1/models`` would be,
    with errors about ``n_components`` or ``covariance_type`` pointing into ``grid``."""
    p = {**params, "n_components": k, "covariance_type": cov}
    try:
        estimators.check_params("gaussian_mixture", p, n_samples, n_features, limits)
    except ServiceError as exc:
        moves: dict[tuple[str | int, ...], Loc] = {
            (*estimators.PARAMS_LOC, "n_components"): k_loc,
            (*estimators.PARAMS_LOC, "covariance_type"): [
                *GRID_LOC,
                "covariance_type",
                grid.covariance_type.index(cov),
            ],
        }
        raise relocate(exc, moves) from None
    return p


def select(
    training: Training,
    datasets: Datasets,
    jobs: Jobs,
    *,
    data: DataSpec,
    grid: Grid,
    criterion: str,
    params: dict[str, Any],
    waiting: Waiting,
    store_best: bool = False,
    name: str | None = None,
) -> Started:
    """Fit every cell of ``grid`` on ``data``; answer the scores, the best cell and,
    with ``store_best``, the id of the stored winner; or the job still doing it (its
    progress in grid cells, this answer as its ``result``). ``Jobs.start`` says which.
    """
    cells = expand_grid(grid, training.limits)
    dataset = datasets.resolve(data)
    n_samples, n_features = dataset.X.shape
    cell_params = [
        _checked_params(params, k, cov, k_loc, grid, n_samples, n_features, training.limits)
        for k, cov, k_loc in cells
    ]

    def work(ctx: JobContext | None) -> dict[str, Any]:
        job = None if ctx is None else (ctx, ctx.progress(len(cells), "cells"))
        result = _select(
            training, dataset, data, cells, cell_params, criterion, store_best, name, job
        )
        return {"result": result, "model_id": result["best"]["model_id"], "answer": result}

    # One fitting request, however many cells: it holds one of GMM_MAX_CONCURRENT_FITS.
    return jobs.start("model_selection", work, waiting=waiting, total=len(cells), unit="cells")


def _select(
    training: Training,
    dataset: Dataset,
    data: DataSpec,
    cells: list[tuple[int, str, Loc]],
    cell_params: list[dict[str, Any]],
    criterion: str,
    store_best: bool,
    name: str | None,
    job: Job | None,
) -> dict[str, Any]:
    # Longest first (components drive the cost): the pool does not end on a big cell.
    order = sorted(range(len(cells)), key=lambda i: -cells[i][0])
    done = run_parallel(training, fit_cell, [(cell_params[i], dataset.X) for i in order], job)
    outcomes: list[tuple[dict[str, Any], estimators.Fitted | None]] = [({}, None)] * len(cells)
    for i, outcome in zip(order, done, strict=True):
        outcomes[i] = outcome
    scores = [cell for cell, _ in outcomes]
    best_i = _best_index(scores, criterion)
    if best_i is None:
        why = next((c["error"] for c in scores if c["error"]), f"no finite {criterion}")
        raise FitFailed.at(
            list(GRID_LOC), f"no cell of the grid could be fitted; the first failure: {why}"
        )
    best = {**scores[best_i], "model_id": None}
    fitted = outcomes[best_i][1]
    if job is not None:
        job[0].check()  # cancelled after the last cell: still nothing is stored
    if store_best and fitted is not None:
        resource, _ = training.store_fitted(
            algorithm="gaussian_mixture",
            params=cell_params[best_i],
            dataset=dataset,
            fitted=fitted,
            name=name,
            include=set(),
            generator=data.generator,
            # The curve it won on, for whoever opens the model later (the explorer).
            extra={"selection": {"criterion": criterion, "scores": jsonable(scores)}},
        )
        best["model_id"] = resource["id"]
    return {"criterion": criterion, "scores": scores, "best": best, "warnings": dataset.warnings}


#: What a person choosing k reads off the picture, per criterion.
_LABELS = {"bic": "BIC", "aic": "AIC"}


def plot(result: dict[str, Any], *, fmt: PlotFormat, size: FigureSize) -> bytes:
    """The criterion against n_components, one line per covariance type, best cell starred.

    Drawn by ``plotting.draw``, as every picture: same size units, same lock.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    criterion = result["criterion"]
    label = _LABELS[criterion]

    def paint(fig: Figure) -> None:
        ax = fig.add_subplot()
        lines: dict[str, tuple[list[int], list[float]]] = {}
        for cell in result["scores"]:
            ks, values = lines.setdefault(cell["covariance_type"], ([], []))
            ks.append(cell["n_components"])
            # A failed cell is a gap in its line, not a point.
            values.append(np.nan if cell[criterion] is None else cell[criterion])
        for cov, (ks, values) in lines.items():
            ax.plot(ks, values, marker="o", label=cov)
        best = result["best"]
        ax.plot(
            [best["n_components"]],
            [best[criterion]],
            marker="*",
            markersize=18,
            color="black",
            linestyle="none",
            label=f"best: {best['n_components']}, {best['covariance_type']}",
        )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("n_components")
        ax.set_ylabel(f"{label} (lower is better)")
        ax.set_title(f"{label} by number of components")
        ax.grid(True, alpha=0.3)
        ax.legend(title="covariance_type")

    return plotting.draw(size, fmt, paint)
