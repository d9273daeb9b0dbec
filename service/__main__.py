"""``python -m service``: uvicorn with the ``GMM_*`` settings."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import uvicorn

from service.config import Settings
from service.grpc import require_extra


def _share_metrics(settings: Settings) -> None:
    """Point every worker at one folder for Prometheus' multiprocess files.

    prometheus-client decides at import time, from ``PROMETHEUS_MULTIPROC_DIR``, whether
    its values live in per-process memory or in files that ``/metrics`` adds up; the
    workers are spawned after this and inherit the environment. Stale files of an
    earlier run would be added to the new counts, so the folder is emptied first.
    """
    folder = settings.metrics_dir
    if folder is None:
        if settings.workers == 1:
            return
        folder = Path(tempfile.mkdtemp(prefix="gmm-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ["GMM_METRICS_DIR"] = str(folder)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def main() -> None:
    settings = Settings()
    if settings.grpc_port is not None:
        try:
            require_extra()  # said once, before any worker starts (the app says it too)
        except RuntimeError as exc:
            raise SystemExit(f"gmm-service: {exc}") from None
    _share_metrics(settings)
    uvicorn.run(
        # Each worker process builds its own app: importing service.main builds none.
        "service.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        timeout_keep_alive=settings.timeout_keep_alive,
        # Request headers get a deadline, and the connection cap a problem+json 503.
        # Named, not imported: uvicorn imports it when it loads the app, after
        # _share_metrics, which must run before anything imports prometheus-client.
        http="service.api.connections:EdgeHttpToolsProtocol",
        limit_concurrency=settings.max_connections,
        # The service logs each request itself, as one JSON line (api/middleware.py).
        access_log=False,
        # No "server: uvicorn" on every answer: it tells a scanner what to try, and
        # costs each answer a header's checks (about 1 us of a one-point predict).
        server_header=False,
    )


if __name__ == "__main__":
    main()
