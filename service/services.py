"""The services, built in one place from the settings: what the app, the CLI, a worker
or a test uses to have a working service without HTTP (MLServer's data plane, built
outside ``create_app``).

This is the one module that reads ``Settings`` for the domain: each service is built
with the plain values it needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from service.config import Settings
from service.domain.analysis.service import Analysis
from service.domain.catalogue.loaded import LoadedModels
from service.domain.catalogue.service import Catalogue
from service.domain.datasets.service import Datasets
from service.domain.inference.compiled import compile_estimator
from service.domain.inference.service import Inference
from service.domain.jobs.service import Jobs
from service.domain.limits import Limits
from service.domain.runtime.cluster import DaskCluster
from service.domain.runtime.executor import FitSlots, make_runner
from service.domain.runtime.housekeeping import Housekeeping
from service.domain.training.service import Training
from service.store import IndexedStore, open_store


def limits_from(settings: Settings) -> Limits:
    """The domain's limits, copied from the settings fields of the same names."""
    return Limits(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(Limits)})


@dataclass(frozen=True)
class Services:
    """One of each service, sharing one store, one cache of loaded models, one fit
    runner and one set of fit slots."""

    catalogue: Catalogue
    datasets: Datasets
    jobs: Jobs
    training: Training
    inference: Inference
    analysis: Analysis
    store: IndexedStore
    housekeeping: Housekeeping

    def close(self) -> None:
        self.housekeeping.close()
        self.jobs.close()  # running jobs stop first: their fits may use the runner
        self.training.close()
        self.catalogue.close()
        self.store.close()


def build_services(settings: Settings) -> Services:
    store = open_store(
        store_dir=settings.store_dir,
        store_url=settings.store_url,
        database_url=settings.database_url.get_secret_value() if settings.database_url else None,
        secret_key=settings.secret_key.get_secret_value() if settings.secret_key else None,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_timeout_seconds=settings.s3_timeout_seconds,
        database_pool_size=settings.database_pool_size,
        min_free_bytes=settings.store_min_free_bytes,
        max_bytes=settings.store_max_bytes,
    )
    limits = limits_from(settings)
    cluster = DaskCluster(settings.dask_scheduler) if settings.dask_scheduler else None
    # Job fits use the worker processes too: room for both.
    runner = make_runner(
        settings.max_concurrent_fits + settings.job_workers,
        settings.fit_timeout_seconds,
        cluster,
    )
    catalogue = Catalogue(
        store,
        LoadedModels(
            store,
            size=settings.cache_size,
            read_resource=lambda model_id: catalogue.stored(model_id),
            compile=compile_estimator,
            recheck_seconds=settings.model_recheck_seconds,
        ),
        limits,
    )
    datasets = Datasets(store, limits)
    slots = FitSlots(
        settings.max_concurrent_fits,
        queue_length=settings.fit_queue_length,
        queue_seconds=settings.fit_queue_seconds,
    )
    jobs = Jobs(
        store,
        slots=slots,
        workers=settings.job_workers,
        stale_seconds=settings.job_stale_seconds,
        retention_seconds=settings.job_retention_seconds,
        idempotency_seconds=settings.idempotency_seconds,
        queue_length=settings.job_queue_length,
    )
    training = Training(
        catalogue=catalogue,
        datasets=datasets,
        jobs=jobs,
        fit_runner=runner,
        cluster=cluster,
        limits=limits,
    )
    every = settings.sweep_interval_seconds
    orphans_every = max(every, settings.orphan_grace_seconds / 4)
    housekeeping = Housekeeping(
        [
            ("expired models", store.sweep_expired_models, every),
            ("expired datasets", store.sweep_expired_datasets, every),
            ("expired jobs", store.sweep_expired_jobs, every),
            ("expired idempotency keys", store.sweep_expired_keys, every),
            # Listing every artifact costs more; orphans are rare and need not go fast.
            (
                "orphan artifacts",
                lambda: store.sweep_orphans(settings.orphan_grace_seconds),
                orphans_every,
            ),
        ],
        # Listing every artifact at 100,000 models takes a second of the GIL: not
        # while the service starts.
        first_delays={"orphan artifacts": min(orphans_every, 30.0)},
    )
    housekeeping.start()
    return Services(
        store=store,
        housekeeping=housekeeping,
        catalogue=catalogue,
        datasets=datasets,
        jobs=jobs,
        training=training,
        inference=Inference(catalogue, datasets),
        analysis=Analysis(training, datasets, jobs),
    )
