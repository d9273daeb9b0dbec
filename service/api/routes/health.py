"""Liveness, readiness, metrics, and the root redirect."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import RedirectResponse

from service.api.deps import CatalogueDep, MetricsDep, TrainingDep
from service.api.metrics import CONTENT_TYPE_LATEST
from service.api.problems import responses
from service.schemas.health import DaskStatus, Readiness

router = APIRouter(tags=["operations"])


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/docs")


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """Answers as long as the event loop runs, even while fits are busy."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the store is reachable and writable (and the Dask scheduler, if any)",
    response_model=Readiness,
    response_model_exclude_none=True,
    responses=responses(503),
)
def readyz(catalogue: CatalogueDep, training: TrainingDep) -> Readiness:
    """503 when the store cannot be written, or when `GMM_DASK_SCHEDULER` is set and the
    scheduler does not answer; otherwise the cluster's workers are counted."""
    catalogue.check_store()
    dask = training.cluster_status()
    return Readiness(dask=None if dask is None else DaskStatus(**dask))


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
)
def metrics(metrics: MetricsDep, catalogue: CatalogueDep) -> Response:
    stats = catalogue.stats()
    metrics.store_models.set(stats["models"])
    metrics.store_bytes.set(stats["bytes"])
    metrics.cache_hits.set(stats["cache_hits"])
    metrics.cache_misses.set(stats["cache_misses"])
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
