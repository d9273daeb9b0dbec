"""The gRPC server: started in the app's lifespan, on its event loop, when
``GMM_GRPC_PORT`` is set (``service.main``), and stopped gracefully at shutdown.

With several uvicorn workers, each worker's app starts its own server on the same
port: grpc sets SO_REUSEPORT (asked for explicitly here), so the kernel spreads new
connections over the workers as it does for uvicorn's shared socket.

Every bound of HTTP has its counterpart: a message is at most ``max_body_bytes``
(grpc answers RESOURCE_EXHAUSTED past it, before the handler runs), a worker runs at
most ``max_connections`` calls at once (RESOURCE_EXHAUSTED past it), and a connection
idle for ``timeout_keep_alive`` seconds is closed. An answer is bounded by what the
request may ask (``max_points`` rows of at most ``max_components`` numbers).
"""

from __future__ import annotations

import logging

import grpc

from service.api.metrics import Metrics
from service.api.security import KeyRing
from service.config import Settings
from service.grpc.generated import open_inference_grpc_pb2_grpc as pb_grpc
from service.grpc.servicer import SERVICE, Servicer
from service.services import Services

#: uvicorn's own logger: the line goes out beside "Uvicorn running on ...".
log = logging.getLogger("uvicorn.error")

#: How long in-flight calls may take to finish once the app shuts down; then they are
#: cancelled. uvicorn has already stopped taking HTTP requests by then.
SHUTDOWN_GRACE_SECONDS = 5.0
#: grpc's message limits are C ints.
_MAX_MESSAGE_BYTES = 2**31 - 1


def address(host: str, port: int) -> str:
    """``host:port`` as grpc parses it (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def start(
    settings: Settings, services: Services, keyring: KeyRing, metrics: Metrics
) -> grpc.aio.Server:
    """A started ``grpc.aio`` server of ``inference.GRPCInferenceService`` on
    ``settings.host:settings.grpc_port``; RuntimeError naming the address when it cannot
    listen there."""
    assert settings.grpc_port is not None
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            (
                "grpc.max_receive_message_length",
                min(settings.max_body_bytes, _MAX_MESSAGE_BYTES),
            ),
            ("grpc.max_connection_idle_ms", settings.timeout_keep_alive * 1000),
        ],
        maximum_concurrent_rpcs=settings.max_connections,
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(services, keyring, metrics), server)
    where = address(settings.host, settings.grpc_port)
    try:
        server.add_insecure_port(where)
    except RuntimeError as exc:
        raise RuntimeError(f"gRPC cannot listen on {where} (GMM_GRPC_PORT): {exc}") from exc
    await server.start()
    log.info("serving %s over gRPC on %s", SERVICE, where)
    return server


async def stop(server: grpc.aio.Server) -> None:
    """Refuse new calls, let those in flight finish for ``SHUTDOWN_GRACE_SECONDS``."""
    await server.stop(SHUTDOWN_GRACE_SECONDS)
