"""Swagger UI and ReDoc in a real headless browser, with the network cut off.

The pages are only useful if they render where the service runs, and many
deployments have no internet access. Every request the browser makes to anything
other than the service on 127.0.0.1 is aborted and recorded, and the test fails if
there was any: the pages must work from the service's own files alone.

Uses Debian's ``/usr/bin/chromium`` through Playwright (never ``playwright install``,
which downloads a browser). Skipped where that browser is missing, except in CI
(``CI`` set), where a missing browser is a failure: ``.ci/run`` installs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.helpers_browser import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.helpers_server import HOST, ServerProcess, running_server

pytestmark = pytest.mark.slow

#: ReDoc's sidebar always shows Redocly's logo from their CDN (hidden if it fails to
#: load). The pages' Content-Security-Policy refuses it before any request is made;
#: Chromium reports that refusal on the console, which is the policy working.
REFUSED_BY_POLICY = ("Loading the image 'https://cdn.redoc.ly/redoc/logo-mini.svg' violates",)
#: Generous: two shared cores, a 1.5 MB bundle to parse, and a real fit behind Execute.
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    require_chromium()
    cwd = tmp_path_factory.mktemp("docs-browser")
    with running_server({"GMM_STORE_DIR": str(cwd / "store")}, cwd=cwd) as srv:
        yield srv


class Page:
    """A browser page that may only talk to the server, and what it tried otherwise."""

    def __init__(self, page: object, origin: str) -> None:
        self.page = page
        self.origin = origin
        self.blocked: list[str] = []
        self.errors: list[str] = []


@pytest.fixture
def page(server: ServerProcess) -> Iterator[Page]:
    from playwright.sync_api import sync_playwright

    origin = f"{HOST}:{server.port}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=server.base_url)
            context.set_default_timeout(TIMEOUT_MS)
            tab = context.new_page()
            wrapped = Page(tab, origin)

            def only_the_service(route: object) -> None:
                url = route.request.url  # type: ignore[attr-defined]
                if urlsplit(url).netloc == origin:
                    route.continue_()  # type: ignore[attr-defined]
                else:
                    wrapped.blocked.append(url)
                    route.abort()  # type: ignore[attr-defined]

            context.route("**/*", only_the_service)
            tab.on("pageerror", lambda exc: wrapped.errors.append(f"page error: {exc}"))
            tab.on(
                "console",
                lambda msg: (
                    wrapped.errors.append(f"console: {msg.text}")
                    if msg.type == "error" and not msg.text.startswith(REFUSED_BY_POLICY)
                    else None
                ),
            )
            yield wrapped
        finally:
            browser.close()


def test_swagger_ui_renders_and_try_it_out_fits_the_seed_model(page: Page) -> None:
    tab = page.page
    response = tab.goto("/docs")  # type: ignore[attr-defined]
    assert response is not None and response.status == 200

    operation = tab.locator("#operations-models-create_model")  # type: ignore[attr-defined]
    operation.wait_for()
    assert tab.locator(".opblock").count() >= 15  # type: ignore[attr-defined]
    assert tab.locator("#operations-models-predict").count() == 1  # type: ignore[attr-defined]

    operation.locator(".opblock-summary").click()
    body = operation.locator(".body-param textarea")
    body.wait_for()
    assert '"n_components": 4' in body.input_value()  # the seed-blobs example, pre-filled
    assert '"random_state": 10' in body.input_value()

    try_it_out = operation.locator("button.try-out__btn")
    if try_it_out.count() and "Try it out" in try_it_out.inner_text():
        try_it_out.click()
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip().startswith("201"), status.inner_text()
    assert (
        '"algorithm": "gaussian_mixture"'
        in operation.locator(".live-responses-table .microlight").first.inner_text()
    )

    # predict's body starts as two points the 2-D seed model accepts, not [[0]]
    predict = tab.locator("#operations-models-predict")  # type: ignore[attr-defined]
    predict.locator(".opblock-summary").click()
    points = predict.locator(".body-param textarea")
    points.wait_for()
    assert "".join(points.input_value().split()) == '{"points":[[-6,5],[5,-9]]}'

    assert not page.blocked, f"requests left 127.0.0.1: {page.blocked}"
    assert not page.errors, page.errors


def test_redoc_renders(page: Page) -> None:
    tab = page.page
    response = tab.goto("/redoc")  # type: ignore[attr-defined]
    assert response is not None and response.status == 200
    heading = tab.get_by_role("heading", name="Fit a model and store it")  # type: ignore[attr-defined]
    heading.first.wait_for()
    assert tab.get_by_text("Draw points from a mixture").count() >= 1  # type: ignore[attr-defined]
    assert not page.blocked, f"requests left 127.0.0.1: {page.blocked}"
    assert not page.errors, page.errors
