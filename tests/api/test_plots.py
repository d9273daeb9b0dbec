"""Plots and ellipses over HTTP: decoded PNGs, parsed SVGs, geometry equal to sklearn's."""

from __future__ import annotations

import io
import math
import struct
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from matplotlib import colormaps
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from tests.conftest import SEED_BLOBS

RTOL = 1e-10
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
UNKNOWN_ID = "0123456789abcdef0123456789ab"


def _fit(client: TestClient, body: dict[str, Any]) -> str:
    r = client.post("/v1/models", json={"include": [], **body})
    assert r.status_code == 201, r.text
    model_id: str = r.json()["id"]
    return model_id


def _gm(client: TestClient, generator: dict[str, Any], **params: Any) -> str:
    return _fit(
        client,
        {
            "algorithm": "gaussian_mixture",
            "params": {"random_state": 0, **params},
            "data": {"generator": generator},
        },
    )


def _png_size(content: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first."""
    assert content[:8] == PNG_SIGNATURE
    assert content[12:16] == b"IHDR"
    width, height = struct.unpack(">II", content[16:24])
    return width, height


def _pixels(content: bytes) -> np.ndarray:
    """(height, width, 3) floats in [0, 1]."""
    with Image.open(io.BytesIO(content)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


def _has_colour(pixels: np.ndarray, rgb: np.ndarray, min_pixels: int = 10) -> bool:
    """Points are drawn with alpha over white, so accept the colour or its blend."""
    flat = pixels.reshape(-1, 3)
    for shade in (rgb, 0.75 * rgb + 0.25, 0.5 * rgb + 0.5):
        if np.sum(np.linalg.norm(flat - shade, axis=1) < 0.06) >= min_pixels:
            return True
    return False


def _assert_problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    return body


def _svg_root(content: bytes) -> ET.Element:
    root = ET.fromstring(content)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def _svg_paths(root: ET.Element) -> list[ET.Element]:
    return root.findall(".//{http://www.w3.org/2000/svg}path")


def _seed_gm(covariance_type: str = "full") -> tuple[np.ndarray, GaussianMixture]:
    X, _ = make_blobs(n_samples=200, n_features=2, centers=4, cluster_std=1.6, random_state=10)
    gm = GaussianMixture(4, covariance_type=covariance_type, random_state=0).fit(X)
    return X, gm


# -- PNG ---------------------------------------------------------------------------
def test_png_has_the_requested_size_and_shows_coloured_clusters(client: TestClient) -> None:
    model_id = _gm(client, SEED_BLOBS, n_components=4)
    r = client.get(f"/v1/models/{model_id}/plot", params={"width": 400, "height": 320, "dpi": 80})
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert _png_size(r.content) == (400, 320)
    pixels = _pixels(r.content)
    assert pixels.shape == (320, 400, 3)
    assert pixels.var() > 0
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10
    # Each of the 4 components has its own colour (tab10), and the means are black.
    palette = np.asarray(colormaps["tab10"].colors)
    for rgb in palette[:4]:
        assert _has_colour(pixels, rgb), rgb
    for rgb in palette[4:7]:  # no fifth component: the detector is not fooled
        assert not _has_colour(pixels, rgb), rgb
    assert _has_colour(pixels, np.zeros(3))


def test_png_defaults_to_640_by_480(client: TestClient) -> None:
    model_id = _gm(client, SEED_BLOBS, n_components=4)
    r = client.get(f"/v1/models/{model_id}/plot")
    assert r.status_code == 200
    assert _png_size(r.content) == (640, 480)
    assert r.headers["content-disposition"] == f'inline; filename="model-{model_id}.png"'


@pytest.mark.parametrize("covariance_type", ["tied", "diag", "spherical"])
def test_png_for_every_covariance_type(client: TestClient, covariance_type: str) -> None:
    model_id = _gm(client, SEED_BLOBS, n_components=4, covariance_type=covariance_type)
    r = client.get(f"/v1/models/{model_id}/plot", params={"width": 150, "height": 150, "dpi": 50})
    assert r.status_code == 200
    assert _png_size(r.content) == (150, 150)
    assert _pixels(r.content).var() > 0


# -- SVG ---------------------------------------------------------------------------
def test_svg_parses_with_ellipse_paths_and_size_in_points(client: TestClient) -> None:
    model_id = _gm(client, SEED_BLOBS, n_components=4)
    r = client.get(f"/v1/models/{model_id}/plot", params={"format": "svg", "width": 500})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("image/svg+xml")
    root = _svg_root(r.content)
    assert float(root.attrib["width"].removesuffix("pt")) == pytest.approx(5 * 72)
    assert float(root.attrib["height"].removesuffix("pt")) == pytest.approx(4.8 * 72)
    # 4 components x 3 sigmas of ellipses, on top of axes, ticks and glyphs.
    assert len(_svg_paths(root)) > 12
    assert "4 components, full covariance" in r.text  # matplotlib keeps text as comments


# -- projections -------------------------------------------------------------------
BLOBS_3D = {"kind": "blobs", "n_samples": 300, "n_features": 3, "centers": 3, "random_state": 5}


def test_three_features_are_projected_on_principal_components(client: TestClient) -> None:
    model_id = _gm(client, BLOBS_3D, n_components=3)
    X, _ = make_blobs(n_samples=300, n_features=3, centers=3, random_state=5)
    gm = GaussianMixture(3, random_state=0).fit(X)
    pca = PCA(n_components=2, random_state=0).fit(X)

    r = client.get(f"/v1/models/{model_id}/ellipses")
    assert r.status_code == 200
    doc = r.json()
    assert doc["projection"] == "pca" and doc["n_features"] == 3
    np.testing.assert_allclose(doc["pca"]["components"], pca.components_, rtol=RTOL)
    np.testing.assert_allclose(doc["pca"]["mean"], pca.mean_, rtol=RTOL)
    np.testing.assert_allclose(
        doc["pca"]["explained_variance_ratio"], pca.explained_variance_ratio_, rtol=RTOL
    )
    V = pca.components_
    for item, mean, cov, weight in zip(
        doc["components"], pca.transform(gm.means_), gm.covariances_, gm.weights_, strict=True
    ):
        np.testing.assert_allclose(item["mean"], mean, rtol=RTOL, atol=1e-12)
        np.testing.assert_allclose(item["weight"], weight, rtol=RTOL)
        eig = np.linalg.eigvalsh(V @ cov @ V.T)
        for s in item["sigmas"]:
            n = s["n_sigma"]
            np.testing.assert_allclose(
                [s["width"], s["height"]],
                [2 * n * math.sqrt(eig.max()), 2 * n * math.sqrt(eig.min())],
                rtol=1e-9,
            )

    r = client.get(f"/v1/models/{model_id}/plot", params={"format": "svg"})
    assert r.status_code == 200
    assert "principal components" in r.text
    r = client.get(f"/v1/models/{model_id}/plot")
    assert r.status_code == 200 and _png_size(r.content) == (640, 480)


def test_one_feature_plots_a_histogram_and_interval_ellipses(client: TestClient) -> None:
    generator = {
        "kind": "blobs",
        "n_samples": 300,
        "n_features": 1,
        "centers": 2,
        "random_state": 3,
    }
    model_id = _gm(client, generator, n_components=2)
    X, _ = make_blobs(n_samples=300, n_features=1, centers=2, random_state=3)
    gm = GaussianMixture(2, random_state=0).fit(X)
    r = client.get(f"/v1/models/{model_id}/plot", params={"width": 200, "height": 150, "dpi": 50})
    assert r.status_code == 200
    assert _png_size(r.content) == (200, 150)
    assert _pixels(r.content).var() > 0
    doc = client.get(f"/v1/models/{model_id}/ellipses").json()
    assert doc["projection"] == "identity"
    for item, mean, cov in zip(doc["components"], gm.means_, gm.covariances_, strict=True):
        np.testing.assert_allclose(item["mean"], [mean[0], 0.0], rtol=RTOL)
        for s in item["sigmas"]:
            n = s["n_sigma"]
            np.testing.assert_allclose(s["width"], 2 * n * math.sqrt(cov[0, 0]), rtol=RTOL)
            assert s["height"] == 0.0 and s["angle"] == 0.0


# -- ellipses ----------------------------------------------------------------------
def _full(gm: GaussianMixture) -> np.ndarray:
    """Full (k, 2, 2) covariances, built here from sklearn's shapes for each type."""
    k = gm.n_components
    c = gm.covariances_
    return {
        "full": lambda: c,
        "tied": lambda: np.repeat(c[np.newaxis], k, axis=0),
        "diag": lambda: np.array([np.diag(v) for v in c]),
        "spherical": lambda: np.array([v * np.eye(2) for v in c]),
    }[gm.covariance_type]()


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_ellipses_equal_sklearn_geometry(client: TestClient, covariance_type: str) -> None:
    model_id = _gm(client, SEED_BLOBS, n_components=4, covariance_type=covariance_type)
    _, gm = _seed_gm(covariance_type)
    r = client.get(f"/v1/models/{model_id}/ellipses")
    assert r.status_code == 200
    doc = r.json()
    assert doc["projection"] == "identity" and doc["pca"] is None
    assert doc["covariance_type"] == covariance_type and doc["n_sigmas"] == [1, 2, 3]
    assert [c["component"] for c in doc["components"]] == [0, 1, 2, 3]
    for item, mean, weight, cov in zip(
        doc["components"], gm.means_, gm.weights_, _full(gm), strict=True
    ):
        np.testing.assert_allclose(item["mean"], mean, rtol=RTOL)
        np.testing.assert_allclose(item["weight"], weight, rtol=RTOL)
        w, v = np.linalg.eigh(cov)
        sigmas = {s["n_sigma"]: s for s in item["sigmas"]}
        assert sorted(sigmas) == [1, 2, 3]
        for n, s in sigmas.items():
            np.testing.assert_allclose(
                [s["width"], s["height"]],
                [2 * n * math.sqrt(w[1]), 2 * n * math.sqrt(w[0])],
                rtol=RTOL,
            )
            np.testing.assert_allclose(s["width"], n * sigmas[1]["width"], rtol=RTOL)
            if covariance_type in ("full", "tied"):
                angle = math.degrees(math.atan2(v[1, 1], v[0, 1])) % 180.0
                np.testing.assert_allclose(s["angle"], angle, rtol=RTOL)


def test_kmeans_ellipses_are_centers_only(client: TestClient) -> None:
    model_id = _fit(
        client,
        {
            "algorithm": "kmeans",
            "params": {"n_clusters": 4, "random_state": 0},
            "data": {"generator": SEED_BLOBS},
        },
    )
    X, _ = make_blobs(n_samples=200, n_features=2, centers=4, cluster_std=1.6, random_state=10)
    km = KMeans(4, random_state=0).fit(X)
    doc = client.get(f"/v1/models/{model_id}/ellipses").json()
    assert doc["covariance_type"] is None
    for item, center in zip(doc["components"], km.cluster_centers_, strict=True):
        np.testing.assert_allclose(item["mean"], center, rtol=RTOL)
        assert item["weight"] is None and item["sigmas"] == []
    r = client.get(f"/v1/models/{model_id}/plot", params={"dpi": 50})
    assert r.status_code == 200 and _png_size(r.content) == (640, 480)


def test_bayesian_mixture_hides_unused_components_in_the_plot_only(client: TestClient) -> None:
    generator = {"kind": "blobs", "n_samples": 300, "centers": 3, "random_state": 2}
    params = {"n_components": 5, "weight_concentration_prior": 0.001, "random_state": 0}
    model_id = _fit(
        client,
        {
            "algorithm": "bayesian_gaussian_mixture",
            "params": params,
            "data": {"generator": generator},
        },
    )
    X, _ = make_blobs(n_samples=300, centers=3, random_state=2)
    bgm = BayesianGaussianMixture(**params).fit(X)
    hidden = int(np.sum(bgm.weights_ <= 0.01))
    assert hidden > 0
    doc = client.get(f"/v1/models/{model_id}/ellipses").json()
    assert len(doc["components"]) == 5  # a client decides for itself what to hide
    np.testing.assert_allclose([c["weight"] for c in doc["components"]], bgm.weights_, rtol=RTOL)
    r = client.get(f"/v1/models/{model_id}/plot", params={"format": "svg"})
    assert r.status_code == 200
    assert f"{hidden} components with weight &lt;= 0.01" in r.text


def test_imported_model_has_ellipses_but_no_plot(client: TestClient) -> None:
    source = _gm(client, SEED_BLOBS, n_components=4)
    doc = client.get(f"/v1/models/{source}/export").json()
    r = client.post("/v1/models/import", json=doc)
    assert r.status_code == 201, r.text
    imported = r.json()["id"]
    body = _assert_problem(client.get(f"/v1/models/{imported}/plot"), 422)
    assert "no training points" in body["detail"]
    # 2 features need no PCA basis: the components alone give the ellipses.
    assert (
        client.get(f"/v1/models/{imported}/ellipses").json()["components"]
        == client.get(f"/v1/models/{source}/ellipses").json()["components"]
    )


def test_imported_model_with_three_features_cannot_be_projected(client: TestClient) -> None:
    source = _gm(client, BLOBS_3D, n_components=3)
    r = client.post("/v1/models/import", json=client.get(f"/v1/models/{source}/export").json())
    assert r.status_code == 201, r.text
    body = _assert_problem(client.get(f"/v1/models/{r.json()['id']}/ellipses"), 422)
    assert "principal components" in body["detail"]


# -- generated datasets ------------------------------------------------------------
def test_dataset_plot_png_and_svg(client: TestClient) -> None:
    spec = {
        "kind": "gaussian_mixture",
        "random_state": 0,
        "components": [
            {"mean": [0, 1], "cov": [[1, 0.9], [0.9, 2]], "n_samples": 300},
            {"mean": [1, -2], "cov": [[2, -1], [-1, 1]], "n_samples": 300},
        ],
    }
    r = client.post("/v1/datasets/plot", json=spec, params={"width": 240, "height": 240, "dpi": 60})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert _png_size(r.content) == (240, 240)
    pixels = _pixels(r.content)
    for rgb in np.asarray(colormaps["tab10"].colors)[:2]:
        assert _has_colour(pixels, rgb), rgb
    r = client.post("/v1/datasets/plot", json=SEED_BLOBS, params={"format": "svg"})
    assert r.status_code == 200
    root = _svg_root(r.content)
    assert len(_svg_paths(root)) > 0
    assert "generated blobs data: 200 points by true label" in r.text


def test_large_training_sets_are_subsampled(client: TestClient) -> None:
    generator = {"kind": "blobs", "n_samples": 25_000, "centers": 3, "random_state": 0}
    model_id = _gm(client, generator, n_components=3, max_iter=20)
    r = client.get(f"/v1/models/{model_id}/plot", params={"format": "svg"})
    assert r.status_code == 200
    _svg_root(r.content)
    assert "20,000 of 25,000 points shown" in r.text
    # Rasterised: the SVG holds an image of the points, not 20,000 elements.
    assert len(r.content) < 1_000_000


def test_dataset_plot_rejects_bad_specs(client: TestClient) -> None:
    body = _assert_problem(client.post("/v1/datasets/plot", json={"kind": "nope"}), 422)
    assert body["errors"][0]["loc"] == ["body", "kind"]
    spec = {
        "kind": "gaussian_mixture",
        "components": [{"mean": [0, 0], "cov": [[1, 2], [2, 1]], "n_samples": 5}],
    }
    body = _assert_problem(client.post("/v1/datasets/plot", json=spec), 422)
    assert body["errors"][0]["loc"][:3] == ["body", "components", 0]


# -- bad input ---------------------------------------------------------------------
BAD_OPTIONS: list[tuple[dict[str, Any], list[str]]] = [
    ({"format": "gif"}, ["query", "format"]),
    ({"format": "PNG"}, ["query", "format"]),
    ({"width": 0.5}, ["query", "width"]),
    ({"width": 6.4}, ["query", "width"]),  # pixels, not inches
    ({"width": 99}, ["query", "width"]),
    ({"width": 4097}, ["query", "width"]),
    ({"height": 5000}, ["query", "height"]),
    ({"width": "nan"}, ["query", "width"]),
    ({"dpi": 10}, ["query", "dpi"]),
    ({"dpi": 601}, ["query", "dpi"]),
    ({"dpi": "many"}, ["query", "dpi"]),
]


def test_bad_plot_options_are_422(client: TestClient) -> None:
    model_id = _gm(client, SEED_BLOBS, n_components=2)
    for params, loc in BAD_OPTIONS:
        r = client.get(f"/v1/models/{model_id}/plot", params=params)
        assert _assert_problem(r, 422)["errors"][0]["loc"] == loc, params
        r = client.post("/v1/datasets/plot", json=SEED_BLOBS, params=params)
        assert _assert_problem(r, 422)["errors"][0]["loc"] == loc, params


def test_unknown_model_is_404(client: TestClient) -> None:
    for path in ("plot", "ellipses"):
        body = _assert_problem(client.get(f"/v1/models/{UNKNOWN_ID}/{path}"), 404)
        assert UNKNOWN_ID in body["detail"]
        _assert_problem(client.get(f"/v1/models/not-an-id/{path}"), 404)


def test_concurrent_plots_are_identical_to_a_lone_one(client: TestClient) -> None:
    """Figures never share state: parallel requests give the bytes a lone request gives."""
    from concurrent.futures import ThreadPoolExecutor

    ids = [_gm(client, SEED_BLOBS, n_components=k) for k in (2, 3)]
    urls = [f"/v1/models/{i}/plot?dpi=40" for i in ids] * 2
    alone = {url: client.get(url).content for url in set(urls)}
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda url: client.get(url), urls))
    for url, r in zip(urls, results, strict=True):
        assert r.status_code == 200
        assert r.content == alone[url]
    assert alone[urls[0]] != alone[urls[1]]


# -- one size unit for every plot -----------------------------------------------------
SELECTION_BODY = {
    "data": {"generator": SEED_BLOBS},
    "grid": {"n_components": [1, 2, 3], "covariance_type": ["full", "spherical"]},
    "params": {"random_state": 0},
}


def _every_plot(client: TestClient, params: dict[str, Any]) -> dict[str, Any]:
    """The answer of each plot route to the same query parameters."""
    model_id = _gm(client, SEED_BLOBS, n_components=3)
    return {
        "model": client.get(f"/v1/models/{model_id}/plot", params=params),
        "dataset": client.post("/v1/datasets/plot", json=SEED_BLOBS, params=params),
        "model-selection": client.post(
            "/v1/model-selection/plot", json=SELECTION_BODY, params=params
        ),
    }


@pytest.mark.parametrize(
    ("width", "height", "dpi"),
    # 333 / 100 * 100 is 332.99999999999994: Agg would truncate it to 332 pixels.
    [(640, 480, 100), (333, 217, 100), (1000, 120, 72), (101, 4096, 20)],
)
def test_every_plot_is_width_by_height_pixels(
    client: TestClient, width: int, height: int, dpi: int
) -> None:
    params = {"width": width, "height": height, "dpi": dpi}
    for route, r in _every_plot(client, params).items():
        assert r.status_code == 200, f"{route}: {r.text}"
        assert _png_size(r.content) == (width, height), route
        assert _pixels(r.content).var() > 0, route


def test_every_plot_has_the_same_defaults_and_svg_size(client: TestClient) -> None:
    for route, r in _every_plot(client, {}).items():
        assert r.status_code == 200, f"{route}: {r.text}"
        assert _png_size(r.content) == (640, 480), route
    for route, r in _every_plot(client, {"format": "svg", "width": 360, "dpi": 72}).items():
        assert r.status_code == 200, f"{route}: {r.text}"
        root = _svg_root(r.content)
        # width / dpi inches, 72 points an inch
        assert float(root.attrib["width"].removesuffix("pt")) == pytest.approx(360), route
        assert float(root.attrib["height"].removesuffix("pt")) == pytest.approx(480), route


@pytest.mark.parametrize(("params", "loc"), BAD_OPTIONS)
def test_every_plot_refuses_the_same_options(
    client: TestClient, params: dict[str, Any], loc: list[str]
) -> None:
    for route, r in _every_plot(client, params).items():
        assert _assert_problem(r, 422)["errors"][0]["loc"] == loc, (route, params)


def test_concurrent_model_selection_plots_equal_serial_ones(client: TestClient) -> None:
    """Every picture takes the one draw lock: model-selection plots drawn while other
    plots are drawn give the bytes they give alone."""
    from concurrent.futures import ThreadPoolExecutor

    model_id = _gm(client, SEED_BLOBS, n_components=3)
    requests = [
        ("POST", "/v1/model-selection/plot?dpi=60", SELECTION_BODY),
        ("POST", "/v1/model-selection/plot?format=svg", SELECTION_BODY),
        ("POST", "/v1/model-selection/plot", {**SELECTION_BODY, "criterion": "aic"}),
        ("GET", f"/v1/models/{model_id}/plot?dpi=40", None),
        ("POST", "/v1/datasets/plot?format=svg", SEED_BLOBS),
    ]

    def send(item: tuple[str, str, Any]) -> bytes:
        method, url, body = item
        r = client.request(method, url, json=body)
        assert r.status_code == 200, r.text
        return r.content

    def shape(content: bytes) -> Any:
        """PNG bytes; an SVG's element tags and sizes (its ids are salted at random)."""
        if content.startswith(PNG_SIGNATURE):
            return content
        return [(el.tag, el.get("width"), el.get("height")) for el in _svg_root(content).iter()]

    alone = [shape(send(item)) for item in requests]
    work = requests * 3
    with ThreadPoolExecutor(6) as pool:
        together = [shape(content) for content in pool.map(send, work)]
    assert together == alone * 3


def test_a_models_training_points_are_answered_thinned_for_drawing(client: TestClient) -> None:
    """What ``/explorer?model=`` draws: every step-th training point, at most ``limit``."""
    X, _ = make_blobs(n_samples=300, n_features=3, centers=3, random_state=4)
    model_id = _fit(
        client,
        {"algorithm": "kmeans", "params": {"n_clusters": 3}, "data": {"points": X.tolist()}},
    )
    r = client.get(f"/v1/models/{model_id}/points", params={"limit": 100})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["n_samples"], body["n_features"], body["step"]) == (300, 3, 3)
    np.testing.assert_array_equal(body["points"], X[::3])
    whole = client.get(f"/v1/models/{model_id}/points").json()
    assert whole["step"] == 1 and len(whole["points"]) == 300
    assert client.get(f"/v1/models/{model_id}/points", params={"limit": 0}).status_code == 422
    exported = client.get(f"/v1/models/{model_id}/export").json()
    imported = client.post("/v1/models/import", json=exported).json()["id"]
    _assert_problem(client.get(f"/v1/models/{imported}/points"), 422)
    _assert_problem(client.get(f"/v1/models/{'0' * 28}/points"), 404)


def test_the_best_model_of_a_selection_carries_its_curve(client: TestClient) -> None:
    body = {
        "data": {"generator": SEED_BLOBS},
        "grid": {"n_components": {"min": 1, "max": 5}},
        "params": {"random_state": 0},
        "store_best": True,
        "wait": True,
    }
    answer = client.post("/v1/model-selection", json=body).json()
    model = client.get(f"/v1/models/{answer['best']['model_id']}").json()
    assert model["selection"] == {"criterion": "bic", "scores": answer["scores"]}
    listed = client.get("/v1/models", params={"limit": 1}).json()["items"][0]
    assert listed["selection"] == model["selection"]
