"""Property tests of the data layer, over HTTP: what ``points`` the service takes.

The input space (every shape, every float, every place a bad value can hide) is far
too large for examples, so hypothesis draws it: any finite rectangular array within
the limits is fitted exactly as scikit-learn fits it in-process; any non-finite,
ragged or oversized array is refused with a 4xx that names the place; no body, not
even random bytes, makes the server fail with a 5xx.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from service.config import Settings
from service.main import create_app

PROBLEM = "application/problem+json"
PAYLOAD_TOO_LARGE = "urn:gmm-service:problem:payload-too-large"
POINTS_LOC = ["body", "data", "points"]

#: Small limits, so that arrays just past them stay cheap to build and send.
MAX_POINTS = 40
MAX_FEATURES = 6
MAX_VALUES = 120

PROPERTY = settings(
    max_examples=50,
    deadline=None,
    # One app (and store) for the whole module: its state does not leak between
    # examples, every example creates its own model.
    suppress_health_check=[HealthCheck.too_slow],
)

#: Finite values of every kind JSON carries: integers, subnormals, signed zeros, and
#: magnitudes up to 1e6 (far beyond, squared distances overflow float64 and sklearn's
#: own answers stop being numbers; that edge is the fuzzing's, not this file's).
FINITE = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.integers(min_value=-1000, max_value=1000),
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Module-scoped: hypothesis runs every example of a test against one app."""
    config = Settings(
        store_dir=tmp_path_factory.mktemp("properties") / "store",
        secret_key="property-tests",
        max_points=MAX_POINTS,
        max_features=MAX_FEATURES,
        max_values=MAX_VALUES,
    )
    with TestClient(create_app(config)) as c:
        yield c


@st.composite
def rectangular(
    draw: st.DrawFn, *, min_rows: int = 1, max_features: int = MAX_FEATURES
) -> list[list[float]]:
    """A finite (n_samples, n_features) array within the limits, as nested lists."""
    n_features = draw(st.integers(min_value=1, max_value=max_features))
    max_rows = min(MAX_POINTS, MAX_VALUES // n_features)
    n_samples = draw(st.integers(min_value=min_rows, max_value=max_rows))
    row = st.lists(FINITE, min_size=n_features, max_size=n_features)
    return draw(st.lists(row, min_size=n_samples, max_size=n_samples))


def fit_body(algorithm: str, params: dict[str, Any], points: Any) -> dict[str, Any]:
    return {"algorithm": algorithm, "params": params, "data": {"points": points}}


def sklearn_fit(estimator: Any, X: np.ndarray) -> Any:
    """sklearn in-process, warnings (such as ConvergenceWarning) muted as the service
    reports them in ``warnings`` instead of failing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(X)


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


# -- finite rectangular arrays: accepted, and sklearn's numbers exactly ----------------


@PROPERTY
@given(points=rectangular(), data=st.data())
def test_any_finite_array_fits_like_sklearn_kmeans(
    client: TestClient, points: list[list[float]], data: st.DataObject
) -> None:
    k = data.draw(st.integers(min_value=1, max_value=min(4, len(points))), label="n_clusters")
    response = client.post(
        "/v1/models",
        json=fit_body("kmeans", {"n_clusters": k, "n_init": 1, "random_state": 0}, points),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    X = np.asarray(points, dtype=np.float64)
    est = sklearn_fit(KMeans(n_clusters=k, n_init=1, random_state=0), X)
    assert (body["n_samples"], body["n_features"]) == X.shape
    np.testing.assert_allclose(body["means"], est.cluster_centers_, rtol=1e-10, atol=0)
    np.testing.assert_array_equal(body["labels"], est.labels_)


@PROPERTY
@given(points=rectangular(min_rows=2), data=st.data())
def test_any_finite_array_fits_like_sklearn_gaussian_mixture(
    client: TestClient, points: list[list[float]], data: st.DataObject
) -> None:
    """``reg_covar`` large enough that repeated or collinear points still give a
    positive-definite covariance, as sklearn's own advice for such data says. Two rows
    at least: sklearn's mixtures refuse a single sample."""
    k = data.draw(st.integers(min_value=1, max_value=min(3, len(points))), label="n_components")
    covariance_type = data.draw(st.sampled_from(["full", "tied", "diag", "spherical"]))
    params = {
        "n_components": k,
        "covariance_type": covariance_type,
        "reg_covar": 1e-2,
        "random_state": 0,
    }
    response = client.post("/v1/models", json=fit_body("gaussian_mixture", params, points))
    assert response.status_code == 201, response.text
    body = response.json()
    X = np.asarray(points, dtype=np.float64)
    est = sklearn_fit(GaussianMixture(**params), X)
    np.testing.assert_allclose(body["means"], est.means_, rtol=1e-10, atol=0)
    np.testing.assert_allclose(body["weights"], est.weights_, rtol=1e-10, atol=0)
    np.testing.assert_array_equal(body["labels"], est.predict(X))


# -- non-finite values: 422 at their exact place ----------------------------------------


@PROPERTY
@given(
    points=rectangular(),
    data=st.data(),
    bad=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
)
def test_a_non_finite_value_is_named_by_its_place(
    client: TestClient, points: list[list[float]], data: st.DataObject, bad: float
) -> None:
    """Sent as JSON text with ``NaN`` / ``Infinity`` / ``-Infinity`` literals, which
    Python's and JavaScript's encoders write and strict JSON does not allow."""
    points = [list(row) for row in points]
    i = data.draw(st.integers(min_value=0, max_value=len(points) - 1), label="row")
    j = data.draw(st.integers(min_value=0, max_value=len(points[0]) - 1), label="column")
    points[i][j] = bad
    text = json.dumps(fit_body("kmeans", {"n_clusters": 1}, points), allow_nan=True)
    response = client.post("/v1/models", content=text, headers={"Content-Type": "application/json"})
    body = assert_problem(response, 422)
    assert body["errors"][0]["loc"] == [*POINTS_LOC, i, j]


# -- ragged arrays: 422 naming the first row that differs from row 0 --------------------


@PROPERTY
@given(points=rectangular(min_rows=2), data=st.data())
def test_a_ragged_array_names_its_first_bad_row(
    client: TestClient, points: list[list[float]], data: st.DataObject
) -> None:
    width = len(points[0])
    changed = data.draw(
        st.sets(st.integers(min_value=1, max_value=len(points) - 1), min_size=1), label="rows"
    )
    for i in changed:
        other = data.draw(
            st.integers(min_value=1, max_value=MAX_FEATURES + 1).filter(lambda n: n != width)
        )
        points[i] = (points[i] * other)[:other]
    response = client.post("/v1/models", json=fit_body("kmeans", {"n_clusters": 1}, points))
    body = assert_problem(response, 422)
    assert body["errors"][0]["loc"] == [*POINTS_LOC, min(changed)]


# -- oversized arrays: 413 naming the limit ---------------------------------------------


@st.composite
def oversized(draw: st.DrawFn) -> tuple[list[list[float]], str]:
    """A rectangular array past exactly one of GMM_MAX_POINTS or GMM_MAX_VALUES."""
    which = draw(st.sampled_from(["GMM_MAX_POINTS", "GMM_MAX_VALUES"]))
    if which == "GMM_MAX_POINTS":
        n_features = 1
        n_samples = draw(st.integers(min_value=MAX_POINTS + 1, max_value=MAX_POINTS + 20))
    else:
        n_features = draw(st.integers(min_value=MAX_VALUES // MAX_POINTS + 1, max_value=6))
        n_samples = draw(st.integers(min_value=MAX_VALUES // n_features + 1, max_value=MAX_POINTS))
    value = draw(FINITE)
    return [[value] * n_features for _ in range(n_samples)], which


@PROPERTY
@given(case=oversized())
def test_an_array_over_the_limits_is_413_naming_the_limit(
    client: TestClient, case: tuple[list[list[float]], str]
) -> None:
    points, limit = case
    response = client.post("/v1/models", json=fit_body("kmeans", {"n_clusters": 1}, points))
    body = assert_problem(response, 413)
    assert body["type"] == PAYLOAD_TOO_LARGE
    assert limit in body["detail"]
    assert body["errors"][0]["loc"] == POINTS_LOC


# -- predict: points of the wrong width name the row ------------------------------------


@pytest.fixture(scope="module")
def model(client: TestClient) -> dict[str, Any]:
    """A 3-feature mixture to predict with."""
    points = [[float(i % 7), float(i % 5), float(i % 3)] for i in range(30)]
    body = fit_body("gaussian_mixture", {"n_components": 2, "random_state": 0}, points)
    response = client.post("/v1/models", json={**body, "include": []})
    assert response.status_code == 201, response.text
    resource: dict[str, Any] = response.json()
    return resource


@pytest.fixture(scope="module")
def kmeans_model(client: TestClient) -> dict[str, Any]:
    """A 3-feature KMeans, for the distances it answers."""
    points = [[float(i % 7), float(i % 5), float(i % 3)] for i in range(30)]
    body = fit_body("kmeans", {"n_clusters": 2, "n_init": 1, "random_state": 0}, points)
    response = client.post("/v1/models", json={**body, "include": []})
    assert response.status_code == 201, response.text
    resource: dict[str, Any] = response.json()
    return resource


@PROPERTY
@given(points=rectangular(max_features=3), data=st.data())
def test_predict_names_the_first_row_of_the_wrong_width(
    client: TestClient, model: dict[str, Any], points: list[list[float]], data: st.DataObject
) -> None:
    width = model["n_features"]
    rows = data.draw(
        st.sets(st.integers(min_value=0, max_value=len(points) - 1), min_size=1), label="rows"
    )
    points = [(row * width)[:width] for row in points]
    for i in rows:
        other = data.draw(
            st.integers(min_value=1, max_value=width + 3).filter(lambda n: n != width)
        )
        points[i] = (points[i] * other)[:other]
    response = client.post(f"/v1/models/{model['id']}/predict", json={"points": points})
    body = assert_problem(response, 422)
    assert body["errors"][0]["loc"] == ["body", "points", min(rows)]


@PROPERTY
@given(points=rectangular(max_features=3))
def test_predict_of_the_right_width_is_sklearns(
    client: TestClient, model: dict[str, Any], points: list[list[float]]
) -> None:
    """The counterpart: rows of the model's width get sklearn's predict on the same fit."""
    width = model["n_features"]
    points = [(row * width)[:width] for row in points]
    response = client.post(f"/v1/models/{model['id']}/predict", json={"points": points})
    assert response.status_code == 200, response.text
    train = np.asarray([[float(i % 7), float(i % 5), float(i % 3)] for i in range(30)])
    est = sklearn_fit(GaussianMixture(n_components=2, random_state=0), train)
    X = np.asarray(points, dtype=np.float64)
    np.testing.assert_array_equal(response.json()["labels"], est.predict(X))


# -- values near float64's edge: numbers or a 422, never a null posing as a number ------

#: Finite, but squares (distances, variances) overflow float64 past ~1.34e154.
HUGE = st.floats(min_value=1e155, max_value=1.7e308).flatmap(lambda x: st.sampled_from([x, -x]))


def all_numbers(value: Any) -> bool:
    """True when no null hides in a nested list of numbers."""
    if isinstance(value, list):
        return all(all_numbers(item) for item in value)
    return value is not None


@PROPERTY
@example(points=[[1e200, 0.0], [-1e200, 0.0]], n_clusters=1)
@given(
    points=st.lists(st.lists(FINITE | HUGE, min_size=2, max_size=2), min_size=2, max_size=10),
    n_clusters=st.integers(min_value=1, max_value=2),
)
def test_a_fit_on_huge_values_answers_numbers_or_422(
    client: TestClient, points: list[list[float]], n_clusters: int
) -> None:
    params = {"n_clusters": n_clusters, "n_init": 1, "random_state": 0}
    body = fit_body("kmeans", params, points)
    response = client.post("/v1/models", json={**body, "include": ["labels", "distances"]})
    if response.status_code == 422:
        return
    assert response.status_code == 201, response.text
    fitted = response.json()
    assert fitted["inertia"] is not None
    assert all_numbers(fitted["means"]) and all_numbers(fitted["distances"])


@PROPERTY
@example(point=[1e200, 1e200, 1e200])
@given(point=st.lists(FINITE | HUGE, min_size=3, max_size=3))
def test_predict_on_huge_values_answers_numbers_or_names_the_row(
    client: TestClient, kmeans_model: dict[str, Any], point: list[float]
) -> None:
    points = [[0.0, 0.0, 0.0], point]
    response = client.post(f"/v1/models/{kmeans_model['id']}/predict", json={"points": points})
    if response.status_code == 422:
        assert response.json()["errors"][0]["loc"] == ["body", "points", 1]
        return
    assert response.status_code == 200, response.text
    assert all_numbers(response.json()["distances"])


@PROPERTY
@example(kind="moons", noise=1.5e308)
@given(
    kind=st.sampled_from(["moons", "circles"]),
    noise=st.floats(min_value=0, max_value=1.7e308),
)
def test_generated_points_are_numbers_or_422(client: TestClient, kind: str, noise: float) -> None:
    response = client.post(
        "/v1/datasets/generate",
        json={"kind": kind, "n_samples": 20, "noise": noise, "random_state": 0},
    )
    if response.status_code == 422:
        assert response.json()["errors"][0]["loc"] == ["body"]
        return
    assert response.status_code == 200, response.text
    assert all_numbers(response.json()["points"])


# -- any bytes at all: never a 5xx -----------------------------------------------------

JSON_ENDPOINTS = [
    "/v1/models",
    "/v1/datasets/generate",
    "/v1/model-selection",
    "/v1/comparisons",
]


@PROPERTY
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        # Near misses: valid JSON cut short, or with a byte flipped.
        st.tuples(st.integers(min_value=0, max_value=120), st.integers(0, 255)).map(
            lambda cut: (
                json.dumps(
                    fit_body("kmeans", {"n_clusters": 1}, [[0.0, 1.0], [2.0, 3.0]])
                ).encode()[: cut[0]]
                + bytes([cut[1]])
            )
        ),
    ),
    path=st.sampled_from(JSON_ENDPOINTS),
)
def test_random_bytes_never_give_a_server_error(client: TestClient, body: bytes, path: str) -> None:
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["status"] == response.status_code
    assert "Traceback" not in response.text
