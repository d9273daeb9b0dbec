"""Swagger UI and ReDoc served entirely by the service: no CDN, so they work air-gapped.

FastAPI's default pages load their JavaScript and CSS from a CDN; without internet
access they stay blank. This is FastAPI's self-hosting recipe with the files that the
``fastapi-offline`` package ships (Swagger UI 5 and ReDoc 2's standalone bundle, kept
up to date there rather than pasted into this repository).

Each page carries its own Content-Security-Policy: scripts only from this origin plus
the one inline Swagger initialiser, allowed by its hash, so an injected script cannot
run even on the pages that execute JavaScript.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

#: Where the assets are mounted: under /docs, so the pages and their files share one
#: prefix (and one policy in ``service.api.middleware``).
ASSETS_URL = "/docs/assets"

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def assets_dir() -> Path:
    """The package's folder of swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js."""
    return Path(str(files("fastapi_offline") / "static"))


def content_security_policy(html: str) -> str:
    """A policy for ``html``: its inline scripts by hash, everything else same-origin.

    Styles need ``'unsafe-inline'``: both UIs set element styles from JavaScript.
    ReDoc runs its search index in a worker made from a ``blob:`` URL, and Swagger UI
    draws its icons as ``data:`` images.
    """
    hashes = " ".join(
        "'sha256-{}'".format(
            base64.b64encode(hashlib.sha256(script.encode()).digest()).decode("ascii")
        )
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}".rstrip()
        + "; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; "
        "connect-src 'self'; worker-src 'self' blob:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def _page(html: str) -> HTMLResponse:
    return HTMLResponse(html, headers={"Content-Security-Policy": content_security_policy(html)})


def install(app: FastAPI) -> None:
    """Serve ``/docs``, ``/redoc`` and their assets; the app must be built with
    ``docs_url=None, redoc_url=None`` so that FastAPI's CDN pages do not exist."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    parameters = {
        **(app.swagger_ui_parameters or {}),
        # The public validator badge would call a remote service with our document.
        "validatorUrl": None,
    }

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        response = get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=parameters,
        )
        return _page(bytes(response.body).decode())

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        response = get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        return _page(bytes(response.body).decode())
