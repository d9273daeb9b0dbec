"""Dependencies declared once, as ``Annotated`` aliases, so routes read like sentences:
each route asks for the one service it uses.

They are ``async def`` because they only read ``app.state``: FastAPI runs a plain
``def`` dependency in its threadpool, a thread hop per dependency per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from service.api.metrics import Metrics
from service.config import Settings
from service.domain.analysis.service import Analysis
from service.domain.catalogue.service import Catalogue
from service.domain.datasets.service import Datasets
from service.domain.inference.service import Inference
from service.domain.jobs.service import Jobs
from service.domain.training.service import Training
from service.ids import check_id
from service.services import Services


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_catalogue(request: Request) -> Catalogue:
    return services_of(request).catalogue


async def get_datasets(request: Request) -> Datasets:
    return services_of(request).datasets


async def get_jobs(request: Request) -> Jobs:
    return services_of(request).jobs


async def get_training(request: Request) -> Training:
    return services_of(request).training


async def get_inference(request: Request) -> Inference:
    return services_of(request).inference


async def get_analysis(request: Request) -> Analysis:
    return services_of(request).analysis


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
CatalogueDep = Annotated[Catalogue, Depends(get_catalogue)]
DatasetsDep = Annotated[Datasets, Depends(get_datasets)]
JobsDep = Annotated[Jobs, Depends(get_jobs)]
TrainingDep = Annotated[Training, Depends(get_training)]
InferenceDep = Annotated[Inference, Depends(get_inference)]
AnalysisDep = Annotated[Analysis, Depends(get_analysis)]


async def get_model_id(
    model_id: Annotated[
        str,
        Path(
            description=(
                "A model id as the server made it. Any other string names no model: 404, "
                "as for an id that is not stored."
            ),
            examples=["019abc12de34f0a1b2c3d4e5f6a7"],
        ),
    ],
) -> str:
    """Checked here, before any route code or the store sees it. A client asking for a
    model that does not exist gets 404 whatever the id looks like, rather than 422
    from a path pattern for some strings and 404 for others."""
    return check_id(model_id)


ModelId = Annotated[str, Depends(get_model_id)]
