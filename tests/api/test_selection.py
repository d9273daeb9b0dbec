"""``POST /v1/model-selection`` and its plot: every number equals sklearn's, run here."""

from __future__ import annotations

import io
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from service.config import Settings
from service.main import create_app
from tests.conftest import SEED_BLOBS

COV_TYPES = ["full", "tied", "diag", "spherical"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def seed_X() -> np.ndarray:
    spec = {k: v for k, v in SEED_BLOBS.items() if k != "kind"}
    X, _ = make_blobs(**spec)
    return X


def sklearn_cell(X: np.ndarray, k: int, cov: str, params: dict[str, Any]) -> GaussianMixture:
    return GaussianMixture(n_components=k, covariance_type=cov, **params).fit(X)


def assert_cell_equals(cell: dict[str, Any], gm: GaussianMixture, X: np.ndarray) -> None:
    np.testing.assert_allclose(cell["bic"], gm.bic(X), rtol=1e-10)
    np.testing.assert_allclose(cell["aic"], gm.aic(X), rtol=1e-10)
    np.testing.assert_allclose(cell["lower_bound"], gm.lower_bound_, rtol=1e-10)
    assert cell["converged"] is bool(gm.converged_)
    assert cell["n_iter"] == gm.n_iter_
    assert cell["fit_seconds"] > 0
    assert cell["error"] is None


def expected_best(cells: list[dict[str, Any]], criterion: str) -> int:
    """The rule the service documents: lowest criterion, then fewest components,
    then grid order."""
    return min(range(len(cells)), key=lambda i: (cells[i][criterion], cells[i]["n_components"], i))


def post(client: TestClient, body: dict[str, Any], path: str = "/v1/model-selection") -> Any:
    return client.post(path, json=body)


def assert_problem(response: Any, status: int, loc: list[str | int]) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["errors"][0]["loc"] == loc, problem
    return problem


def test_every_cell_equals_sklearn_in_grid_order(client: TestClient) -> None:
    X = seed_X()
    params = {"random_state": 0}
    response = post(
        client,
        {
            "data": {"generator": SEED_BLOBS},
            "grid": {"n_components": {"min": 1, "max": 5}, "covariance_type": COV_TYPES},
            "params": params,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["criterion"] == "bic"
    cells = body["scores"]
    # Covariance types as requested, n_components ascending within each.
    assert [(c["covariance_type"], c["n_components"]) for c in cells] == [
        (cov, k) for cov in COV_TYPES for k in range(1, 6)
    ]
    for cell in cells:
        gm = sklearn_cell(X, cell["n_components"], cell["covariance_type"], params)
        assert_cell_equals(cell, gm, X)
        assert cell["warnings"] == []
    best = body["best"]
    assert best == {**cells[expected_best(cells, "bic")], "model_id": None}


def test_aic_with_shared_params_and_an_unsorted_list(client: TestClient) -> None:
    rs = np.random.RandomState(3)
    X = np.vstack([rs.normal(0, 1, (60, 3)), rs.normal(4, 0.5, (60, 3))])
    params = {
        "random_state": 7,
        "n_init": 2,
        "init_params": "random_from_data",
        "reg_covar": 1e-4,
        "tol": 1e-4,
        "max_iter": 200,
    }
    response = post(
        client,
        {
            "data": {"points": X.tolist()},
            "grid": {"n_components": [3, 1, 2], "covariance_type": ["diag", "full"]},
            "criterion": "aic",
            "params": params,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["criterion"] == "aic"
    cells = body["scores"]
    assert [(c["covariance_type"], c["n_components"]) for c in cells] == [
        ("diag", 1),
        ("diag", 2),
        ("diag", 3),
        ("full", 1),
        ("full", 2),
        ("full", 3),
    ]
    for cell in cells:
        assert_cell_equals(
            cell, sklearn_cell(X, cell["n_components"], cell["covariance_type"], params), X
        )
    assert body["best"]["aic"] == cells[expected_best(cells, "aic")]["aic"]
    assert body["best"]["n_components"] == cells[expected_best(cells, "aic")]["n_components"]


@pytest.mark.parametrize("order", [["tied", "full"], ["full", "tied"]])
def test_a_tie_goes_to_the_earlier_cell(client: TestClient, order: list[str]) -> None:
    # One Gaussian: with one component, full and tied are the same model with the same
    # number of parameters, so sklearn gives them the same BIC to the last bit.
    X = np.random.RandomState(0).multivariate_normal([0, 1], [[1, 0.5], [0.5, 2]], 300)
    params = {"random_state": 0}
    a, b = (sklearn_cell(X, 1, cov, params).bic(X) for cov in order)
    assert a == b, "precondition: sklearn ties these two cells"
    response = post(
        client,
        {
            "data": {"points": X.tolist()},
            "grid": {"n_components": [1, 2], "covariance_type": order},
            "params": params,
        },
    )
    assert response.status_code == 200, response.text
    best = response.json()["best"]
    assert (best["n_components"], best["covariance_type"]) == (1, order[0])
    np.testing.assert_allclose(best["bic"], a, rtol=1e-10)


def test_warnings_are_reported_per_cell(client: TestClient) -> None:
    X = seed_X()
    params = {"random_state": 0, "max_iter": 1}
    response = post(
        client,
        {
            "data": {"generator": SEED_BLOBS},
            "grid": {"n_components": [1, 3, 4], "covariance_type": ["full", "spherical"]},
            "params": params,
        },
    )
    assert response.status_code == 200, response.text
    for cell in response.json()["scores"]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gm = sklearn_cell(X, cell["n_components"], cell["covariance_type"], params)
        assert_cell_equals(cell, gm, X)
        expected = sorted({w.category.__name__ for w in caught})
        assert sorted({w["category"] for w in cell["warnings"]}) == expected
    assert any(not c["converged"] for c in response.json()["scores"])


def test_a_cell_sklearn_refuses_is_reported_not_fatal(client: TestClient) -> None:
    # Three distinct points repeated: with three components and no regularisation each
    # component sits on one point and its covariance is singular.
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]] * 10)
    params = {"reg_covar": 0.0, "random_state": 0}
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        sklearn_cell(X, 3, "full", params)
    body = {"data": {"points": X.tolist()}, "grid": {"n_components": [1, 3]}, "params": params}
    response = post(client, body)
    assert response.status_code == 200, response.text
    good, bad = response.json()["scores"]
    assert_cell_equals(good, sklearn_cell(X, 1, "full", params), X)
    assert bad["n_components"] == 3
    assert "ill-defined empirical covariance" in bad["error"]
    assert bad["bic"] is None and bad["aic"] is None and bad["converged"] is None
    assert response.json()["best"]["n_components"] == 1

    # When every cell fails there is no best: a 422 naming the grid.
    only_bad = {**body, "grid": {"n_components": [3]}}
    problem = assert_problem(post(client, only_bad), 422, ["body", "grid"])
    assert "ill-defined empirical covariance" in problem["detail"]


def test_store_best_stores_the_winner_without_refitting(client: TestClient) -> None:
    X = seed_X()
    params = {"random_state": 0}
    response = post(
        client,
        {
            "data": {"generator": SEED_BLOBS},
            "grid": {"n_components": {"min": 2, "max": 5}, "covariance_type": ["full", "diag"]},
            "params": params,
            "store_best": True,
            "name": "chosen by bic",
        },
    )
    assert response.status_code == 200, response.text
    best = response.json()["best"]
    assert best["model_id"]

    model = client.get(f"/v1/models/{best['model_id']}").json()
    assert model["algorithm"] == "gaussian_mixture"
    assert model["name"] == "chosen by bic"
    assert model["n_components"] == best["n_components"]
    assert model["covariance_type"] == best["covariance_type"]
    assert model["params"] == {
        **model["params"],
        **params,
        "n_components": best["n_components"],
        "covariance_type": best["covariance_type"],
    }
    # The stored estimator is the grid's own fit: same fit time, not a second fit.
    assert model["fit_seconds"] == best["fit_seconds"]
    assert model["bic"] == best["bic"] and model["aic"] == best["aic"]

    gm = sklearn_cell(X, best["n_components"], best["covariance_type"], params)
    np.testing.assert_allclose(model["means"], gm.means_, rtol=1e-10)
    np.testing.assert_allclose(model["covariances"], gm.covariances_, rtol=1e-10)
    probe = X[:25]
    predicted = client.post(
        f"/v1/models/{best['model_id']}/predict", json={"points": probe.tolist()}
    ).json()
    assert predicted["labels"] == gm.predict(probe).tolist()
    assert client.get("/v1/models").json()["total"] == 1


def test_without_store_best_nothing_is_stored(client: TestClient) -> None:
    body = {"data": {"generator": SEED_BLOBS}, "grid": {"n_components": [1, 2]}}
    assert post(client, body).json()["best"]["model_id"] is None
    assert client.get("/v1/models").json()["total"] == 0


BLOBS = {"generator": SEED_BLOBS}  # 200 samples, 2 features


@pytest.mark.parametrize(
    ("body", "status", "loc"),
    [
        ({"grid": {"n_components": [0, 2]}}, 422, ["body", "grid", "n_components", 0]),
        ({"grid": {"n_components": []}}, 422, ["body", "grid", "n_components"]),
        ({"grid": {"n_components": "3"}}, 422, ["body", "grid", "n_components"]),
        ({"grid": {"n_components": [2, 1.5]}}, 422, ["body", "grid", "n_components", 1]),
        ({"grid": {"n_components": [2, 3, 2]}}, 422, ["body", "grid", "n_components", 2]),
        (
            {"grid": {"n_components": {"min": 0, "max": 2}}},
            422,
            ["body", "grid", "n_components", "min"],
        ),
        ({"grid": {"n_components": {"min": 2}}}, 422, ["body", "grid", "n_components", "max"]),
        (
            {"grid": {"n_components": {"min": 3, "max": 2}}},
            422,
            ["body", "grid", "n_components", "max"],
        ),
        ({"grid": {"n_components": [2, 300]}}, 422, ["body", "grid", "n_components", 1]),
        (
            {"grid": {"n_components": {"min": 1, "max": 10_000_000}}},
            422,
            ["body", "grid", "n_components", "max"],
        ),
        ({"grid": {"n_components": [5, 201]}}, 422, ["body", "grid", "n_components", 1]),
        (
            {"grid": {"n_components": {"min": 150, "max": 250}}},
            422,
            ["body", "grid"],
        ),
        (
            {"grid": {"n_components": {"min": 195, "max": 210}}},
            422,
            ["body", "grid", "n_components", "max"],
        ),
        (
            {"grid": {"n_components": [2], "covariance_type": []}},
            422,
            ["body", "grid", "covariance_type"],
        ),
        (
            {"grid": {"n_components": [2], "covariance_type": ["full", "round"]}},
            422,
            ["body", "grid", "covariance_type", 1],
        ),
        (
            {"grid": {"n_components": [2], "covariance_type": ["diag", "full", "diag"]}},
            422,
            ["body", "grid", "covariance_type", 2],
        ),
        ({"grid": {"n_components": [2], "extra": 1}}, 422, ["body", "grid", "extra"]),
        ({}, 422, ["body", "grid"]),
        ({"grid": {"n_components": [2]}, "criterion": "hqc"}, 422, ["body", "criterion"]),
        (
            {"grid": {"n_components": [2]}, "params": {"n_components": 2}},
            422,
            ["body", "params", "n_components"],
        ),
        (
            {"grid": {"n_components": [2]}, "params": {"covariance_type": "full"}},
            422,
            ["body", "params", "covariance_type"],
        ),
        (
            {"grid": {"n_components": [2]}, "params": {"n_clusters": 2}},
            422,
            ["body", "params", "n_clusters"],
        ),
        (
            {"grid": {"n_components": [2]}, "params": {"max_iter": 10**9}},
            422,
            ["body", "params", "max_iter"],
        ),
        (
            {"grid": {"n_components": [2, 3]}, "params": {"means_init": [[0, 0], [1, 1]]}},
            422,
            ["body", "params", "means_init"],
        ),
        ({"grid": {"n_components": [2]}, "store_best": "yes"}, 422, ["body", "store_best"]),
    ],
)
def test_bad_requests_name_the_field(
    client: TestClient, body: dict[str, Any], status: int, loc: list[str | int]
) -> None:
    assert_problem(post(client, {"data": BLOBS, **body}), status, loc)
    assert client.get("/v1/models").json()["total"] == 0


def test_params_naming_a_grid_field_say_to_use_the_grid(client: TestClient) -> None:
    body = {"data": BLOBS, "grid": {"n_components": [2]}, "params": {"n_components": 2}}
    problem = assert_problem(post(client, body), 422, ["body", "params", "n_components"])
    assert "grid.n_components" in problem["detail"]


def test_the_cell_limit_is_a_setting(tmp_path: Path) -> None:
    settings = Settings(store_dir=tmp_path / "s", secret_key="k", max_grid_cells=5)
    body = {"data": BLOBS, "grid": {"n_components": [1, 2, 3], "covariance_type": ["full", "diag"]}}
    with TestClient(create_app(settings)) as client:
        problem = assert_problem(post(client, body), 422, ["body", "grid"])
    assert "GMM_MAX_GRID_CELLS" in problem["detail"] and "6 cells" in problem["detail"]


# -- the picture ----------------------------------------------------------------------
PLOT_BODY = {
    "data": BLOBS,
    "grid": {"n_components": {"min": 1, "max": 4}, "covariance_type": ["full", "spherical"]},
    "params": {"random_state": 0},
}


def test_png_plot_decodes_at_the_requested_size(client: TestClient) -> None:
    from matplotlib import image

    response = client.post(
        "/v1/model-selection/plot?format=png&width=640&height=400&dpi=80", json=PLOT_BODY
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG_SIGNATURE)
    pixels = image.imread(io.BytesIO(response.content), format="png")
    assert pixels.shape[:2] == (400, 640)
    assert float(pixels[..., :3].std()) > 0.01, "the image is blank"


def test_png_is_the_default_format(client: TestClient) -> None:
    response = client.post("/v1/model-selection/plot", json=PLOT_BODY)
    assert response.status_code == 200, response.text
    assert response.content.startswith(PNG_SIGNATURE)


def test_svg_plot_parses_with_one_line_per_covariance_type(client: TestClient) -> None:
    response = client.post("/v1/model-selection/plot?format=svg", json=PLOT_BODY)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(response.content)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    # matplotlib names each line artist; two covariance types plus the best marker.
    ids = [el.get("id", "") for el in root.iter() if el.get("id", "").startswith("line2d")]
    assert len(ids) >= 3
    assert "n_components" in response.text


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("format=gif", ["query", "format"]),
        ("width=10", ["query", "width"]),
        ("height=100000", ["query", "height"]),
        ("dpi=0", ["query", "dpi"]),
    ],
)
def test_bad_plot_options(client: TestClient, query: str, loc: list[str | int]) -> None:
    assert_problem(client.post(f"/v1/model-selection/plot?{query}", json=PLOT_BODY), 422, loc)


def test_plot_refuses_store_best(client: TestClient) -> None:
    response = client.post("/v1/model-selection/plot", json={**PLOT_BODY, "store_best": True})
    assert_problem(response, 422, ["body", "store_best"])
    assert client.get("/v1/models").json()["total"] == 0


# -- with a fit time limit, cells go through the killable worker processes -------------
@pytest.fixture
def limited_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(store_dir=tmp_path / "s", secret_key="k", fit_timeout_seconds=120)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.slow
def test_grid_under_a_fit_time_limit_equals_sklearn(limited_client: TestClient) -> None:
    X = seed_X()
    params = {"random_state": 0}
    response = post(
        limited_client,
        {
            "data": {"generator": SEED_BLOBS},
            "grid": {"n_components": [1, 2, 4], "covariance_type": ["full", "tied"]},
            "params": params,
            "store_best": True,
        },
    )
    assert response.status_code == 200, response.text
    for cell in response.json()["scores"]:
        gm = sklearn_cell(X, cell["n_components"], cell["covariance_type"], params)
        assert_cell_equals(cell, gm, X)
    assert (
        limited_client.get(f"/v1/models/{response.json()['best']['model_id']}").status_code == 200
    )


def test_no_warning_escapes_into_the_test_process(client: TestClient) -> None:
    """``filterwarnings = error``: a ConvergenceWarning leaking out of a cell would fail."""
    body = {"data": BLOBS, "grid": {"n_components": [2]}, "params": {"max_iter": 1}}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        response = post(client, body)
    assert response.status_code == 200
    assert response.json()["scores"][0]["warnings"][0]["category"] == "ConvergenceWarning"


def test_the_benchmark_runs_at_toy_size(capsys: pytest.CaptureFixture[str]) -> None:
    """``bench/model_selection.py`` in-process at toy size, so its code cannot rot;
    only that it compared equal work is checked, never its timings. With
    ``distributed`` installed its ``--dask`` variant runs too (a 2-worker
    LocalCluster: a few seconds more)."""
    import importlib.util

    from bench import model_selection
    from service.domain.analysis import selection

    before = selection.BACKEND
    argv = ["--n-samples", "300", "--max-k", "2", "--repeats", "1", "--backends", "threading"]
    dask = importlib.util.find_spec("distributed") is not None
    result = model_selection.main([*argv, "--dask"] if dask else argv)
    assert result["matches_sklearn"] is True
    assert result["ratio"]["threading"] > 0
    if dask:
        assert result["ratio"]["dask"] > 0
        assert result["dask_cluster"]["status"]["workers"] == 2
    assert before == selection.BACKEND
    assert "ratio" in capsys.readouterr().out
