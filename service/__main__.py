"""``python -m service``: uvicorn with the ``GMM_*`` settings."""

from __future__ import annotations

import uvicorn

from service.config import Settings


def main() -> None:
    settings = Settings()
    uvicorn.run(
        "service.main:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        timeout_keep_alive=settings.timeout_keep_alive,
        # The service logs each request itself, as one JSON line (api/middleware.py).
        access_log=False,
    )


if __name__ == "__main__":
    main()
