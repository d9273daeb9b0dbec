"""``/explorer``: a page for a person with a browser, built on the public API only.

The page (plain HTML, CSS and JavaScript modules under ``service/api/explorer/static``,
no build step) generates or uploads data, fits a model as a job, and draws the points,
means and covariance ellipses itself from ``/v1/models/{id}/ellipses``. It calls the
same ``/v1`` routes any client does, with the API key the person types in, so it
needs no privileges of its own and is not part of the OpenAPI document.

Nothing is loaded from another host, so it works air-gapped, and it carries a strict
Content-Security-Policy: scripts and styles only from this origin (no inline script,
no inline style), requests only to this origin.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, JSONResponse

from service.schemas.examples import GENERATE_EXAMPLES

router = APIRouter(include_in_schema=False)

#: The page's scripts, style sheet and icon; relative links in the page resolve here,
#: so the page also works behind a proxy that serves the app under a path prefix.
ASSETS_URL = "/explorer/assets"

#: ``default-src 'none'`` first, then only what the page uses. Downloads are made from
#: ``blob:`` URLs the page creates, which no fetch directive governs.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def assets_dir() -> Path:
    """The folder of ``index.html``, ``explorer.js`` and the other files of the page."""
    return Path(str(files("service.api.explorer") / "static"))


@cache
def _index_html() -> str:
    # Read once: the file ships inside the package and never changes while serving.
    return (assets_dir() / "index.html").read_text(encoding="utf-8")


def _suggested_k(spec: dict[str, Any]) -> int | None:
    """How many components the generator drew from: the page pre-fills k with it."""
    if spec.get("kind") == "gaussian_mixture":
        return len(spec["components"])
    centers = spec.get("centers")
    return centers if isinstance(centers, int) else None


@router.get("/explorer")
async def explorer() -> HTMLResponse:
    """The page itself; everything else it needs comes from ``ASSETS_URL`` and ``/v1``."""
    return HTMLResponse(_index_html(), headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})


@router.get("/explorer/presets.json")
async def explorer_presets() -> JSONResponse:
    """The one-click data sets, from the same generator specs as the OpenAPI examples
    (``GENERATE_EXAMPLES``), so the page and Swagger UI cannot drift apart."""
    presets = [
        {
            "id": name,
            "summary": example["summary"],
            "generator": example["value"],
            "n_components": _suggested_k(example["value"]),
        }
        for name, example in GENERATE_EXAMPLES.items()
    ]
    return JSONResponse({"presets": presets})


def install(app: FastAPI) -> None:
    """Serve the page, its presets and its assets (none of them behind an API key: the
    page holds no data; the key it is given guards the ``/v1`` calls it makes)."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="explorer-assets")
    app.include_router(router)
