"""Dependencies declared once, as ``Annotated`` aliases, so routes read like sentences.

They are ``async def`` because they only read ``app.state``: FastAPI runs a plain
``def`` dependency in its threadpool, a thread hop per dependency per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from service.api.metrics import Metrics
from service.config import Settings
from service.domain.service import ModelService
from service.store.base import check_id


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_service(request: Request) -> ModelService:
    service: ModelService = request.app.state.service
    return service


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[ModelService, Depends(get_service)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


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
