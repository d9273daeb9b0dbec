"""``/explorer`` over HTTP: the page, its presets and its assets, as a browser gets them.

The browser test (``tests/test_explorer_browser.py``) shows the page working; this one
pins down what makes it safe to serve and work offline: content types a browser will
execute (a module script served as ``text/plain`` is refused), the page's own strict
Content-Security-Policy, no URL of another host anywhere, and no API key needed for
files that hold no data.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.explorer.routes import ASSETS_URL, assets_dir
from service.config import Settings
from service.main import create_app
from service.schemas.examples import NOTEBOOK_ELLIPSES, SEED_BLOBS

#: Every file the page is made of, with the media type a browser needs for it.
ASSETS = {
    "explorer.js": "text/javascript",
    "api.js": "text/javascript",
    "plot.js": "text/javascript",
    "explorer.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
#: An absolute http(s) URL. The SVG namespace is a name, never fetched: it is allowed.
_URL = re.compile(r"https?://[^\s\"'<>)]+")
_ALLOWED_URLS = {"http://www.w3.org/2000/svg"}


def _directives(policy: str) -> dict[str, str]:
    parts = (d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    return {p[0]: (p[1] if len(p) > 1 else "") for p in parts}


def test_page_is_html_with_a_strict_policy(client: TestClient) -> None:
    response = client.get("/explorer")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = _directives(response.headers["content-security-policy"])
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"  # no inline script, no eval, no hashes
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert "<script>" not in response.text  # every script is a file, as the policy needs
    assert ' style="' not in response.text


def test_every_asset_is_served_with_its_type(client: TestClient) -> None:
    page = client.get("/explorer").text
    for name, media_type in ASSETS.items():
        response = client.get(f"{ASSETS_URL}/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].split(";")[0] == media_type, name
    # The page links its entry points relative to itself, so a path prefix works too.
    assert 'src="explorer/assets/explorer.js"' in page
    assert 'href="explorer/assets/explorer.css"' in page
    # Every file in the folder is one the tests know about (and so ships checked).
    assert {p.name for p in assets_dir().iterdir()} == {*ASSETS, "index.html"}


def test_nothing_refers_to_another_host(client: TestClient) -> None:
    bodies = {"/explorer": client.get("/explorer").text}
    for name in ASSETS:
        bodies[name] = client.get(f"{ASSETS_URL}/{name}").text
    for name, body in bodies.items():
        foreign = set(_URL.findall(body)) - _ALLOWED_URLS
        assert not foreign, f"{name} refers to another host: {sorted(foreign)}"
        assert "//cdn" not in body and "@import" not in body, name


def test_presets_are_the_openapi_generator_examples(client: TestClient) -> None:
    response = client.get("/explorer/presets.json")
    assert response.status_code == 200
    presets = {p["id"]: p for p in response.json()["presets"]}
    assert presets["seed-blobs"]["generator"] == SEED_BLOBS
    assert presets["seed-blobs"]["n_components"] == 4
    assert presets["notebook-ellipses"]["generator"] == NOTEBOOK_ELLIPSES
    assert presets["notebook-ellipses"]["n_components"] == 2
    # Each preset is a body generate_dataset accepts as it is.
    for preset in presets.values():
        assert client.post("/v1/datasets/generate", json=preset["generator"]).status_code == 200


def test_not_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/explorer")]


@pytest.mark.parametrize("path", ["/explorer", "/explorer/presets.json", f"{ASSETS_URL}/api.js"])
def test_open_without_an_api_key(tmp_path: Path, path: str) -> None:
    """The page must load before anyone has typed a key into it; /v1 stays guarded."""
    settings = Settings(store_dir=tmp_path / "store", api_keys="secret-key")
    with TestClient(create_app(settings)) as client:
        assert client.get(path).status_code == 200
        assert client.get("/v1/models").status_code == 401
