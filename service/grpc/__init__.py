"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on
``GMM_GRPC_PORT``, beside the REST form under ``/v2`` (``service.api.v2``).

A transport, no more: ``servicer`` decodes protobuf messages with the checks of
``service.api.v2.protocol`` (``codec``), answers through ``service.api.v2.dataplane``
with the app's services, and checks API keys with ``service.api.security``, so that
both transports find the same model, answer the same numbers and refuse with the same
words. ``server`` starts it on the app's event loop (``service.main``'s lifespan).

grpcio and protobuf are the ``grpc`` extra: this module imports neither, so the app can
say what is missing; its submodules need them.
"""

from __future__ import annotations

from importlib.util import find_spec

MISSING_EXTRA = (
    "GMM_GRPC_PORT is set, but grpcio and protobuf are not installed: install the "
    "service with its `grpc` extra (pip install 'gmm-service[grpc]'), or unset "
    "GMM_GRPC_PORT."
)


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ImportError:  # its parent package (``google``) is missing
        return False


def require_extra() -> None:
    """RuntimeError naming the ``grpc`` extra when grpcio or protobuf is missing.

    Looked up, not imported: ``python -m service`` checks before uvicorn spawns its
    workers, and importing grpc in that parent process would be wasted work."""
    if not (_installed("grpc") and _installed("google.protobuf")):
        raise RuntimeError(MISSING_EXTRA)
