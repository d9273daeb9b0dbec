"""``/explorer`` in a real headless browser against a real server, network cut off.

Each scenario is what a person does with the page: generate or upload data, fit,
look at the drawing, hover a point, run a model selection, cancel a long fit,
download the model. The server requires an API key, so every scenario also shows
that the key typed into the page reaches the API.

As in ``tests/test_docs_browser.py``: every request to anything other than the
service on 127.0.0.1 is aborted and recorded (there must be none), and so are
console errors and uncaught page errors (there must be none, except the failed
requests a scenario provokes on purpose). Uses Debian's ``/usr/bin/chromium``
through Playwright; skipped where that browser is missing, except in CI (``CI``
set), where that is a failure.

Screenshots and the downloaded export are saved under ``test-artifacts/explorer/``,
for a person to look at what the browser drew.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from tests.helpers_browser import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.helpers_server import HOST, ServerProcess, running_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "explorer"
API_KEY = "explorer-test-key"
#: Generous: two shared cores, and real fits behind the buttons.
TIMEOUT_MS = 60_000
#: Chromium's console line for a request answered with an error status.
FAILED_REQUEST = "Failed to load resource: the server responded with a status of {}"
#: n_init of the fit the cancel scenario starts: minutes of EM, unless cancelled.
LONG_N_INIT = 5000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    require_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cwd = tmp_path_factory.mktemp("explorer-browser")
    env = {
        "GMM_STORE_DIR": str(cwd / "store"),
        "GMM_API_KEYS": API_KEY,
        # Room for a fit long enough to be cancelled by hand (the default allows 100).
        "GMM_MAX_N_INIT": str(LONG_N_INIT),
    }
    with running_server(env, cwd=cwd) as srv:
        yield srv


class Explorer:
    """The page in a browser that may only talk to the server, and what went wrong."""

    def __init__(self, tab: Any, origin: str) -> None:
        self.tab = tab
        self.origin = origin
        self.blocked: list[str] = []
        self.errors: list[str] = []
        #: Statuses a scenario provokes on purpose: their console lines are expected.
        self.expected_statuses: set[int] = set()

    def on_console(self, msg: Any) -> None:
        if msg.type != "error":
            return
        if any(msg.text.startswith(FAILED_REQUEST.format(s)) for s in self.expected_statuses):
            return
        self.errors.append(f"console: {msg.text}")

    def open(self, *, key: str | None = API_KEY) -> None:
        response = self.tab.goto("/explorer")
        assert response is not None and response.status == 200
        self.expect(self.tab.locator("#presets button")).to_have_count(2)
        if key is not None:
            self.tab.get_by_label("API key (optional)").fill(key)

    def expect(self, locator: Any) -> Any:
        from playwright.sync_api import expect

        expect.set_options(timeout=TIMEOUT_MS)
        return expect(locator)

    def generate(self, preset: str) -> None:
        self.tab.locator(f"#presets button[data-preset='{preset}']").click()
        self.expect(self.tab.locator("#data-status")).to_contain_text("points")

    def fit(self) -> None:
        self.tab.get_by_role("button", name="Fit", exact=True).click()
        self.expect(self.tab.locator("#job-status")).to_contain_text("fit succeeded")

    def screenshot(self, name: str) -> None:
        self.tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def assert_clean(self) -> None:
        assert not self.blocked, f"requests left 127.0.0.1: {self.blocked}"
        assert not self.errors, self.errors


@pytest.fixture
def page(server: ServerProcess) -> Iterator[Explorer]:
    from playwright.sync_api import sync_playwright

    origin = f"{HOST}:{server.port}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                base_url=server.base_url,
                accept_downloads=True,
                viewport={"width": 1200, "height": 1400},
            )
            context.set_default_timeout(TIMEOUT_MS)
            tab = context.new_page()
            explorer = Explorer(tab, origin)

            def only_the_service(route: Any) -> None:
                url = route.request.url
                if urlsplit(url).netloc == origin:
                    route.continue_()
                else:
                    explorer.blocked.append(url)
                    route.abort()

            context.route("**/*", only_the_service)
            tab.on("pageerror", lambda exc: explorer.errors.append(f"page error: {exc}"))
            tab.on("console", explorer.on_console)
            yield explorer
        finally:
            browser.close()


def _membership(tab: Any, kind: str) -> list[float]:
    """The readout's numbers: ``data-probability`` or ``data-distance`` of each item."""
    items = tab.locator(f"#membership li[data-{kind}]")
    return [float(items.nth(i).get_attribute(f"data-{kind}")) for i in range(items.count())]


def _hover_point(tab: Any, index: int) -> None:
    """Move the mouse to a point's centre (whatever is drawn on top gets the event, as
    for a person; Playwright's ``hover`` would wait for the point to be uncovered)."""
    box = tab.locator("#scatter circle.point").nth(index).bounding_box()
    tab.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def test_seed_blobs_gaussian_mixture_membership_and_export(page: Explorer) -> None:
    tab = page.tab
    page.open()
    page.generate("seed-blobs")
    points = tab.locator("#scatter circle.point")
    page.expect(points).to_have_count(200)
    assert tab.locator("#n-components").input_value() == "4"  # the preset's k

    tab.get_by_label("Algorithm").select_option("gaussian_mixture")
    tab.get_by_label("covariance_type").select_option("full")
    tab.get_by_label("random_state (empty: none)").fill("0")
    page.fit()
    page.expect(tab.locator("#job-progress")).to_have_attribute("value", "1")

    page.expect(tab.locator("#scatter ellipse.sigma")).to_have_count(12)
    assert tab.locator("#scatter .mean").count() == 4
    assert points.count() == 200
    for n_sigma in (1, 2, 3):
        assert tab.locator(f"#scatter ellipse.sigma-{n_sigma}").count() == 4
    # Points are coloured by their fitted label: one colour per component.
    colours = {points.nth(i).get_attribute("fill") for i in range(200)}
    assert len(colours) == 4
    page.expect(tab.locator("#model-summary")).to_contain_text("gaussian_mixture")

    _hover_point(tab, 0)
    page.expect(tab.locator("#membership li[data-probability]")).to_have_count(4)
    probabilities = _membership(tab, "probability")
    assert math.isclose(sum(probabilities), 1.0, abs_tol=1e-6), probabilities
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    page.screenshot("gaussian-mixture-seed-blobs")

    # The keyboard reaches the same readout: focus the plot, step with the arrows.
    head = tab.locator("#membership .point-head")
    hovered = int(head.inner_text().split()[1].rstrip(":"))
    tab.locator("#scatter").focus()
    tab.keyboard.press("ArrowRight")
    page.expect(head).to_contain_text(f"Point {hovered + 1}:")
    tab.keyboard.press("ArrowLeft")
    page.expect(head).to_contain_text(f"Point {hovered}:")
    assert len(_membership(tab, "probability")) == 4

    with tab.expect_download() as info:
        tab.get_by_role("button", name="Download export (JSON)").click()
    download = info.value
    target = ARTIFACTS / "export.json"
    download.save_as(str(target))
    document = json.loads(target.read_text(encoding="utf-8"))
    model_id = tab.locator("#model-summary dd").nth(1).inner_text()
    assert download.suggested_filename == f"gmm-model-{model_id}.json"
    assert document["format"] == "gmm-service.model"
    assert document["algorithm"] == "gaussian_mixture"
    assert document["source"]["model_id"] == model_id
    assert np.asarray(document["means"]).shape == (4, 2)
    page.assert_clean()


def test_kmeans_on_the_notebook_gaussians(page: Explorer) -> None:
    tab = page.tab
    page.open()
    page.generate("notebook-ellipses")
    page.expect(tab.locator("#scatter circle.point")).to_have_count(2000)
    assert tab.locator("#n-components").input_value() == "2"

    tab.get_by_label("Algorithm").select_option("kmeans")
    page.expect(tab.locator("#n-components-label")).to_have_text("n_clusters")
    assert tab.get_by_label("covariance_type").is_disabled()
    tab.get_by_label("n_init").fill("3")
    page.fit()

    page.expect(tab.locator("#scatter .mean")).to_have_count(2)
    assert tab.locator("#scatter ellipse.sigma").count() == 0  # k-means has no covariances
    page.expect(tab.locator("#model-summary")).to_contain_text("inertia")
    _hover_point(tab, 10)
    page.expect(tab.locator("#membership li[data-distance]")).to_have_count(2)
    assert all(d >= 0 for d in _membership(tab, "distance"))
    page.screenshot("kmeans-notebook-gaussians")
    page.assert_clean()


def test_model_selection_curve_marks_the_best_k(page: Explorer) -> None:
    tab = page.tab
    page.open()
    page.generate("seed-blobs")
    tab.get_by_label("random_state (empty: none)").fill("0")
    tab.get_by_label("k from 1 to").fill("8")
    tab.get_by_label("Best by").select_option("bic")
    tab.get_by_role("button", name="Run model selection").click()

    best = tab.locator("#criterion-curve circle.best")
    page.expect(best).to_have_count(1)
    assert best.get_attribute("data-k") == "4"  # the notebook's answer for its blobs
    for series in ("bic", "aic"):
        line = tab.locator(f"#criterion-curve .series-{series} polyline")
        assert line.count() == 1
        assert len(line.get_attribute("points").split()) == 8  # k = 1 .. 8
        assert tab.locator(f"#criterion-curve .series-{series} circle.cell").count() == 8
    page.expect(tab.locator("#selection-status")).to_contain_text("Best k = 4 by BIC")
    page.expect(tab.locator("#job-status")).to_contain_text("model_selection succeeded: 8 / 8")
    page.screenshot("model-selection-bic")
    page.assert_clean()


def _three_feature_csv() -> bytes:
    """Two well separated clusters in 3-D, with a header row."""
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(0, 1, (20, 3)), rng.normal(8, 1, (20, 3))])
    out = io.StringIO()
    out.write("a,b,c\n")
    np.savetxt(out, X, delimiter=",", fmt="%.6f")
    return out.getvalue().encode()


def test_csv_upload_of_three_features_is_drawn_on_principal_components(page: Explorer) -> None:
    tab = page.tab
    page.open()
    tab.get_by_label("Upload a CSV file (numbers only, optional header row)").set_input_files(
        files=[{"name": "three.csv", "mimeType": "text/csv", "buffer": _three_feature_csv()}]
    )
    page.expect(tab.locator("#data-status")).to_contain_text("40 points, 3 features")
    page.expect(tab.locator("#projection")).to_contain_text("showing the first two (feature 0")
    page.expect(tab.locator("#scatter circle.point")).to_have_count(40)

    tab.get_by_label("n_components").fill("2")
    page.fit()
    page.expect(tab.locator("#scatter ellipse.sigma")).to_have_count(6)
    assert tab.locator("#scatter .mean").count() == 2
    page.expect(tab.locator("#projection")).to_contain_text("first two principal components")
    _hover_point(tab, 0)
    page.expect(tab.locator("#membership li[data-probability]")).to_have_count(2)
    assert math.isclose(sum(_membership(tab, "probability")), 1.0, abs_tol=1e-6)
    page.screenshot("csv-three-features-pca")
    page.assert_clean()


def test_cancel_a_long_fit(page: Explorer) -> None:
    tab = page.tab
    page.open()
    page.generate("notebook-ellipses")
    tab.get_by_label("n_components").fill("8")
    tab.get_by_label("n_init").fill(str(LONG_N_INIT))
    tab.get_by_role("button", name="Fit", exact=True).click()
    status = tab.locator("#job-status")
    page.expect(status).to_contain_text("fit running")
    assert tab.get_by_role("button", name="Fit", exact=True).is_disabled()  # one job at a time
    tab.get_by_role("button", name="Cancel").click()
    page.expect(status).to_contain_text("fit cancelled")
    assert tab.get_by_role("button", name="Cancel").is_disabled()
    page.expect(tab.get_by_role("button", name="Fit", exact=True)).to_be_enabled()
    assert tab.locator("#scatter ellipse.sigma").count() == 0  # nothing was stored or drawn
    page.screenshot("cancelled-fit")
    page.assert_clean()


def test_problems_are_shown_readably(page: Explorer) -> None:
    """A missing key (401) and a bad CSV (422 with its field errors), as a person sees them."""
    tab = page.tab
    page.expected_statuses = {401, 422}
    page.open(key=None)
    tab.locator("#presets button[data-preset='seed-blobs']").click()
    problem = tab.get_by_role("alert")
    page.expect(problem).to_contain_text("Missing or invalid API key (401)")
    assert tab.locator("#scatter circle.point").count() == 0

    tab.get_by_label("API key (optional)").fill(API_KEY)
    bad = b"x,y\n1,2\n3,oops\n"
    tab.get_by_label("Upload a CSV file (numbers only, optional header row)").set_input_files(
        files=[{"name": "bad.csv", "mimeType": "text/csv", "buffer": bad}]
    )
    page.expect(problem.locator(".problem-title")).to_contain_text("(422)")
    page.expect(problem.locator(".problem-detail")).to_contain_text("body.1.1: ")
    # Once, with its place: the detail and the one field error said the same thing.
    assert problem.inner_text().count("'oops' is not a number") == 1
    assert problem.locator(".problem-errors li").count() == 0
    page.screenshot("problem-bad-csv")

    # Good data clears the box.
    page.generate("seed-blobs")
    page.expect(problem).to_be_hidden()
    page.assert_clean()


def _open_url(page: Explorer, ref: str) -> None:
    """Open ``/explorer?model=ref`` with the key already in the tab's session, as a
    link followed from another page of the same browser would."""
    page.tab.add_init_script(f"sessionStorage.setItem('gmm-explorer-api-key', {API_KEY!r})")
    response = page.tab.goto(f"/explorer?model={ref}")
    assert response is not None and response.status == 200


def test_a_stored_model_opens_from_the_url_with_its_points_and_curve(
    page: Explorer, server: ServerProcess
) -> None:
    """``/explorer?model=<id or name>``: a model stored by a model selection opens with
    its training points, means, ellipses and the curve it won on."""
    body = {
        "data": {"generator": {"kind": "blobs", "n_samples": 200, "n_features": 2,
                               "centers": 4, "cluster_std": 1.6, "random_state": 10}},
        "grid": {"n_components": {"min": 1, "max": 6}},
        "params": {"random_state": 0},
        "store_best": True,
        "name": "seed-best-of-six",
        "wait": True,
    }  # fmt: skip
    r = server.client.post("/v1/model-selection", json=body, headers={"X-API-Key": API_KEY})
    assert r.status_code == 200, r.text
    model_id = r.json()["best"]["model_id"]
    tab = page.tab
    _open_url(page, "seed-best-of-six")
    page.expect(tab.locator("#scatter circle.point")).to_have_count(200)
    page.expect(tab.locator("#scatter ellipse.sigma")).to_have_count(12)
    assert tab.locator("#scatter .mean").count() == 4
    best = tab.locator("#criterion-curve circle.best")
    page.expect(best).to_have_count(1)
    assert best.get_attribute("data-k") == "4"
    page.expect(tab.locator("#selection-status")).to_contain_text("won a model selection by BIC")
    # The id stays on one line, cut if it must be, whole in its title.
    ident = tab.locator("#model-summary dd.id").first
    assert ident.get_attribute("title") == model_id
    assert ident.evaluate("e => getComputedStyle(e).whiteSpace") == "nowrap"
    line = float(ident.evaluate("e => parseFloat(getComputedStyle(e).lineHeight)"))
    assert ident.bounding_box()["height"] < 1.5 * line
    page.screenshot("stored-model-from-url")
    # By id too, and the points match the model's.
    _open_url(page, model_id)
    page.expect(tab.locator("#scatter ellipse.sigma")).to_have_count(12)
    page.expect(tab.locator("#data-status")).to_contain_text("200 points")
    page.assert_clean()


def test_ellipses_stay_visible_over_dense_points(page: Explorer) -> None:
    """2,000 points hid the 1-sigma ellipses: the points are translucent now, and each
    ellipse has a light halo, drawn over the points yet transparent to the pointer."""
    tab = page.tab
    page.open()
    page.generate("notebook-ellipses")
    tab.get_by_label("Algorithm").select_option("gaussian_mixture")
    tab.get_by_label("random_state (empty: none)").fill("0")
    page.fit()
    page.expect(tab.locator("#scatter ellipse.sigma")).to_have_count(6)
    assert tab.locator("#scatter ellipse.halo").count() == 6
    # The job line says what the fit did, not "100 / 100 iterations".
    n_iter = tab.locator("#model-summary dt:text-is('n_iter') + dd").inner_text()
    page.expect(tab.locator("#job-status")).to_contain_text(f"after {n_iter} EM iterations")
    order = tab.evaluate(
        """() => [...document.querySelectorAll('#scatter circle.point, #scatter ellipse')]
              .map((e) => e.classList[0])"""
    )
    assert order.index("halo") > max(i for i, kind in enumerate(order) if kind == "point")
    for kind in ("halo", "sigma"):  # each halo right under its ellipse
        assert order.count(kind) == 6
    assert [k for k in order if k != "point"] == ["halo", "sigma"] * 6
    point = tab.locator("#scatter circle.point").first
    assert float(point.evaluate("e => getComputedStyle(e).fillOpacity")) < 1
    box = point.bounding_box()
    hit = tab.evaluate(
        "([x, y]) => document.elementFromPoint(x, y).getAttribute('class')",
        [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2],
    )
    assert hit == "point"  # ellipses and halos let the pointer through to the points
    page.screenshot("dense-ellipses")
    page.assert_clean()
