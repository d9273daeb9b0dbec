"""Comparisons: several algorithms fitted on the same data, scored with sklearn's metrics.

The notebook's k-means-versus-mixture scene as one call. Fits run in the same
bounded joblib pool as model selection. No HTTP here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics

from service.domain.analysis.selection import Fit, Job, relocate, run_parallel
from service.domain.datasets.service import Datasets
from service.domain.jobs.manager import JobContext
from service.domain.jobs.service import Jobs, Started, Waiting
from service.domain.training import estimators
from service.domain.training.service import Training
from service.domain.training.warnings_capture import capture_warnings
from service.errors import FitFailed, InvalidInput, Loc, ServiceError
from service.schemas.comparisons import SILHOUETTE_DEFAULT_SAMPLE
from service.schemas.data import DataSpec

#: The metrics that compare the found labels with known ones, by sklearn's names.
SUPERVISED = (
    "adjusted_rand_score",
    "adjusted_mutual_info_score",
    "normalized_mutual_info_score",
    "homogeneity_score",
    "completeness_score",
    "v_measure_score",
)


def silhouette_arguments(
    n_samples: int, sample_size: int | None, random_state: int | None
) -> tuple[int | None, int | None]:
    """``silhouette_score``'s ``sample_size`` and ``random_state`` for this request.

    Exact below ``SILHOUETTE_DEFAULT_SAMPLE`` points; above, a sample of that size drawn
    with seed 0, so the same request always answers the same number.
    """
    if sample_size is None and n_samples > SILHOUETTE_DEFAULT_SAMPLE:
        sample_size = SILHOUETTE_DEFAULT_SAMPLE
    if sample_size is None:
        return None, None
    return sample_size, 0 if random_state is None else random_state


def score_one(
    algorithm: str,
    params: dict[str, Any],
    X: np.ndarray,
    y_true: np.ndarray | None,
    sample_size: int | None,
    random_state: int | None,
    fit: Fit | None = None,
) -> dict[str, Any]:
    """Fit one algorithm and score its labels; a refused fit comes back as ``error``.

    Runs in a joblib worker; failures are returned rather than raised so that the
    error can name the item (and because a ``ServiceError`` does not survive the trip
    back from a loky worker process intact).
    """
    try:
        fitted = (fit or estimators.fit)(algorithm, params, X)
    except FitFailed as exc:
        return {"error": exc.detail}
    labels = estimators.per_point(algorithm, fitted.estimator, X, {"labels"}, training=True)[
        "labels"
    ]
    labels = np.asarray(labels)
    found: list[dict[str, str]] = list(fitted.warnings)
    out: dict[str, Any] = {
        "algorithm": algorithm,
        "params": params,
        "labels": labels,
        "n_clusters": len(np.unique(labels)),
        "fit_seconds": fitted.fit_seconds,
    }
    with capture_warnings() as caught:
        try:
            out["silhouette_score"] = float(
                metrics.silhouette_score(
                    X, labels, sample_size=sample_size, random_state=random_state
                )
            )
        except ValueError as exc:
            # sklearn refuses fewer than 2 labels (or one point per label).
            out["silhouette_score"] = None
            found.append(
                {
                    "category": "UndefinedMetricWarning",
                    "message": f"silhouette_score is undefined for these labels: {exc}",
                }
            )
        if y_true is not None:
            for name in SUPERVISED:
                out[name] = float(getattr(metrics, name)(y_true, labels))
    found += [w for w in caught if w not in found]
    out["warnings"] = found
    return out


def _true_labels(
    generated: np.ndarray | None, given: list[int] | None, n_samples: int
) -> np.ndarray | None:
    """The request's ``true_labels`` when given (checked), else the generator's, else None."""
    if given is None:
        return generated
    if len(given) != n_samples:
        raise InvalidInput.at(
            ["body", "true_labels"],
            f"true_labels has {len(given)} labels but the data has {n_samples} points; "
            "give one label per point.",
            "wrong_length",
        )
    return np.asarray(given, dtype=np.int64)


def compare(
    training: Training,
    datasets: Datasets,
    jobs: Jobs,
    *,
    data: DataSpec,
    algorithms: list[tuple[str, dict[str, Any]]],
    true_labels: list[int] | None,
    sample_size: int | None,
    random_state: int | None,
    waiting: Waiting,
) -> Started:
    """Fit each ``(algorithm, params)`` on ``data``; answer labels and metrics in order,
    or the job still doing it (progress in algorithms; this answer as its ``result``).
    """
    dataset = datasets.resolve(data)
    n_samples, n_features = dataset.X.shape
    y_true = _true_labels(dataset.y, true_labels, n_samples)
    for i, (algorithm, params) in enumerate(algorithms):
        try:
            estimators.check_params(algorithm, params, n_samples, n_features, training.limits)
        except ServiceError as exc:
            moves: dict[tuple[str | int, ...], Loc] = {
                estimators.PARAMS_LOC: ["body", "algorithms", i, "params"]
            }
            raise relocate(exc, moves) from None
    sample_size, random_state = silhouette_arguments(n_samples, sample_size, random_state)
    calls = [
        (algorithm, params, dataset.X, y_true, sample_size, random_state)
        for algorithm, params in algorithms
    ]
    silhouette = {"sample_size": sample_size, "random_state": random_state}

    def work(ctx: JobContext | None) -> dict[str, Any]:
        job: Job | None = None if ctx is None else (ctx, ctx.progress(len(calls), "algorithms"))
        results = run_parallel(training, score_one, calls, job)
        result = _answer(results, silhouette, dataset.warnings)
        return {"result": result, "answer": result}

    # One fitting request, however many algorithms: it holds one of GMM_MAX_CONCURRENT_FITS.
    return jobs.start("comparison", work, waiting=waiting, total=len(calls), unit="algorithms")


def _answer(
    results: list[dict[str, Any]],
    silhouette: dict[str, int | None],
    warnings: list[dict[str, str]],
) -> dict[str, Any]:
    for i, result in enumerate(results):
        if "error" in result:
            raise FitFailed.at(["body", "algorithms", i], f"algorithms[{i}]: {result['error']}")
    return {
        "results": results,
        "silhouette": silhouette,
        "warnings": warnings,
    }
