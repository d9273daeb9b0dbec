"""Ellipse geometry and PCA projection, checked against numpy's eigh and sklearn's PCA; the
drawing rules every picture keeps: one lock, and exactly the pixels asked for."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from service.domain.analysis import geometry, plotting, selection
from service.domain.training import estimators
from service.errors import UnsupportedOperation

RTOL = 1e-10


def _expected_from_eigh(cov: np.ndarray, n_sigma: int) -> tuple[float, float, float]:
    """Width, height and angle computed here, independently, from numpy's eigh."""
    w, v = np.linalg.eigh(cov)
    major = v[:, np.argmax(w)]
    angle = math.degrees(math.atan2(major[1], major[0])) % 180.0
    return 2 * n_sigma * math.sqrt(w.max()), 2 * n_sigma * math.sqrt(w.min()), angle


def _rebuild(e: geometry.SigmaEllipse) -> np.ndarray:
    """The covariance an ellipse stands for: R diag(a^2, b^2) R^T with 1-sigma semi-axes."""
    a, b = e.width / (2 * e.n_sigma), e.height / (2 * e.n_sigma)
    t = math.radians(e.angle)
    R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return R @ np.diag([a * a, b * b]) @ R.T


def _data_2d() -> np.ndarray:
    X, _ = make_blobs(n_samples=300, centers=3, cluster_std=[0.8, 1.5, 1.1], random_state=7)
    # Shear so that full and tied covariances are visibly tilted.
    return X @ np.array([[1.0, 0.6], [0.0, 1.0]])


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_ellipses_match_eigh_for_every_covariance_type(covariance_type: str) -> None:
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(_data_2d())
    covs = estimators.full_covariances(gm)
    for i in range(3):
        cov = covs[i]
        ellipses = geometry.ellipse_axes(cov)
        assert [e.n_sigma for e in ellipses] == [1, 2, 3]
        for e in ellipses:
            width, height, angle = _expected_from_eigh(cov, e.n_sigma)
            np.testing.assert_allclose([e.width, e.height], [width, height], rtol=RTOL)
            assert e.width >= e.height
            assert 0.0 <= e.angle < 180.0
            if covariance_type in ("full", "tied"):
                np.testing.assert_allclose(e.angle, angle, rtol=RTOL)
            np.testing.assert_allclose(_rebuild(e), cov, rtol=1e-9, atol=1e-12)
        one, two, three = ellipses
        np.testing.assert_allclose([two.width, two.height], [2 * one.width, 2 * one.height])
        np.testing.assert_allclose([three.width, three.height], [3 * one.width, 3 * one.height])
        assert one.angle == two.angle == three.angle


def test_diag_and_spherical_axes_are_the_variances_themselves() -> None:
    X = _data_2d()
    diag = GaussianMixture(3, covariance_type="diag", random_state=0).fit(X)
    for var, cov in zip(diag.covariances_, estimators.full_covariances(diag), strict=True):
        (e,) = geometry.ellipse_axes(cov, n_sigmas=(1,))
        np.testing.assert_allclose(e.width, 2 * math.sqrt(var.max()), rtol=RTOL)
        np.testing.assert_allclose(e.height, 2 * math.sqrt(var.min()), rtol=RTOL)
        # Axis-aligned: the major axis is x (0 degrees) or y (90 degrees).
        assert e.angle == (0.0 if var[0] > var[1] else 90.0)
    sph = GaussianMixture(3, covariance_type="spherical", random_state=0).fit(X)
    for var, cov in zip(sph.covariances_, estimators.full_covariances(sph), strict=True):
        (e,) = geometry.ellipse_axes(cov, n_sigmas=(1,))
        np.testing.assert_allclose([e.width, e.height], 2 * math.sqrt(var), rtol=RTOL)
        assert e.angle == 0.0  # a circle has no direction; 0 by convention


@pytest.mark.parametrize("degrees", [0.0, 30.0, 45.0, 90.0, 135.0, 170.0])
def test_angle_is_counterclockwise_from_x_axis(degrees: float) -> None:
    t = math.radians(degrees)
    R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    cov = R @ np.diag([4.0, 1.0]) @ R.T
    (e,) = geometry.ellipse_axes(cov, n_sigmas=(1,))
    np.testing.assert_allclose(e.angle, degrees, atol=1e-9)
    np.testing.assert_allclose([e.width, e.height], [4.0, 2.0], rtol=RTOL)


def test_not_positive_semidefinite_covariance_degenerates_to_a_segment() -> None:
    cov = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1
    (e,) = geometry.ellipse_axes(cov, n_sigmas=(1,))
    np.testing.assert_allclose(e.width, 2 * math.sqrt(np.linalg.eigvalsh(cov).max()), rtol=RTOL)
    assert e.height == 0.0
    np.testing.assert_allclose(e.angle, 45.0, atol=1e-9)


def test_pca_projection_of_a_three_feature_model_matches_sklearn() -> None:
    X, _ = make_blobs(n_samples=400, n_features=3, centers=3, random_state=3)
    gm = GaussianMixture(3, random_state=0).fit(X)
    projection = geometry.projection_for(X, 3, what="test")
    pca = PCA(n_components=2, random_state=0).fit(X)
    assert projection.kind == "pca"
    np.testing.assert_allclose(projection.points(X), pca.transform(X), rtol=RTOL, atol=1e-12)
    V = pca.components_
    expected_covs = np.array([V @ c @ V.T for c in gm.covariances_])
    np.testing.assert_allclose(
        projection.covariances(gm.covariances_), expected_covs, rtol=RTOL, atol=1e-12
    )
    doc = geometry.ellipses_document(geometry.model_components("gaussian_mixture", gm), projection)
    assert doc["projection"] == "pca"
    np.testing.assert_allclose(doc["pca"]["components"], V, rtol=RTOL)
    np.testing.assert_allclose(doc["pca"]["mean"], pca.mean_, rtol=RTOL)
    np.testing.assert_allclose(
        doc["pca"]["explained_variance_ratio"], pca.explained_variance_ratio_, rtol=RTOL
    )
    for item, mean, cov in zip(
        doc["components"], pca.transform(gm.means_), expected_covs, strict=True
    ):
        np.testing.assert_allclose(item["mean"], mean, rtol=RTOL, atol=1e-12)
        for s in item["sigmas"]:
            width, height, _ = _expected_from_eigh(cov, s["n_sigma"])
            np.testing.assert_allclose([s["width"], s["height"]], [width, height], rtol=1e-9)


def test_pca_of_wide_data_is_deterministic() -> None:
    """Wide data sends sklearn to its randomized solver: the seed must pin it."""
    X = np.random.RandomState(0).standard_normal((520, 510))
    first = geometry.projection_for(X, 510, what="test")
    again = geometry.projection_for(X, 510, what="test")
    pca = PCA(n_components=2, random_state=0).fit(X)
    np.testing.assert_array_equal(first.components, again.components)
    np.testing.assert_allclose(first.points(X), pca.transform(X), rtol=RTOL, atol=1e-12)


def test_identity_projection_for_one_and_two_features() -> None:
    X2 = _data_2d()
    p2 = geometry.projection_for(X2, 2, what="test")
    assert p2.kind == "identity" and p2.basis() is None
    np.testing.assert_array_equal(p2.points(X2), X2)
    p1 = geometry.projection_for(None, 1, what="test")
    np.testing.assert_array_equal(p1.points(X2[:, :1]), np.column_stack([X2[:, 0], 0 * X2[:, 0]]))
    np.testing.assert_array_equal(p1.covariances(np.array([[[2.5]]])), [[[2.5, 0], [0, 0]]])


def test_pca_needs_training_points() -> None:
    with pytest.raises(UnsupportedOperation, match="imported"):
        geometry.projection_for(None, 3, what="Model x")


def test_subsample_is_deterministic_sorted_and_bounded() -> None:
    assert geometry.subsample(20_000) is None
    a = geometry.subsample(50_000)
    b = geometry.subsample(50_000)
    assert a is not None and b is not None
    np.testing.assert_array_equal(a, b)
    assert len(a) == geometry.MAX_PLOT_POINTS == len(np.unique(a))
    assert np.all(np.diff(a) > 0) and a[-1] < 50_000


# -- drawing: one lock, one size unit ---------------------------------------------------
def _selection_result() -> dict[str, Any]:
    """What ``selection.select`` answers, from fits made here (only what plot reads)."""
    X = _data_2d()
    scores = [
        {
            "n_components": k,
            "covariance_type": c,
            "bic": GaussianMixture(k, covariance_type=c, random_state=0).fit(X).bic(X),
        }
        for c in ("full", "spherical")
        for k in (1, 2, 3)
    ]
    best = min(scores, key=lambda cell: cell["bic"])
    return {"criterion": "bic", "scores": scores, "best": best}


def _model_picture(size: plotting.FigureSize) -> bytes:
    X = _data_2d()
    gm = GaussianMixture(3, random_state=0).fit(X)
    resource = {"id": "m", "algorithm": "gaussian_mixture", "n_features": 2}
    bundle = {"X": X, "estimator": gm, "labels": gm.predict(X)}
    return plotting.model_plot(resource, bundle, fmt="png", size=size)


def _dataset_picture(size: plotting.FigureSize) -> bytes:
    X, y = make_blobs(n_samples=200, centers=3, random_state=0)
    return plotting.dataset_plot(X, y, kind="blobs", fmt="png", size=size)


def _selection_picture(size: plotting.FigureSize) -> bytes:
    return selection.plot(_selection_result(), fmt="png", size=size)


PICTURES: dict[str, Callable[[plotting.FigureSize], bytes]] = {
    "model": _model_picture,
    "dataset": _dataset_picture,
    "model-selection": _selection_picture,
}


@pytest.mark.parametrize("picture", PICTURES.values(), ids=PICTURES.keys())
def test_every_picture_waits_for_the_draw_lock(
    picture: Callable[[plotting.FigureSize], bytes],
) -> None:
    """matplotlib is not thread-safe: no picture may be drawn while another is."""
    out: list[bytes] = []
    size = plotting.FigureSize(width=200, height=150, dpi=50)
    thread = threading.Thread(target=lambda: out.append(picture(size)))
    with plotting._DRAW_LOCK:
        thread.start()
        thread.join(timeout=2.0)
        assert thread.is_alive() and out == [], "drew without waiting for the draw lock"
    thread.join(timeout=120)
    assert len(out) == 1 and out[0].startswith(b"\x89PNG")


def test_figure_size_gives_exactly_the_pixels_asked_for() -> None:
    """Agg truncates ``inches * dpi``; ``inches()`` never lands a pixel short."""
    for dpi in range(20, 601):
        for pixels in range(100, 4097, 37):
            size = plotting.FigureSize(width=pixels, height=4096, dpi=dpi)
            width, height = size.inches()
            assert int(width * dpi) == pixels and int(height * dpi) == 4096, (pixels, dpi)
