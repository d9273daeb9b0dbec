"""What the Open Inference Protocol does, whichever transport carries it: find the
model a request names, check the version, decode off the loop when it is large, and
predict. ``service.api.v2.routes`` (REST) and ``service.grpc.servicer`` (gRPC) call
these, so that both answer the same model, the same numbers and the same errors
(MLServer's data plane: it knows nothing of HTTP or gRPC).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from service import __version__
from service.api.offload import answer_points
from service.domain.inference.service import Inference
from service.domain.records import ModelResource
from service.errors import Loc, NotFound

#: Server metadata's ``extensions``.
EXTENSIONS = ["binary_tensor_data"]
#: Requests from this size on (bytes of the body, or of the tensors) are decoded in the
#: threadpool, as ``/v1`` JSON bodies are.
INLINE_BYTES = 64 * 1024

T = TypeVar("T")


def server_metadata() -> dict[str, Any]:
    """The protocol's server metadata: ``name``, ``version``, ``extensions``."""
    return {"name": "gmm-service", "version": __version__, "extensions": EXTENSIONS}


async def find_model(inference: Inference, model: str, version: str | None) -> ModelResource:
    """The resource of the model ``model`` names (an id, or the newest model of a name),
    at ``version`` (``None``: any; else ``1`` or the model id).

    Inline for a cached id of a local store (the hot path of infer), else in the
    threadpool (metadata reads, and a walk of the listing for a name)."""
    resource = inference.ready_resource(model)
    if resource is None:
        resource = await run_in_threadpool(inference.find, model)
    return at_version(resource, model, version)


def at_version(resource: ModelResource, model: str, version: str | None) -> ModelResource:
    """``resource`` when ``version`` names it (``None``, ``1`` or its id), else
    ``NotFound``: the protocol's versions of a model are ``1`` and its id."""
    if version is not None and version not in ("1", resource["id"]):
        raise NotFound(
            f"Model {model!r} has no version {version!r}; use '1' or {resource['id']!r}."
        )
    return resource


async def run_by_size(work: Callable[[], T], n_bytes: int) -> T:
    """``work()`` (decoding or encoding ``n_bytes`` of tensors) on the loop when it is
    small, in the threadpool when it is large."""
    if n_bytes < INLINE_BYTES:
        return work()
    return await run_in_threadpool(work)


async def predict(inference: Inference, model_id: str, points: Any, loc: Loc) -> dict[str, Any]:
    """``Inference.predict`` of ``points`` (``(n_points, n_features)`` float64), where
    ``/v1`` predict would run it (``answer_points``); a refusal names ``loc``."""
    return await answer_points(inference, model_id, points, partial(inference.predict, loc=loc))
