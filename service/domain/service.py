"""Use cases: generate, train, read, list, delete, predict, score, sample. No HTTP here.

Routes call one function each; the functions return plain dicts (with numpy arrays
inside, serialised once by the response layer) and raise ``ServiceError``s.

A stored model is a *bundle*: the fitted estimator, the id of its training dataset,
the points' labels and their sorted log-likelihoods, so that plots and outlier
percentiles need nothing but the model id. The training points themselves are a
content-addressed dataset the model holds a reference to (bundles stored before that
carry the points as ``X`` and still load).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import platform
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, Literal

import joblib
import numpy as np
import sklearn

from service import __version__
from service.domain import cost
from service.domain.datasets import arrays as data_mod
from service.domain.datasets import files as datasets_mod
from service.domain.inference.compiled import CompiledKMeans, CompiledMixture, compile_estimator
from service.domain.jobs.manager import JobContext, JobManager, public
from service.domain.limits import Limits
from service.domain.outofcore import chunked
from service.domain.runtime.cluster import DaskCluster
from service.domain.runtime.executor import FitRunner, FitSlots, InlineFitRunner
from service.domain.training import estimators, matching
from service.domain.training.progress import FitProgress, progress_plan
from service.errors import (
    FitFailed,
    InvalidInput,
    Loc,
    NotFound,
    PayloadTooLarge,
    UnsupportedOperation,
)
from service.schemas.data import DataSpec, GaussianMixtureSpec, GeneratorSpec
from service.schemas.models import EFFECTIVE_WEIGHT_THRESHOLD, MAX_TAGS
from service.store.base import (
    MetadataFilter,
    ModelStore,
    check_id,
    check_job_id,
    new_job_id,
    new_model_id,
)
from service.store.signing import StoredRows

#: The most points one ``sample`` call draws.
MAX_SAMPLE_POINTS = 1_000_000


def _resource(meta: dict[str, Any]) -> dict[str, Any]:
    """The public resource of stored metadata; models stored before tags existed have
    none (``{}``)."""
    resource: dict[str, Any] = meta["resource"]
    if "tags" not in resource:
        resource = {**resource, "tags": {}}
    return resource


def model_filter(
    *, name: str | None = None, algorithm: str | None = None, tags: Sequence[str] = ()
) -> MetadataFilter | None:
    """A condition on stored metadata for ``list_models``; None when nothing is asked.

    ``name`` and ``algorithm`` match exactly. Each of ``tags`` is ``"key:value"`` and
    must be one of the model's tags written that way. Matching the whole string rather
    than splitting it keeps it exact although keys and values may both hold ``:``
    (``"k8s.io/app:web"``, ``"url:http://x"``): no split rule would read both right.
    """
    if name is None and algorithm is None and not tags:
        return None
    wanted = set(tags)

    def matches(meta: dict[str, Any]) -> bool:
        resource = meta.get("resource") or {}
        if name is not None and resource.get("name") != name:
            return False
        if algorithm is not None and resource.get("algorithm") != algorithm:
            return False
        have = {f"{key}:{value}" for key, value in (resource.get("tags") or {}).items()}
        return wanted <= have

    return matches


def merge_patch(current: dict[str, str], patch: Mapping[str, str | None] | None) -> dict[str, str]:
    """RFC 7396 on a flat map of strings: a string sets its key, null removes it, an
    absent key stays; a null ``patch`` removes them all."""
    if patch is None:
        return {}
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _versions() -> dict[str, str]:
    return {
        "service": __version__,
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }


def jsonable(value: Any) -> Any:
    """Numpy -> plain Python for the metadata JSON (non-finite floats become None)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


#: Fitted attributes that may be null by contract (-inf after max_iter=0 and the like).
_NULLABLE_ATTRIBUTES = frozenset({"lower_bound", "lower_bounds", "bic", "aic"})


def _first_non_finite(values: dict[str, Any]) -> str | None:
    """The first key whose numbers hold inf or nan (nested lists and arrays too)."""
    for key, value in values.items():
        if key in _NULLABLE_ATTRIBUTES or value is None or isinstance(value, str | bool | dict):
            continue
        try:
            numbers = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if not np.isfinite(numbers).all():
            return key
    return None


def _overflowed(what: str) -> FitFailed:
    # sklearn fits data near 1e154 and beyond without complaint, but its squared
    # distances and variances overflow: centers of nan, an inertia of inf.
    return FitFailed(
        f"the fitted {what} overflowed float64: the data's values are too large in "
        "magnitude for double precision; rescale the data."
    )


def _require_finite(results: dict[str, Any], loc: list[str | int]) -> None:
    """422 naming the first point whose results overflowed float64.

    A finite point far enough from the model (around 1e154 and beyond) makes sklearn's
    squared distances or log-densities overflow to inf or nan. JSON cannot carry
    those, and a label chosen among infinities means nothing: the client is told which
    row to rescale instead.
    """
    for name, value in results.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size:
            bad = ~np.isfinite(value.reshape(len(value), -1)).all(axis=1)
            if bad.any():
                i = int(np.argmax(bad))
                raise InvalidInput.at(
                    [*loc, i],
                    f"row {i}: its {name} overflowed float64 (the point is too far from the "
                    "model for double precision); rescale the data.",
                    "non_finite_result",
                )


@dataclass
class _PreparedFit:
    """A fit request checked against the data and the limits, ready to run."""

    algorithm: str
    params: dict[str, Any]
    data: DataSpec
    dataset: data_mod.Dataset
    name: str | None
    tags: dict[str, str]
    wanted: set[str]
    alignment: tuple[str, np.ndarray] | None
    extra: dict[str, Any] | None
    estimated_seconds: float
    omitted: list[str]
    #: (n_samples,) float64, k-means only; None fits every point with weight 1.
    sample_weight: np.ndarray | None = None
    #: engine "dask": where the workers read the dataset's rows. ``dataset.X`` is then
    #: only the shape of the points, which never enter this process.
    rows: StoredRows | None = None


@dataclass(frozen=True)
class _Loaded:
    """A stored model ready to answer: its resource, its bundle, its compiled form.

    ``resource`` is as it was when loaded: its ``name`` and ``tags`` may have changed
    since (``update_model``, perhaps in another worker), so whatever shows those reads
    the metadata afresh (``get_model``); the fitted fields never change.
    """

    resource: dict[str, Any]
    bundle: dict[str, Any]
    compiled: CompiledMixture | CompiledKMeans


class ModelService:
    """Trains and serves models held in a ``ModelStore``.

    Built with the values it needs (``limits``, the fit runner, the bound on concurrent
    fits and its queue, the job pool), never with the app's ``Settings``. Model
    selection, comparisons and portable models use its public methods only, so the
    store, the runner, the fit slots and the jobs have one owner.

    Long work runs as jobs on a pool of ``job_workers`` threads, apart from the fit
    slots of synchronous requests: a client that asked for a job has chosen to wait
    in its queue, not to be answered 429.
    """

    def __init__(
        self,
        store: ModelStore,
        *,
        limits: Limits,
        fit_runner: FitRunner | None = None,
        cluster: DaskCluster | None = None,
        max_concurrent_fits: int,
        fit_queue_length: int = 0,
        fit_queue_seconds: float = 0.0,
        job_workers: int = 1,
        async_fit_seconds: float | None = None,
        job_persist_interval: float = 0.5,
        job_stale_seconds: float = 60.0,
        cache_size: int = 64,
    ) -> None:
        self.limits = limits
        self._cache: OrderedDict[str, _Loaded] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._cache_hits = 0
        self._cache_misses = 0
        self._store = store
        self._fit_runner: FitRunner = fit_runner or InlineFitRunner()
        self._fit_slots = FitSlots(
            max_concurrent_fits, queue_length=fit_queue_length, queue_seconds=fit_queue_seconds
        )
        self._fits_isolated = self._fit_runner.isolated
        self._cluster = cluster
        self._jobs = JobManager(
            store,
            workers=job_workers,
            persist_interval=job_persist_interval,
            stale_seconds=job_stale_seconds,
        )
        self._async_fit_seconds = async_fit_seconds

    def close(self) -> None:
        self._jobs.close()  # running jobs stop first: their fits may use the runner
        self._fit_runner.close()

    # -- fitting ------------------------------------------------------------------
    def fitting(self) -> contextlib.AbstractContextManager[None]:
        """Hold one of the ``max_concurrent_fits`` slots for a whole fitting request,
        however many fits it runs. When none is free the request waits in the bounded
        queue; ``Busy`` (429) when the queue is full or the wait runs out."""
        return self._fit_slots.hold()

    def fit(
        self,
        algorithm: str,
        params: dict[str, Any],
        X: np.ndarray,
        progress: FitProgress | None = None,
        *,
        sample_weight: np.ndarray | None = None,
    ) -> estimators.Fitted:
        """``estimators.fit`` through the service's runner (a killable worker process
        when fits have a time limit); ``progress`` counts its steps and can cancel it.
        ``sample_weight`` (n_samples,), k-means only, as ``check_sample_weight`` gives."""
        fitted: estimators.Fitted = self._fit_runner(
            algorithm, params, X, progress, sample_weight=sample_weight
        )
        return fitted

    @property
    def fit_parallelism(self) -> int:
        """How many fits of one request (grid cells, comparison items) to run at once:
        one per worker thread of the Dask cluster when fits run there, else
        ``max_parallel_fits`` (this machine's share for one request)."""
        parallelism = getattr(self._fit_runner, "parallelism", None)
        return self.limits.max_parallel_fits if parallelism is None else int(parallelism)

    def cluster_status(self) -> dict[str, Any] | None:
        """The Dask scheduler's address and its workers and threads now; None without a
        cluster. ``ClusterUnavailable`` (503) when the scheduler does not answer."""
        return None if self._cluster is None else self._cluster.status()

    @property
    def fits_isolated(self) -> bool:
        """Whether every fit must go through ``fit`` (to stay killable and time-limited)
        rather than call ``estimators.fit`` in whatever thread or process it runs."""
        return self._fits_isolated

    # -- data ---------------------------------------------------------------------
    def generate(self, spec: GeneratorSpec) -> data_mod.Dataset:
        return data_mod.generate(spec, self.limits, ["body"])

    def resolve(self, data: DataSpec, loc: tuple[str, ...] = ("body", "data")) -> data_mod.Dataset:
        return data_mod.resolve(data, self.limits, loc, self._store.load_dataset)

    # -- datasets -----------------------------------------------------------------
    @staticmethod
    def _dataset_resource(meta: dict[str, Any]) -> dict[str, Any]:
        n_samples, n_features = meta["shape"]
        return {
            "id": meta["id"],
            "name": meta.get("name"),
            "n_samples": n_samples,
            "n_features": n_features,
            "dtype": meta["dtype"],
            "sha256": meta["id"],
            "created_at": meta["created_at"],
        }

    def create_dataset(
        self, X: np.ndarray, *, name: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Store ``X`` (n_samples, n_features) as float64 unless the same array is
        stored already; answers the dataset resource and whether it is new. A repeat
        keeps the first upload's ``name`` and ``created_at``."""
        X = datasets_mod.to_float64(X)
        datasets_mod.require_finite(X)
        meta, created = self._store.put_dataset(
            X, {"name": name, "created_at": _now(), "versions": _versions()}
        )
        return self._dataset_resource(meta), created

    def upload_dataset(
        self, media_type: str, body: BinaryIO, *, csv_header: bool | None = None, name: str | None
    ) -> tuple[dict[str, Any], bool]:
        """A ``.npy`` or CSV body (a file object) parsed and stored: see ``create_dataset``."""
        if media_type == datasets_mod.NPY_MEDIA_TYPE:
            X = datasets_mod.read_npy(body, self.limits)
        else:
            X = datasets_mod.read_csv(body, self.limits, header=csv_header)
        return self.create_dataset(X, name=name)

    def dataset_from_spec(self, data: DataSpec, *, name: str | None) -> tuple[dict[str, Any], bool]:
        """JSON ``points`` or a ``generator`` stored as a dataset (labels are not kept)."""
        return self.create_dataset(self.resolve(data, ("body",)).X, name=name)

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._dataset_resource(self._store.get_dataset_metadata(dataset_id))

    def list_datasets(self, *, limit: int, cursor: str | None) -> dict[str, Any]:
        items, next_cursor = self._store.list_datasets(limit=limit, cursor=cursor)
        return {
            "items": [self._dataset_resource(m) for m in items],
            "next_cursor": next_cursor,
            "total": self._store.count_datasets(),
        }

    def delete_dataset(self, dataset_id: str) -> None:
        """Models fitted on the dataset keep their own reference and keep working."""
        self._store.delete_dataset(dataset_id)

    # -- models -------------------------------------------------------------------
    def fit_or_submit(
        self,
        *,
        algorithm: str,
        params: dict[str, Any],
        data: DataSpec,
        name: str | None,
        include: list[str] | None,
        align_to: str | None = None,
        extra: dict[str, Any] | None = None,
        wait: bool | None = None,
        tags: Mapping[str, str] | None = None,
        sample_weight: list[float] | None = None,
        engine: Literal["local", "dask"] = "local",
    ) -> tuple[Literal["model", "job"], dict[str, Any]]:
        """Fit, store, and answer the resource plus the requested per-point arrays; or
        the same fit as a job.

        Everything is checked first (parameters, data, limits, ``align_to``), so bad
        input is refused before any job exists. Then ``wait=False`` submits a job,
        ``wait=True`` fits now, and ``wait=None`` fits now unless the fit is estimated
        (``cost.fit_seconds``) to take longer than ``async_fit_seconds``. Answers
        ``("model", resource and arrays)`` or ``("job", job resource)``.

        ``sample_weight`` (k-means only) gives each training point its weight in the
        fit, as sklearn's ``fit(X, sample_weight=...)``; it is checked against the data.

        ``engine="dask"`` fits the data as a stored dataset in row chunks on the Dask
        cluster (``chunked``); the points are stored first when they came in the body.
        """
        prepared = self._prepare_fit(
            algorithm, params, data, name, include, align_to, extra, sample_weight, engine
        )
        prepared = replace(prepared, tags=dict(tags or {}))
        if wait is None:
            limit = self._async_fit_seconds
            wait = limit is None or prepared.estimated_seconds <= limit
        if not wait:
            return "job", self._submit_fit(prepared)
        with self.fitting():
            fitted = self._run_fit(prepared, None)
        return "model", self._store_prepared(prepared, fitted, prepared.wanted, prepared.omitted)

    def _run_fit(self, prepared: _PreparedFit, progress: FitProgress | None) -> estimators.Fitted:
        if prepared.rows is None:
            return self.fit(
                prepared.algorithm,
                prepared.params,
                prepared.dataset.X,
                progress,
                sample_weight=prepared.sample_weight,
            )
        assert self._cluster is not None  # checked by _prepare_fit
        X = chunked.rows_array(prepared.rows)
        return chunked.fit(
            prepared.algorithm, prepared.params, X, progress, scheduler=self._cluster.client()
        )

    def _chunked_dataset(self, data: DataSpec) -> tuple[data_mod.Dataset, StoredRows]:
        """The request's data as a stored dataset the workers read in chunks. A stored
        one is not loaded here; points or a generator in the body are stored first."""
        if data.dataset_id is None:
            dataset = self.resolve(data)
            dataset_id = self.create_dataset(dataset.X)[0]["id"]
        else:
            dataset = data_mod.Dataset(np.empty((0, 0)), dataset_id=data.dataset_id)
            dataset_id = data.dataset_id
        try:
            rows = self._store.dataset_rows(dataset_id)
        except NotFound:
            raise InvalidInput.at(
                ["body", "data", "dataset_id"],
                f"no dataset with id {dataset_id!r}; upload it with POST /v1/datasets.",
                "unknown_dataset",
            ) from None
        n_samples, n_features = rows.shape
        data_mod.check_features(n_features, self.limits, ["body", "data"])
        # Only the shape: zero strides, no memory. The rows stay in the store.
        shape_only = np.lib.stride_tricks.as_strided(
            np.zeros(1), shape=(n_samples, n_features), strides=(0, 0), writeable=False
        )
        return replace(dataset, X=shape_only, dataset_id=dataset_id), rows

    def _prepare_fit(
        self,
        algorithm: str,
        params: dict[str, Any],
        data: DataSpec,
        name: str | None,
        include: list[str] | None,
        align_to: str | None,
        extra: dict[str, Any] | None,
        sample_weight: list[float] | None = None,
        engine: Literal["local", "dask"] = "local",
    ) -> _PreparedFit:
        allowed = estimators.per_point_fields(algorithm)
        wanted = estimators.default_include(algorithm) if include is None else set(include)
        for i, item in enumerate(include or []):
            if item not in allowed:
                raise InvalidInput.at(
                    ["body", "include", i],
                    f"{item!r} is not available for {algorithm}; choose from {sorted(allowed)}.",
                )
        rows = None
        if engine == "dask":
            if self._cluster is None:
                raise InvalidInput.at(
                    ["body", "engine"],
                    "engine 'dask' needs a Dask cluster, and this service has none: set "
                    "GMM_DASK_SCHEDULER to its scheduler's address.",
                )
            chunked.check(algorithm, params, weighted=sample_weight is not None)
            dataset, rows = self._chunked_dataset(data)
        else:
            dataset = self.resolve(data)
        n_samples, n_features = dataset.X.shape
        estimators.check_params(algorithm, params, n_samples, n_features, self.limits)
        weights = estimators.check_sample_weight(algorithm, sample_weight, n_samples)
        reference = self._alignment_reference(align_to, algorithm, params, n_features)
        return _PreparedFit(
            algorithm=algorithm,
            params=params,
            data=data,
            dataset=dataset,
            name=name,
            tags={},
            wanted=wanted,
            alignment=(align_to, reference) if align_to and reference is not None else None,
            extra=extra,
            estimated_seconds=cost.fit_seconds(algorithm, params, n_samples, n_features),
            omitted=self._omitted_by_default(algorithm, params, n_samples, wanted, include),
            sample_weight=weights,
            rows=rows,
        )

    def _store_prepared(
        self,
        prepared: _PreparedFit,
        fitted: estimators.Fitted,
        include: set[str],
        omitted: list[str] | None = None,
    ) -> dict[str, Any]:
        """Store the fit; answer the resource and the ``include``d per-point arrays,
        with a note about the ``omitted`` ones (see ``_omitted_by_default``)."""
        resource, arrays = self.store_fitted(
            algorithm=prepared.algorithm,
            params=prepared.params,
            dataset=prepared.dataset,
            fitted=fitted,
            name=prepared.name,
            tags=prepared.tags,
            include=include - set(omitted or []),
            alignment=prepared.alignment,
            generator=prepared.data.generator,
            extra=prepared.extra,
            weighted=prepared.sample_weight is not None,
            per_point=self._chunked_per_point(prepared),
        )
        if not omitted:
            return {**resource, **arrays}
        n_samples = prepared.dataset.X.shape[0]
        note = {
            "category": "ResponseSizeWarning",
            "message": (
                f"{' and '.join(omitted)} for the {n_samples} training points were left out: "
                f"they would hold more than {self.limits.max_default_per_point_values} numbers "
                "(GMM_MAX_DEFAULT_PER_POINT_VALUES). Name them in `include` to get them, or "
                f"POST the points to /v1/models/{resource['id']}/predict."
            ),
        }
        warnings = [*resource["warnings"], note]
        return {**resource, **arrays, "warnings": warnings, "omitted": omitted}

    def _chunked_per_point(
        self, prepared: _PreparedFit
    ) -> Callable[[Any, set[str]], dict[str, np.ndarray]] | None:
        """For a chunked fit, the training points' arrays computed on the cluster."""
        rows, cluster = prepared.rows, self._cluster
        if rows is None or cluster is None:
            return None

        def per_point(est: Any, names: set[str]) -> dict[str, np.ndarray]:
            X = chunked.rows_array(rows)
            return chunked.per_point(prepared.algorithm, est, X, names, scheduler=cluster.client())

        return per_point

    def _omitted_by_default(
        self,
        algorithm: str,
        params: dict[str, Any],
        n_samples: int,
        wanted: set[str],
        include: list[str] | None,
    ) -> list[str]:
        """The per-point arrays to leave out of a fit's answer: those answered by
        default (``include`` not given) when together they would pass
        ``max_default_per_point_values`` numbers. A million points' probabilities are
        tens of megabytes of JSON that a client fitting them rarely reads; one that
        names them gets them."""
        if include is not None:
            return []
        k = params[estimators.ALGORITHMS[algorithm].k_param]
        n_values = sum(n_samples * (1 if name == "labels" else k) for name in wanted)
        if n_values <= self.limits.max_default_per_point_values:
            return []
        return sorted(wanted)

    def _submit_fit(self, prepared: _PreparedFit) -> dict[str, Any]:
        total, unit = progress_plan(estimators.build(prepared.algorithm, prepared.params))
        n_samples, n_features = prepared.dataset.X.shape

        def work(ctx: JobContext) -> dict[str, Any]:
            progress = ctx.progress(total, unit)
            fitted = self._run_fit(prepared, progress)
            ctx.check()  # a cancel that came after the last step still stores nothing
            # A job answers the model; its per-point arrays are a GET (or predict) away.
            resource = self._store_prepared(prepared, fitted, set())
            return {"model_id": resource["id"]}

        return self.submit_job(
            "fit",
            work,
            total=total,
            unit=unit,
            request={
                "algorithm": prepared.algorithm,
                "params": jsonable(prepared.params),
                "name": prepared.name,
                "tags": prepared.tags,
                "n_samples": int(n_samples),
                "n_features": int(n_features),
                # The weights themselves are not kept: a job's record stays small.
                **({"weighted": True} if prepared.sample_weight is not None else {}),
                **({"engine": "dask"} if prepared.rows is not None else {}),
                "estimated_seconds": prepared.estimated_seconds,
            },
        )

    # -- jobs ---------------------------------------------------------------------
    def submit_job(
        self,
        kind: str,
        work: Callable[[JobContext], dict[str, Any]],
        *,
        total: int,
        unit: str,
        request: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Queue ``work`` as a job of ``kind``; answers the job resource as accepted.

        ``work`` returns ``{"model_id": ...}`` and/or ``{"result": ...}``; a result is
        made JSON-ready here (numpy arrays to lists, non-finite numbers to null).
        """

        def run(ctx: JobContext) -> dict[str, Any]:
            return jsonable(work(ctx))  # type: ignore[no-any-return]

        job = self._jobs.submit(
            kind, run, total=total, unit=unit, job_id=new_job_id(), request=request
        )
        return public(job)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return public(self._jobs.get(check_job_id(job_id)))

    def list_jobs(self, *, limit: int, cursor: str | None) -> dict[str, Any]:
        items, next_cursor = self._jobs.list(limit=limit, cursor=cursor)
        return {
            "items": [public(job) for job in items],
            "next_cursor": next_cursor,
            "total": len(self._store.job_ids()),
        }

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Ask a job to stop: a queued one never starts, a running fit stops at its next
        step; nothing is stored either way. A finished job is answered unchanged."""
        return public(self._jobs.cancel(check_job_id(job_id)))

    def recover_jobs(self) -> int:
        """At start: mark jobs whose process died (crash, restart) ``failed``; jobs of
        other live worker processes are left alone. Answers how many were marked."""
        return self._jobs.recover()

    def store_fitted(
        self,
        *,
        algorithm: str,
        params: dict[str, Any],
        dataset: data_mod.Dataset,
        fitted: estimators.Fitted,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        include: set[str] | None = None,
        alignment: tuple[str, np.ndarray] | None = None,
        generator: GeneratorSpec | None = None,
        extra: dict[str, Any] | None = None,
        weighted: bool = False,
        per_point: Callable[[Any, set[str]], dict[str, np.ndarray]] | None = None,
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Describe and store an estimator fitted on ``dataset``.

        ``weighted``: the fit was given ``sample_weight`` (k-means only). The resource
        says so, since its ``inertia`` is then the weighted sum; the weights are not kept.

        ``per_point(estimator, names)`` computes the training points' arrays when they
        are not in ``dataset.X`` (a chunked fit: see ``_chunked_per_point``).

        Returns the stored resource and the per-point arrays named by ``include``
        for the training points. Model selection stores its winner through here too.
        """
        est = fitted.estimator
        n_samples, n_features = dataset.X.shape
        if not np.isfinite(estimators.means_of(algorithm, est)).all():
            raise _overflowed("means")
        attributes: dict[str, Any] = {}
        if alignment is not None:
            perm = matching.alignment_permutation(estimators.means_of(algorithm, est), alignment[1])
            matching.permute(algorithm, est, perm)
            attributes["alignment"] = {"model_id": alignment[0], "permutation": perm}
        wanted = include or set()
        mixture = estimators.is_mixture(algorithm)
        needed = wanted | {"labels"} | ({"log_likelihood"} if mixture else set())
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            # The fit's final E-step, unless alignment has since reordered the components.
            wlp = fitted.training_wlp if alignment is None else None
            if per_point is not None:
                arrays = per_point(est, needed)
            else:
                arrays = estimators.per_point(
                    algorithm, est, dataset.X, needed, training=True, wlp=wlp
                )
            train_ll = arrays.get("log_likelihood")
            described = estimators.describe(algorithm, est, dataset.X, train_ll)
        overflowed = _first_non_finite(described) or _first_non_finite(arrays)
        if overflowed is not None:
            raise _overflowed(overflowed)
        attributes.update(described)
        if not mixture:
            attributes["weighted"] = weighted
        if algorithm == "bayesian_gaussian_mixture":
            threshold = (extra or {}).get("effective_weight_threshold")
            threshold = EFFECTIVE_WEIGHT_THRESHOLD if threshold is None else threshold
            attributes["effective_weight_threshold"] = threshold
            attributes["effective_n_components"] = estimators.effective_n_components(
                est.weights_, threshold
            )
        if isinstance(generator, GaussianMixtureSpec) and dataset.y is not None:
            attributes["recovery"] = matching.recovery_report(
                algorithm,
                est,
                arrays["labels"],
                np.array([c.mean for c in generator.components], dtype=np.float64),
                np.array([c.cov for c in generator.components], dtype=np.float64),
                dataset.y,
            )
        bundle = {
            "estimator": est,
            "dataset_id": None,
            "labels": np.asarray(arrays["labels"]),
            "train_log_likelihood": np.sort(train_ll) if train_ll is not None else None,
        }
        dataset_id = dataset.dataset_id
        for attempt in (1, 2):
            if dataset_id is None:
                dataset_id = self.create_dataset(dataset.X)[0]["id"]
            bundle["dataset_id"] = dataset_id
            try:
                resource = self.save_model(
                    algorithm=algorithm,
                    params=params,
                    name=name,
                    tags=tags,
                    n_samples=int(n_samples),
                    n_features=int(n_features),
                    fit_seconds=fitted.fit_seconds,
                    warnings=dataset.warnings + fitted.warnings,
                    attributes=attributes,
                    bundle=bundle,
                    dataset_id=dataset_id,
                )
                break
            except NotFound:
                # The dataset was deleted while this fit ran: store the points again
                # (the same id, by content) and link the model to them. A chunked fit
                # never had them here: it is refused like any fit of a deleted dataset.
                if attempt == 2 or per_point is not None:
                    raise
                dataset_id = None
        return resource, {k: v for k, v in arrays.items() if k in wanted}

    def save_model(
        self,
        *,
        algorithm: str,
        params: dict[str, Any],
        name: str | None,
        n_samples: int | None,
        n_features: int,
        fit_seconds: float,
        warnings: list[dict[str, str]],
        attributes: dict[str, Any],
        bundle: dict[str, Any],
        imported: bool = False,
        imported_from: dict[str, Any] | None = None,
        dataset_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Give a model its id and creation time, store it, and answer its resource.

        The one way a model enters the store (fits, model selection's winner, imports),
        so that every resource has the same fields in the same order and every metadata
        file records the library versions. ``attributes`` are the fitted attributes
        (``estimators.describe``) and anything else the resource shows; ``bundle`` holds
        the estimator and, for a fitted model, its training ``dataset_id``, ``labels``
        and sorted ``train_log_likelihood`` (None each for an import). ``dataset_id``
        names the stored dataset of the training points: the store gives the model its
        own reference to them (``NotFound`` when the dataset is gone). ``name`` and
        ``tags`` are the only fields that change afterwards (``update_model``).
        """
        resource: dict[str, Any] = {
            "id": new_model_id(),
            "name": name,
            "tags": dict(tags or {}),
            "algorithm": algorithm,
            "params": params,
            "created_at": _now(),
            "n_samples": n_samples,
            "n_features": n_features,
            "fit_seconds": fit_seconds,
            "warnings": warnings,
            "imported": imported,
            "dataset_id": dataset_id,
            **attributes,
        }
        resource = jsonable(resource)
        metadata: dict[str, Any] = {"resource": resource, "versions": _versions()}
        if imported_from is not None:
            metadata["imported_from"] = imported_from
        self._store.put(resource["id"], bundle, metadata, dataset_id=dataset_id)
        return resource

    def _alignment_reference(
        self, align_to: str | None, algorithm: str, params: dict[str, Any], n_features: int
    ) -> np.ndarray | None:
        if align_to is None:
            return None
        loc = ["body", "align_to"]
        try:
            ref = self.get_model(align_to)
        except Exception as exc:
            raise InvalidInput.at(loc, f"align_to names no stored model ({align_to}).") from exc
        k = params[estimators.ALGORITHMS[algorithm].k_param]
        if ref["n_components"] != k or ref["n_features"] != n_features:
            raise InvalidInput.at(
                loc,
                f"align_to model {align_to} has {ref['n_components']} components and "
                f"{ref['n_features']} features; this fit has {k} and {n_features}.",
            )
        if params.get("weight_concentration_prior_type") == "dirichlet_process":
            raise InvalidInput.at(
                loc,
                "a dirichlet_process prior orders its components (stick breaking), so they "
                "cannot be permuted; use weight_concentration_prior_type "
                "'dirichlet_distribution' to align.",
            )
        return np.asarray(ref["means"], dtype=np.float64)

    def get_metadata(self, model_id: str) -> dict[str, Any]:
        """The stored metadata: ``resource``, ``versions`` and, for imports, ``imported_from``."""
        return self._store.get_metadata(check_id(model_id))

    def get_model(self, model_id: str) -> dict[str, Any]:
        return _resource(self.get_metadata(model_id))

    def update_model(
        self,
        model_id: str,
        *,
        name: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        fields: set[str],
    ) -> dict[str, Any]:
        """Rename a model and/or merge-patch its tags (RFC 7396); answers the resource.

        ``fields`` names what the patch holds (``name``, ``tags``), so that a null
        ``name`` (remove it) differs from none given (keep it), and a null ``tags``
        removes every tag. The merge happens inside the store's per-model lock, so two
        concurrent patches never lose one another's change. Only the metadata is
        rewritten (signed again); the fitted model is untouched. ``NotFound`` when the
        model is, or becomes, deleted.
        """
        loc_tags = ["body", "tags"]

        def change(meta: dict[str, Any]) -> dict[str, Any] | None:
            resource = _resource(meta)
            updated = dict(resource)
            if "name" in fields:
                updated["name"] = name
            if "tags" in fields:
                merged = merge_patch(resource["tags"], tags)
                if len(merged) > MAX_TAGS:
                    raise InvalidInput.at(
                        loc_tags,
                        f"the model would have {len(merged)} tags; at most {MAX_TAGS} are "
                        "allowed: remove some with null values in the same patch.",
                        "too_many_tags",
                    )
                updated["tags"] = merged
            if updated == resource:
                return None  # nothing to write: the file and its signature stay
            return {**meta, "resource": updated}

        meta = self._store.update_metadata(check_id(model_id), change)
        resource = _resource(meta)
        with self._cache_lock:
            hit = self._cache.get(model_id)
            if hit is not None:
                self._cache[model_id] = replace(hit, resource=resource)
        return resource

    def load_bundle(self, model_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The resource and the stored bundle (estimator, training X, labels...).

        ``X`` is a read-only memory map of the training dataset the model refers to,
        or the array pickled into bundles stored before datasets existed, or None
        (imports).
        """
        loaded = self._loaded(model_id)
        bundle = loaded.bundle
        # Read afresh: the name and tags may have changed since the bundle was cached.
        resource = self.get_model(model_id)
        if "X" not in bundle:
            points = self._store.load_points(model_id) if bundle.get("dataset_id") else None
            bundle = {**bundle, "X": points}  # the cached bundle stays as stored
        return resource, bundle

    def _loaded(self, model_id: str) -> _Loaded:
        """A model as prediction uses it, from this worker's cache when it can be.

        The hot path: a hit costs one ``exists`` check of the store (a model deleted
        through another worker is never served) and no read, no signature check, no
        unpickling. A miss verifies and loads as ``load`` does, and compiles the
        estimator once (``service.domain.inference.compiled``).
        """
        check_id(model_id)
        with self._cache_lock:
            hit = self._cache.get(model_id)
        if hit is not None:
            if self._store.exists(model_id):
                with self._cache_lock:
                    self._cache.move_to_end(model_id)
                    self._cache_hits += 1
                return hit
            with self._cache_lock:
                self._cache.pop(model_id, None)
            raise NotFound(f"No model with id {model_id!r}.")
        resource = self.get_model(model_id)
        bundle = self._store.load(model_id)
        loaded = _Loaded(resource, bundle, compile_estimator(bundle["estimator"]))
        with self._cache_lock:
            self._cache_misses += 1
        if self._cache_size > 0:
            with self._cache_lock:
                self._cache[model_id] = loaded
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return loaded

    def is_cached(self, model_id: str) -> bool:
        """Whether ``model_id`` would be served from memory (the route then answers a
        small request on the event loop instead of paying for a thread hop)."""
        with self._cache_lock:
            return model_id in self._cache

    def find_model(self, ref: str) -> dict[str, Any]:
        """The resource of the model ``ref`` names: a model id, or else a model ``name``
        (the newest model of that name, as a name is a free label, not unique).

        For clients that address models by a name they chose, such as the Open
        Inference Protocol's ``/v2/models/{name}``. An id of a cached model costs one
        ``exists`` check (the hot path of ``infer``); a name costs a walk of the store's
        metadata, newest first, filtered by name. ``NotFound`` when neither
        an id nor a name matches.
        """
        try:
            check_id(ref)
        except NotFound:
            pass
        else:
            with self._cache_lock:
                hit = self._cache.get(ref)
            if hit is not None and self._store.exists(ref):
                return hit.resource
            with contextlib.suppress(NotFound):  # a name may look like an id
                return self.get_model(ref)
        items, _ = self._store.list(limit=1, cursor=None, where=model_filter(name=ref))
        if not items:
            raise NotFound(f"No model with id or name {ref!r}.")
        return _resource(items[0])

    def list_models(
        self,
        *,
        limit: int,
        cursor: str | None,
        name: str | None = None,
        algorithm: str | None = None,
        tags: Sequence[str] = (),
    ) -> dict[str, Any]:
        """A page of model resources, newest first, read from metadata alone (no model
        is unpickled). ``name``, ``algorithm`` and ``tags`` (see ``model_filter``)
        narrow the listing; the page, ``next_cursor`` and ``total`` are then those of
        the models that match. A filtered ``total`` reads every model's metadata."""
        where = model_filter(name=name, algorithm=algorithm, tags=tags)
        items, next_cursor = self._store.list(limit=limit, cursor=cursor, where=where)
        return {
            "items": [_resource(m) for m in items],
            "next_cursor": next_cursor,
            "total": self._store.count(where=where),
        }

    def delete_model(self, model_id: str) -> None:
        self._store.delete(check_id(model_id))

    # -- operations ---------------------------------------------------------------
    def check_store(self) -> None:
        """Readiness: ``StoreUnavailable`` (503) unless a write round-trip succeeds."""
        self._store.check_writable()

    def store_stats(self) -> dict[str, int]:
        """What ``/metrics`` reports about the store: models, bytes, and the hits and
        misses of this worker's cache of loaded models."""
        return {
            "models": self._store.count(),
            "bytes": self._store.total_bytes(),
            "cache_hits": self._cache_hits,
            "cache_misses": self._cache_misses,
        }

    # -- using a model ------------------------------------------------------------
    def _points(
        self, resource: dict[str, Any], points: list[list[float]] | np.ndarray, loc: Loc
    ) -> np.ndarray:
        """The points as float64, as wide as the model; errors name ``loc`` (JSON
        ``["body", "points"]``, or ``["body"]`` for a whole ``.npy`` body)."""
        return data_mod.points_to_array(points, self.limits, loc, width=resource["n_features"])

    def read_npy(self, body: BinaryIO) -> np.ndarray:
        """A ``.npy`` body of points, under the same limits as JSON points."""
        return datasets_mod.read_npy(body, self.limits)

    def predict(
        self,
        model_id: str,
        points: list[list[float]] | np.ndarray,
        *,
        loc: Loc = ("body", "points"),
    ) -> dict[str, Any]:
        loaded = self._loaded(model_id)
        X = self._points(loaded.resource, points, loc)
        fields = estimators.per_point_fields(loaded.resource["algorithm"])
        # Overflow is reported per row below, not as numpy's RuntimeWarning.
        with np.errstate(over="ignore", invalid="ignore"):
            result = loaded.compiled.evaluate(X, fields)
        _require_finite(result, loc)
        return result

    def _require_mixture(self, resource: dict[str, Any], what: str) -> None:
        if not estimators.is_mixture(resource["algorithm"]):
            raise UnsupportedOperation(
                f"{what} needs a mixture model; model {resource['id']} is {resource['algorithm']}."
            )

    def score(
        self,
        model_id: str,
        points: list[list[float]] | np.ndarray,
        *,
        loc: Loc = ("body", "points"),
    ) -> dict[str, Any]:
        loaded = self._loaded(model_id)
        resource, bundle = loaded.resource, loaded.bundle
        self._require_mixture(resource, "Scoring")
        X = self._points(resource, points, loc)
        # sklearn's own arithmetic, not the compiled form: a point equal to a training
        # point must rank exactly where that training point does.
        with np.errstate(over="ignore", invalid="ignore"):
            ll = estimators.log_likelihood_of(bundle["estimator"], X)
        _require_finite({"log_likelihood": ll}, loc)
        train = bundle.get("train_log_likelihood")
        percentile = (
            100.0 * np.searchsorted(train, ll, side="right") / len(train)
            if train is not None and len(train)
            else None
        )
        out: dict[str, Any] = {
            "log_likelihood": ll,
            "score": float(ll.mean()),
            "percentile": percentile,
        }
        if resource["algorithm"] == "gaussian_mixture":
            # sklearn's bic(X)/aic(X) of these points, from the log-likelihoods at hand:
            # what a remote estimator's bic(X) answers (the resource's are the training's).
            out.update(estimators.information_criteria(bundle["estimator"], X, ll))
        return out

    def sample(self, model_id: str, n_samples: int, random_state: int | None) -> dict[str, Any]:
        resource, bundle = self.load_bundle(model_id)
        self._require_mixture(resource, "Sampling")
        limit = min(MAX_SAMPLE_POINTS, self.limits.max_points)
        if n_samples > limit or n_samples * resource["n_features"] > self.limits.max_values:
            raise PayloadTooLarge.at(
                ["body", "n_samples"],
                f"n_samples={n_samples} exceeds the limit of {limit} points "
                f"(and {self.limits.max_values} values, GMM_MAX_VALUES).",
            )
        X, y = estimators.sample(bundle["estimator"], n_samples, random_state)
        return {"points": X, "labels": y}
