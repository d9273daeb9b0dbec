"""Training: check a fit request, fit it where fits run, describe and store the result.

Model selection and comparisons fit through here too (``fit``, ``store_fitted``), so
the fit runner, the Dask cluster and the one path into the catalogue have one owner.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from service.domain.catalogue.service import Catalogue
from service.domain.datasets.arrays import Dataset
from service.domain.datasets.service import Datasets
from service.domain.jobs.manager import JobContext
from service.domain.jobs.service import Jobs, Started, Waiting
from service.domain.limits import Limits
from service.domain.outofcore import chunked
from service.domain.records import ModelResource
from service.domain.runtime.cluster import ClusterUnavailable, DaskCluster
from service.domain.runtime.executor import FitRunner
from service.domain.training import estimators
from service.domain.training.prepare import PreparedFit, prepare_fit
from service.domain.training.progress import FitProgress, progress_plan
from service.domain.training.results import PerPoint, describe_fit, omission_note
from service.errors import Conflict, InvalidInput, NotFound, from_problem
from service.schemas.data import DataSpec, GeneratorSpec


class Training:
    """Fits on ``fit_runner`` (this process, killable worker processes, or the cluster)."""

    def __init__(
        self,
        *,
        catalogue: Catalogue,
        datasets: Datasets,
        jobs: Jobs,
        fit_runner: FitRunner,
        cluster: DaskCluster | None,
        limits: Limits,
    ) -> None:
        self._catalogue = catalogue
        self._datasets = datasets
        self._jobs = jobs
        self._fit_runner = fit_runner
        self._cluster = cluster
        self.limits = limits

    def close(self) -> None:
        self._fit_runner.close()

    # -- where fits run -------------------------------------------------------------
    def fit(
        self,
        algorithm: str,
        params: dict[str, Any],
        X: np.ndarray,
        progress: FitProgress | None = None,
        *,
        sample_weight: np.ndarray | None = None,
    ) -> estimators.Fitted:
        """``estimators.fit`` through the runner (a killable worker process when fits
        have a time limit); ``progress`` counts its steps and can cancel it.
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

    @property
    def fits_isolated(self) -> bool:
        """Whether every fit must go through ``fit`` (to stay killable and time-limited)
        rather than call ``estimators.fit`` in whatever thread or process it runs."""
        return self._fit_runner.isolated

    def cluster_status(self) -> dict[str, Any] | None:
        """The Dask scheduler's address and its workers and threads now; None without a
        cluster. ``ClusterUnavailable`` (503) when the scheduler does not answer, or has
        no worker: every fit would wait for one and fail."""
        if self._cluster is None:
            return None
        status = self._cluster.status()
        if not status["workers"]:
            raise ClusterUnavailable(
                f"The Dask scheduler at {self._cluster.address} has no workers: fits sent "
                "to it would wait and fail."
            )
        return status

    # -- a fit request ----------------------------------------------------------------
    def create_model(
        self,
        *,
        algorithm: str,
        params: dict[str, Any],
        data: DataSpec,
        name: str | None,
        include: list[str] | None,
        waiting: Waiting,
        align_to: str | None = None,
        extra: dict[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        ttl_seconds: int | None = None,
        sample_weight: list[float] | None = None,
        engine: Literal["local", "dask"] = "local",
    ) -> Started:
        """Fit, store, and answer the resource plus the requested per-point arrays, or
        the job still doing it (``Jobs.start`` says when).

        Everything is checked first (parameters, data, limits, ``align_to``), so bad
        input is refused before any job exists. ``sample_weight`` (k-means only) gives
        each training point its weight, as sklearn's ``fit(X, sample_weight=...)``.
        ``engine="dask"`` fits the data as a stored dataset in row chunks on the Dask
        cluster (``chunked``); the points are stored first when they came in the body.
        """
        prepared = prepare_fit(
            self._datasets,
            self._catalogue.stored,
            algorithm=algorithm,
            params=params,
            data=data,
            name=name,
            tags=dict(tags or {}),
            ttl_seconds=ttl_seconds,
            include=include,
            align_to=align_to,
            extra=extra,
            sample_weight=sample_weight,
            engine=engine,
            has_cluster=self._cluster is not None,
        )
        if waiting.mode == "later" and prepared.rows is None:
            # It may wait in the job queue: hold the points as a stored dataset (a
            # memory map, read when the fit starts), not as the request's array.
            prepared = dataclasses.replace(
                prepared,
                dataset=self._datasets.kept(prepared.dataset),
                data=prepared.data.model_copy(update={"points": None}),
            )
        total, unit = progress_plan(estimators.build(algorithm, params))
        # Nobody waits for the answer of a job answered 202 at once: its per-point
        # arrays are read later, from the job's result.
        answered = waiting.mode != "later"

        def work(ctx: JobContext | None) -> dict[str, Any]:
            fitted = self._run_fit(prepared, ctx.progress(total, unit) if ctx else None)
            if ctx is not None:
                ctx.check()  # a cancel that came after the last step still stores nothing
            answer = self._store_prepared(prepared, fitted, answered)
            return {"model_id": answer["id"], "answer": answer}

        n_samples, n_features = prepared.dataset.X.shape
        request = {
            "algorithm": algorithm,
            "params": params,
            "name": name,
            "tags": prepared.tags,
            "n_samples": int(n_samples),
            "n_features": int(n_features),
            # What the job's result answers (GET /v1/jobs/{id}/result).
            "include": sorted(prepared.wanted),
            **({"omitted": prepared.omitted} if prepared.omitted else {}),
            # The weights themselves are not kept: a job's record stays small.
            **({"weighted": True} if prepared.sample_weight is not None else {}),
            **({"engine": "dask"} if prepared.rows is not None else {}),
            # The stored points it fits: kept while the job has yet to read them.
            **({"dataset_id": prepared.dataset.dataset_id} if prepared.dataset.dataset_id else {}),
        }
        try:
            kind, body = self._jobs.start(
                "fit", work, waiting=waiting, total=total, unit=unit, request=request
            )
        except Exception:
            # Refused (a full queue: 429) or failed: the points this request stored for
            # its job must not stay behind, or refused fits would fill the store.
            self._datasets.release(prepared.dataset.dataset_id)
            raise
        if kind == "job" and body["status"] == "succeeded":  # a retry (Idempotency-Key)
            try:
                return "done", self.job_result(body["id"])
            except NotFound:
                raise InvalidInput.at(
                    ["header", "Idempotency-Key"],
                    "The model this Idempotency-Key created has been deleted since; send a "
                    "new key to fit it again.",
                    "idempotency_key_spent",
                ) from None
        return kind, body

    def _run_fit(self, prepared: PreparedFit, progress: FitProgress | None) -> estimators.Fitted:
        if prepared.rows is None:
            return self.fit(
                prepared.algorithm,
                prepared.params,
                prepared.dataset.X,
                progress,
                sample_weight=prepared.sample_weight,
            )
        assert self._cluster is not None  # checked by prepare_fit
        X = chunked.rows_array(prepared.rows)
        return chunked.fit(
            prepared.algorithm, prepared.params, X, progress, scheduler=self._cluster.client()
        )

    def _store_prepared(
        self, prepared: PreparedFit, fitted: estimators.Fitted, answered: bool
    ) -> dict[str, Any]:
        """Store the fit; answer the resource and (when ``answered``) the wanted
        per-point arrays, with a note about the omitted ones."""
        include = prepared.wanted - set(prepared.omitted) if answered else set()
        resource, arrays = self.store_fitted(
            algorithm=prepared.algorithm,
            params=prepared.params,
            dataset=prepared.dataset,
            fitted=fitted,
            name=prepared.name,
            tags=prepared.tags,
            ttl_seconds=prepared.ttl_seconds,
            include=include,
            alignment=prepared.alignment,
            generator=prepared.data.generator,
            extra=prepared.extra,
            weighted=prepared.sample_weight is not None,
            per_point=self._chunked_per_point(prepared),
        )
        return self._with_arrays(resource, arrays, prepared.omitted)

    def _with_arrays(
        self, resource: ModelResource, arrays: dict[str, np.ndarray], omitted: list[str]
    ) -> dict[str, Any]:
        if not omitted:
            return {**resource, **arrays}
        limit = self.limits.max_default_per_point_values
        note = omission_note(omitted, resource["n_samples"] or 0, limit, resource["id"])
        warnings = [*resource["warnings"], note]
        return {**resource, **arrays, "warnings": warnings, "omitted": omitted}

    def _chunked_per_point(self, prepared: PreparedFit) -> PerPoint | None:
        """For a chunked fit, the training points' arrays computed on the cluster."""
        rows, cluster = prepared.rows, self._cluster
        if rows is None or cluster is None:
            return None

        def per_point(est: Any, names: set[str]) -> dict[str, np.ndarray]:
            X = chunked.rows_array(rows)
            return chunked.per_point(prepared.algorithm, est, X, names, scheduler=cluster.client())

        return per_point

    def job_result(self, job_id: str) -> dict[str, Any]:
        """What the request that started a succeeded job would have answered had it
        waited: a selection's or comparison's ``result``, or a fit's model with the
        per-point arrays it asked for. ``Conflict`` (409) while the job runs; a failed
        job raises the error it failed with."""
        job = self._jobs.get(job_id)
        if job["status"] == "failed" and job.get("error"):
            raise from_problem(job["error"])
        if job["status"] != "succeeded":
            raise Conflict(
                f"Job {job_id} is {job['status']}: its result exists once it has succeeded. "
                f"Poll GET /v1/jobs/{job_id} until then."
            )
        if job["kind"] != "fit":
            result: dict[str, Any] = job["result"]
            return result
        return self._fit_answer(job)

    def _fit_answer(self, job: dict[str, Any]) -> dict[str, Any]:
        """The fit's model and the per-point arrays it asked for, computed again from
        the stored model and its training points exactly as the fit computed them."""
        request = job.get("request") or {}
        omitted = list(request.get("omitted", []))
        wanted = set(request.get("include", [])) - set(omitted)
        resource, bundle = self._catalogue.load_bundle(job["model_id"])
        arrays: dict[str, np.ndarray] = {}
        if wanted and bundle.get("X") is not None:
            X = np.asarray(bundle["X"])
            with np.errstate(over="ignore", invalid="ignore"):
                arrays = estimators.per_point(
                    resource["algorithm"], bundle["estimator"], X, wanted, training=True
                )
            if "labels" in arrays and bundle.get("labels") is not None:
                arrays["labels"] = np.asarray(bundle["labels"])
        return self._with_arrays(resource, arrays, omitted)

    # -- storing ----------------------------------------------------------------------
    def store_fitted(
        self,
        *,
        algorithm: str,
        params: dict[str, Any],
        dataset: Dataset,
        fitted: estimators.Fitted,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        ttl_seconds: int | None = None,
        include: set[str] | None = None,
        alignment: tuple[str, np.ndarray] | None = None,
        generator: GeneratorSpec | None = None,
        extra: dict[str, Any] | None = None,
        weighted: bool = False,
        per_point: PerPoint | None = None,
    ) -> tuple[ModelResource, dict[str, np.ndarray]]:
        """Describe and store an estimator fitted on ``dataset`` (``describe_fit``);
        answers the stored resource and the per-point arrays named by ``include``.
        Model selection stores its winner through here too."""
        record = describe_fit(
            algorithm=algorithm,
            dataset=dataset,
            fitted=fitted,
            include=include or set(),
            alignment=alignment,
            generator=generator,
            extra=extra,
            weighted=weighted,
            per_point=per_point,
        )
        n_samples, n_features = dataset.X.shape
        dataset_id = dataset.dataset_id
        for attempt in (1, 2):
            if dataset_id is None:
                dataset_id = self._datasets.create(dataset.X, inline=True)[0]["id"]
            record.bundle["dataset_id"] = dataset_id
            try:
                resource = self._catalogue.save(
                    algorithm=algorithm,
                    params=params,
                    name=name,
                    tags=tags,
                    ttl_seconds=ttl_seconds,
                    n_samples=int(n_samples),
                    n_features=int(n_features),
                    fit_seconds=fitted.fit_seconds,
                    warnings=dataset.warnings + fitted.warnings,
                    attributes=record.attributes,
                    bundle=record.bundle,
                    dataset_id=dataset_id,
                )
                return resource, record.arrays
            except NotFound:
                # The dataset was deleted while this fit ran: store the points again
                # (the same id, by content) and link the model to them. A chunked fit
                # never had them here: it is refused like any fit of a deleted dataset.
                if attempt == 2 or per_point is not None:
                    raise
                dataset_id = None
            except Exception:
                if dataset.dataset_id is None:  # stored here, for a model that never was
                    self._datasets.release(dataset_id)
                raise
        raise AssertionError("unreachable")  # pragma: no cover
