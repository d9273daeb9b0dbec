"""``"engine": "dask"``: a stored dataset fitted in row chunks on the Dask cluster.

The service never holds the points. The dataset's rows are a dask array whose every
chunk is a task reading its byte range straight from the store (``StoredRows``: a
file, or a ranged GET on the bucket), so a dataset larger than any worker's memory
fits: each EM iteration (``dask_em``) or Lloyd iteration (``dask_kmeans``) is one
map-reduce of sufficient statistics, and only kilobytes travel back. The chunks are
read again at each iteration, as data larger than the cluster's memory must be.

The fitted model is an ordinary ``GaussianMixture``/``KMeans``. The per-point arrays
the service keeps with a model (training labels, log-likelihoods) and the ones a
request names in ``include`` are computed chunk by chunk with the same code the
in-memory path runs on whole arrays (``estimators.per_point``), and only those arrays
come back.

What is supported is what out-of-core EM and Lloyd reproduce exactly: one init
(``n_init=1``), mixtures started by k-means (``init_params="kmeans"``, on a 20,000-row
sample: see ``dask_em``) or from ``weights_init``/``means_init``/``precisions_init``,
and Lloyd's k-means from k-means++ or given centres. Anything else is refused, naming
the parameter, before any work starts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from service.domain.training import estimators
from service.domain.training.progress import FitProgress
from service.domain.training.warnings_capture import capture_warnings
from service.errors import FitFailed, InvalidInput

if TYPE_CHECKING:
    import dask.array as da

    from service.store.signing import StoredRows

#: Bytes of points per chunk: small enough that a 1 GB worker holds a chunk and its
#: E-step temporaries (n_chunk x n_components, several times) with room to spare.
CHUNK_BYTES = 32 * 2**20

ALGORITHMS = ("gaussian_mixture", "kmeans")

#: Parameters each algorithm takes with engine "dask", and the values they must have
#: when only some are reproduced (None: any value the schema allows).
_SUPPORTED: dict[str, dict[str, tuple[Any, ...] | None]] = {
    "gaussian_mixture": {
        "n_components": None,
        "covariance_type": None,
        "tol": None,
        "reg_covar": None,
        "max_iter": None,
        "random_state": None,
        "weights_init": None,
        "means_init": None,
        "precisions_init": None,
        "n_init": (1,),
        "init_params": ("kmeans",),
    },
    "kmeans": {
        "n_clusters": None,
        "init": None,  # "random" is refused below; k-means++ or an array
        "max_iter": None,
        "tol": None,
        "random_state": None,
        "n_init": ("auto", 1),
        "algorithm": ("lloyd",),
    },
}


def check(algorithm: str, params: dict[str, Any], *, weighted: bool) -> None:
    """Refuse what a chunked fit cannot reproduce, naming the field (422)."""
    if algorithm not in _SUPPORTED:
        raise InvalidInput.at(
            ["body", "algorithm"],
            f"engine 'dask' fits {' and '.join(ALGORITHMS)}; {algorithm!r} runs with "
            "engine 'local' only.",
        )
    if weighted:
        raise InvalidInput.at(
            ["body", "sample_weight"], "engine 'dask' does not take sample_weight."
        )
    supported = _SUPPORTED[algorithm]
    for name, value in params.items():
        if name not in supported:
            raise InvalidInput.at(
                [*estimators.PARAMS_LOC, name], f"engine 'dask' does not take {name}."
            )
        allowed = supported[name]
        if allowed is not None and value not in allowed:
            choices = " or ".join(repr(a) for a in allowed)
            raise InvalidInput.at(
                [*estimators.PARAMS_LOC, name],
                f"engine 'dask' needs {name}={choices}, got {value!r}.",
            )
    if algorithm == "kmeans" and params.get("init") == "random":
        raise InvalidInput.at(
            [*estimators.PARAMS_LOC, "init"],
            "engine 'dask' seeds with 'k-means++' or given centres, not 'random'.",
        )


def rows_array(rows: StoredRows, chunk_rows: int | None = None) -> da.Array:
    """The dataset as a dask array (n_samples, n_features) of row chunks, each a task
    that reads its rows from the store when (and each time) it is needed."""
    import dask
    import dask.array as da

    n_samples, n_features = rows.shape
    step = chunk_rows or max(1_000, CHUNK_BYTES // (8 * max(n_features, 1)))
    blocks = []
    for start in range(0, n_samples, step):
        stop = min(start + step, n_samples)
        block = dask.delayed(rows.read, pure=True)(start, stop)
        blocks.append(da.from_delayed(block, shape=(stop - start, n_features), dtype=np.float64))
    return da.concatenate(blocks, axis=0)


def fit(
    algorithm: str,
    params: dict[str, Any],
    X: da.Array,
    progress: FitProgress | None = None,
    *,
    scheduler: Any = None,
) -> estimators.Fitted:
    """Fit ``X`` out of core on ``scheduler`` (a ``distributed.Client``; None: dask's
    default); the numbers are sklearn's from the same start (``dask_em``,
    ``dask_kmeans``)."""
    from service.domain.outofcore.em import fit_gaussian_mixture_dask
    from service.domain.outofcore.kmeans import fit_kmeans_dask
    from service.domain.outofcore.mapreduce import using

    start = time.perf_counter()
    with capture_warnings() as caught, using(scheduler):
        try:
            if algorithm == "gaussian_mixture":
                est: Any = fit_gaussian_mixture_dask(
                    X,
                    n_components=params["n_components"],
                    covariance_type=params["covariance_type"],
                    tol=params["tol"],
                    reg_covar=params["reg_covar"],
                    max_iter=params["max_iter"],
                    weights_init=_array(params.get("weights_init")),
                    means_init=_array(params.get("means_init")),
                    precisions_init=_array(params.get("precisions_init")),
                    random_state=params.get("random_state"),
                    progress=progress,
                )
            else:
                init = params.get("init", "k-means++")
                est = fit_kmeans_dask(
                    X,
                    n_clusters=params["n_clusters"],
                    init=init if isinstance(init, str) else np.asarray(init, dtype=np.float64),
                    max_iter=params["max_iter"],
                    tol=params["tol"],
                    random_state=params.get("random_state"),
                    progress=progress,
                )
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise FitFailed(f"scikit-learn could not fit {algorithm}: {exc}") from exc
    return estimators.Fitted(est, caught, time.perf_counter() - start)


def _array(value: Any) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=np.float64)


def per_point(
    algorithm: str, est: Any, X: da.Array, include: set[str], *, scheduler: Any = None
) -> dict[str, np.ndarray]:
    """``estimators.per_point`` of every row of ``X``, chunk by chunk on ``scheduler``;
    only the named arrays come back (``labels``: (n_samples,), the others
    (n_samples, k) or (n_samples,))."""
    import dask

    from service.domain.outofcore.mapreduce import compute, using

    if not include:
        return {}

    def one(block: np.ndarray) -> dict[str, np.ndarray]:
        return estimators.per_point(algorithm, est, block, include, training=True)

    parts = [dask.delayed(one)(block) for block in X.to_delayed().ravel()]
    with using(scheduler):
        (done,) = compute(parts)
    return {name: np.concatenate([part[name] for part in done]) for name in done[0]}
