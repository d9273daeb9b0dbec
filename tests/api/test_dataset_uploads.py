"""``POST /v1/datasets`` and ``{"dataset_id"}``: uploads of ``.npy``, CSV and JSON,
stored once by content, fitted exactly as sklearn fits the same array in-process.

Every bad body answers a 4xx problem naming the place (``["body", row, column]`` for a
value); a pickled ``.npy`` is refused from its header and its pickle never runs.
"""

from __future__ import annotations

import io
import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from service.config import Settings
from service.main import create_app
from service.store.base import array_sha256
from tests.helpers_store import local_store

NPY = "application/x-npy"
PROBLEM = "application/problem+json"
GMM = {"n_components": 3, "random_state": 0}


def npy_bytes(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def csv_text(X: np.ndarray, header: str | None = "x,y") -> str:
    lines = [",".join(repr(float(v)) for v in row) for row in X]
    return "\n".join(([header] if header else []) + lines) + "\n"


def upload(client: TestClient, body: bytes | str, content_type: str) -> Any:
    return client.post("/v1/datasets", content=body, headers={"Content-Type": content_type})


def assert_problem(r: Any, status: int, loc: list[str | int] | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    problem: dict[str, Any] = r.json()
    assert {"type", "title", "status", "detail"} <= set(problem)
    if loc is not None:
        assert loc in [e["loc"] for e in problem.get("errors") or []], problem
    return problem


@pytest.fixture
def X() -> np.ndarray:
    X, _ = make_blobs(n_samples=120, n_features=2, centers=3, random_state=4)
    return X


def fit(client: TestClient, data: dict[str, Any], algorithm: str = "gaussian_mixture") -> Any:
    params = GMM if algorithm == "gaussian_mixture" else {"n_clusters": 3, "random_state": 0}
    r = client.post("/v1/models", json={"algorithm": algorithm, "params": params, "data": data})
    assert r.status_code == 201, r.text
    return r.json()


def stored_dataset_dirs(settings: Settings) -> list[str]:
    return sorted(os.listdir(Path(settings.store_dir) / "datasets"))


# -- one array, every way in --------------------------------------------------------
def test_json_npy_csv_and_dataset_id_fit_identically_and_as_sklearn(
    client: TestClient, settings: Settings, X: np.ndarray
) -> None:
    ids = {
        "npy": upload(client, npy_bytes(X), NPY),
        "csv": upload(client, csv_text(X), "text/csv"),
        "json": client.post("/v1/datasets", json={"points": X.tolist()}),
    }
    assert ids["npy"].status_code == 201, ids["npy"].text
    assert {r.status_code for k, r in ids.items() if k != "npy"} == {200}
    dataset_id = ids["npy"].json()["id"]
    assert {r.json()["id"] for r in ids.values()} == {dataset_id}
    assert stored_dataset_dirs(settings) == [dataset_id]

    from_points = fit(client, {"points": X.tolist()})
    from_dataset = fit(client, {"dataset_id": dataset_id})
    assert from_points["dataset_id"] == from_dataset["dataset_id"] == dataset_id
    assert stored_dataset_dirs(settings) == [dataset_id]  # the fit stored nothing new

    ref = GaussianMixture(**GMM).fit(X)
    for body in (from_points, from_dataset):
        np.testing.assert_array_equal(np.asarray(body["means"]), ref.means_)
        np.testing.assert_array_equal(np.asarray(body["covariances"]), ref.covariances_)
        assert body["labels"] == ref.predict(X).tolist()

    km = fit(client, {"dataset_id": dataset_id}, "kmeans")
    ref_km = KMeans(n_clusters=3, random_state=0).fit(X)
    np.testing.assert_array_equal(np.asarray(km["means"]), ref_km.cluster_centers_)
    assert km["labels"] == ref_km.labels_.tolist()


def test_dataset_id_works_for_model_selection_and_comparisons(
    client: TestClient, X: np.ndarray
) -> None:
    dataset_id = upload(client, npy_bytes(X), NPY).json()["id"]
    for data in ({"dataset_id": dataset_id}, {"points": X.tolist()}):
        sel = client.post(
            "/v1/model-selection",
            json={"data": data, "grid": {"n_components": [2, 3]}, "params": {"random_state": 0}},
        )
        assert sel.status_code == 200, sel.text
        cmp_ = client.post(
            "/v1/comparisons",
            json={
                "data": data,
                "algorithms": [
                    {"algorithm": "kmeans", "params": {"n_clusters": 3, "random_state": 0}}
                ],
            },
        )
        assert cmp_.status_code == 200, cmp_.text
        scores = [{k: v for k, v in c.items() if k != "fit_seconds"} for c in sel.json()["scores"]]
        if "dataset_id" in data:
            by_id = (scores, cmp_.json()["results"][0]["labels"])
        else:
            assert (scores, cmp_.json()["results"][0]["labels"]) == by_id


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/v1/models", {"algorithm": "kmeans", "params": {"n_clusters": 2}}),
        ("/v1/model-selection", {"grid": {"n_components": [1, 2]}}),
        ("/v1/comparisons", {"algorithms": [{"algorithm": "kmeans", "params": {"n_clusters": 2}}]}),
    ],
)
@pytest.mark.parametrize("dataset_id", ["0" * 64, "not-an-id", "../../secret.key"])
def test_unknown_or_malformed_dataset_id_names_the_field(
    client: TestClient, url: str, body: dict[str, Any], dataset_id: str
) -> None:
    r = client.post(url, json={**body, "data": {"dataset_id": dataset_id}})
    assert_problem(r, 422, ["body", "data", "dataset_id"])


def test_data_takes_exactly_one_source(client: TestClient, X: np.ndarray) -> None:
    dataset_id = upload(client, npy_bytes(X), NPY).json()["id"]
    r = client.post(
        "/v1/models",
        json={
            "algorithm": "kmeans",
            "params": {"n_clusters": 2},
            "data": {"dataset_id": dataset_id, "points": [[0.0], [1.0]]},
        },
    )
    problem = assert_problem(r, 422, ["body", "data"])
    assert "dataset_id" in problem["detail"]


# -- the resource, content addressing, listing, deleting ----------------------------
def test_resource_and_content_addressing(client: TestClient, settings: Settings) -> None:
    X = np.arange(6, dtype=np.int32).reshape(2, 3)
    first = upload(client, npy_bytes(X), NPY)
    assert first.status_code == 201, first.text
    body = first.json()
    assert first.headers["location"] == f"/v1/datasets/{body['id']}"
    assert body["n_samples"] == 2 and body["n_features"] == 3 and body["dtype"] == "float64"
    assert body["sha256"] == body["id"] == array_sha256(X.astype(np.float64))
    assert set(body) >= {"id", "n_samples", "n_features", "dtype", "sha256", "created_at"}

    again = upload(client, npy_bytes(X.astype(np.float64)), NPY)  # same values, other dtype
    assert again.status_code == 200 and again.json() == body
    assert again.headers["location"] == first.headers["location"]
    fortran = upload(client, npy_bytes(np.asfortranarray(X.astype(np.float64))), NPY)
    assert fortran.status_code == 200 and fortran.json()["id"] == body["id"]

    transposed = upload(client, npy_bytes(X.reshape(3, 2)), NPY)  # same bytes, other shape
    assert transposed.status_code == 201 and transposed.json()["id"] != body["id"]
    assert len(stored_dataset_dirs(settings)) == 2
    assert client.get(f"/v1/datasets/{body['id']}").json() == body


def test_list_newest_first_paginated_then_delete(client: TestClient) -> None:
    made = [upload(client, npy_bytes(np.full((2, 2), float(i))), NPY).json() for i in range(3)]
    page = client.get("/v1/datasets", params={"limit": 2}).json()
    assert [d["id"] for d in page["items"]] == [made[2]["id"], made[1]["id"]]
    assert page["total"] == 3 and page["next_cursor"]
    rest = client.get("/v1/datasets", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [d["id"] for d in rest["items"]] == [made[0]["id"]] and rest["next_cursor"] is None

    assert client.delete(f"/v1/datasets/{made[1]['id']}").status_code == 204
    assert_problem(client.get(f"/v1/datasets/{made[1]['id']}"), 404)
    assert_problem(client.delete(f"/v1/datasets/{made[1]['id']}"), 404)
    assert client.get("/v1/datasets").json()["total"] == 2


@pytest.mark.parametrize("bad", ["abc", "0" * 63, "G" * 64, "..", "%2e%2e%2fsecret.key"])
def test_malformed_ids_are_404(client: TestClient, bad: str) -> None:
    assert_problem(client.get(f"/v1/datasets/{bad}"), 404)
    assert_problem(client.delete(f"/v1/datasets/{bad}"), 404)


def test_models_survive_dataset_deletion_and_restart(settings: Settings, X: np.ndarray) -> None:
    """Deleting a dataset never breaks a model: the model holds its own reference."""
    with TestClient(create_app(settings)) as client:
        dataset_id = upload(client, npy_bytes(X), NPY).json()["id"]
        model = fit(client, {"dataset_id": dataset_id})
        probe = {"points": [[0.0, 0.0], [50.0, 50.0]]}
        before = client.post(f"/v1/models/{model['id']}/score", json=probe).json()
        assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    with TestClient(create_app(settings)) as client:
        assert_problem(client.get(f"/v1/datasets/{dataset_id}"), 404)
        plot = client.get(f"/v1/models/{model['id']}/plot", params={"format": "svg"})
        assert plot.status_code == 200, plot.text
        after = client.post(f"/v1/models/{model['id']}/score", json=probe).json()
        assert after == before and after["percentile"] is not None
        ref = GaussianMixture(**GMM).fit(X)
        train = np.sort(ref.score_samples(X))
        ll = ref.score_samples(np.asarray(probe["points"]))
        expected = 100.0 * np.searchsorted(train, ll, side="right") / len(train)
        np.testing.assert_array_equal(after["percentile"], expected)
        # The same array uploaded again is the same dataset once more.
        assert upload(client, npy_bytes(X), NPY).json()["id"] == dataset_id


def test_old_bundles_with_their_own_points_still_plot(settings: Settings, X: np.ndarray) -> None:
    """Models stored before datasets carried ``X`` inside the pickled bundle."""
    with TestClient(create_app(settings)) as client:
        model = fit(client, {"points": X.tolist()})
    store = local_store(settings.store_dir, secret_key="test-secret-key")
    bundle = store.load(model["id"])
    meta = store.get_metadata(model["id"])
    store.delete(model["id"])
    old = {k: v for k, v in bundle.items() if k != "dataset_id"} | {"X": X}
    meta.pop("artifact"), meta.pop("points")
    store.put(model["id"], old, meta)
    with TestClient(create_app(settings)) as client:
        plot = client.get(f"/v1/models/{model['id']}/plot", params={"format": "svg"})
        assert plot.status_code == 200, plot.text
        score = client.post(f"/v1/models/{model['id']}/score", json={"points": [[0.0, 0.0]]})
        assert score.status_code == 200 and score.json()["percentile"] is not None


# -- bad .npy bodies ----------------------------------------------------------------
class _Boom:
    """Unpickling this creates ``path``: the file must never appear."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_pickled_npy_is_refused_and_never_unpickled(client: TestClient, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = np.empty((1, 1), dtype=object)
    evil[0, 0] = _Boom(str(marker))
    body = npy_bytes(evil, allow_pickle=True)
    assert not marker.exists()
    problem = assert_problem(upload(client, body, NPY), 422, ["body"])
    assert "never unpickled" in problem["detail"]
    assert not marker.exists()
    pickle.loads(pickle.dumps(1))  # pickle itself is fine; only ours was refused


@pytest.mark.parametrize(
    "array",
    [
        np.array([["a", "b"]]),
        np.array([[1 + 2j, 3j]]),
        np.array([[True, False]]),
        np.zeros((2, 2), dtype=[("a", "<f8")]),
        np.array([[b"x"]]),
    ],
    ids=["str", "complex", "bool", "structured", "bytes"],
)
def test_non_numeric_dtypes_are_422(client: TestClient, array: np.ndarray) -> None:
    problem = assert_problem(upload(client, npy_bytes(array), NPY), 422, ["body"])
    assert problem["errors"][0]["type"] == "npy_dtype"


@pytest.mark.parametrize("shape", [(2, 2, 2), (4,), (), (0, 3), (3, 0)])
def test_arrays_that_are_not_a_matrix_are_422(client: TestClient, shape: tuple[int, ...]) -> None:
    problem = assert_problem(upload(client, npy_bytes(np.zeros(shape)), NPY), 422, ["body"])
    assert problem["errors"][0]["type"] == "npy_shape"


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_their_cell(client: TestClient, value: float) -> None:
    X = np.zeros((4, 3))
    X[2, 1] = value
    assert_problem(upload(client, npy_bytes(X), NPY), 422, ["body", 2, 1])


def test_float16_and_float32_and_ints_are_stored_as_float64(client: TestClient) -> None:
    X = np.array([[1.5, 2.0], [3.0, -4.25]])
    ids = {
        upload(client, npy_bytes(X.astype(dtype)), NPY).json()["id"]
        for dtype in ("<f2", ">f4", "<f8", ">f8")
    }
    assert ids == {array_sha256(X)}


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:-5],  # truncated data
        lambda b: b[:40],  # truncated header
        lambda b: b + b"\x00" * 8,  # longer than the header says
        lambda b: b"\x93NUMPY\x09\x00" + b[8:],  # unknown format version
        lambda b: b"PK\x03\x04" + b[4:],  # a zip (.npz) is not a .npy
        lambda b: b"not an array at all",
        lambda b: b"",
    ],
    ids=["truncated", "short-header", "trailing", "version", "npz", "garbage", "empty"],
)
def test_malformed_npy_bodies_are_422(client: TestClient, mangle: Any) -> None:
    body = mangle(npy_bytes(np.arange(12.0).reshape(4, 3)))
    assert_problem(upload(client, body, NPY), 422, ["body"])


def test_a_text_file_sent_as_npy_is_called_text_not_a_pickle(
    client: TestClient, X: np.ndarray
) -> None:
    """A CSV saved under a ``.npy`` name is the usual wrong ``.npy``: numpy's own load
    calls it "pickled (object) data"; the answer says it is text and quotes it, on
    upload and on predict and score alike."""
    text = csv_text(X[:3])
    model = fit(client, {"points": X.tolist()})
    answers = {
        "upload": upload(client, text, NPY),
        "predict": client.post(
            f"/v1/models/{model['id']}/predict", content=text, headers={"Content-Type": NPY}
        ),
        "score": client.post(
            f"/v1/models/{model['id']}/score", content=text, headers={"Content-Type": NPY}
        ),
    }
    for where, answer in answers.items():
        problem = assert_problem(answer, 422, ["body"])
        detail = problem["detail"]
        assert "is text ('x,y\\n" in detail and "not a .npy file" in detail, (where, detail)
        assert "pickle" not in detail, (where, detail)
        assert "text/csv" in detail and "numpy.save" in detail, (where, detail)
        assert problem["errors"][0]["type"] == "npy_format"
    # With a spreadsheet's byte order mark, and cut inside a character, it is still text.
    bom = assert_problem(upload(client, "\ufeff" + text, NPY), 422, ["body"])
    assert "is text ('x,y" in bom["detail"]
    cut = assert_problem(upload(client, "x" + "é" * 40, NPY), 422, ["body"])  # 64 bytes: 31½ é
    assert "is text" in cut["detail"]
    # Binary bytes that are not a .npy file are not called text.
    binary = assert_problem(upload(client, bytes(range(256)), NPY), 422, ["body"])
    assert "not a .npy file" in binary["detail"] and "text (" not in binary["detail"]
    npz = io.BytesIO()
    np.savez(npz, X=X)
    archive = assert_problem(upload(client, npz.getvalue(), NPY), 422, ["body"])
    assert ".npz (zip) archive" in archive["detail"]


def test_npy_header_claiming_a_huge_shape_is_413_before_allocating(client: TestClient) -> None:
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**12, 3)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    assert_problem(upload(client, buf.getvalue() + b"\x00" * 64, NPY), 413, ["body"])


# -- bad CSV bodies -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "loc"),
    [
        ("1,2\n3,4\n5,6,7\n", ["body", 2]),
        ("x,y\n1,2\n3,four\n", ["body", 1, 1]),
        ("1,2\n3,nan\n", ["body", 1, 1]),
        ("1,2\n3,inf\n", ["body", 1, 1]),
        ("", ["body"]),
        ("\n\n", ["body"]),
        ("x,y\n", ["body"]),
        ('1,"2\n', ["body"]),
    ],
    ids=["ragged", "word", "nan", "inf", "empty", "blank", "header-only", "open-quote"],
)
def test_bad_csv_names_the_place(client: TestClient, text: str, loc: list[str | int]) -> None:
    assert_problem(upload(client, text, "text/csv"), 422, loc)


def test_csv_header_parameter_and_blank_lines(client: TestClient) -> None:
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    plain = upload(client, "1,2\n\n3,4\n", "text/csv")
    assert plain.json()["id"] == array_sha256(X)
    headed = upload(client, "\ufeffa,b\r\n1,2\r\n3,4\r\n", "text/csv; charset=utf-8")
    assert headed.json()["id"] == array_sha256(X)
    numeric_header = upload(client, "0,0\n1,2\n3,4\n", "text/csv; header=present")
    assert numeric_header.json()["id"] == array_sha256(X)
    absent = upload(client, "a,b\n1,2\n", "text/csv; header=absent")
    assert_problem(absent, 422, ["body", 0, 0])
    assert_problem(upload(client, b"1,2\n\xff\xfe,3\n", "text/csv"), 422, ["body"])


def test_other_media_types_are_415(client: TestClient) -> None:
    assert_problem(upload(client, "1 2", "text/plain"), 415)


def test_json_body_errors_keep_their_locations(client: TestClient) -> None:
    r = client.post("/v1/datasets", json={"points": [[1.0, 2.0], [3.0, "x"]]})
    assert_problem(r, 422, ["body", "points", 1, 1])
    r = client.post("/v1/datasets", json={"points": [[1.0, 2.0], [3.0]]})
    assert_problem(r, 422, ["body", "points", 1])
    assert_problem(client.post("/v1/datasets", json={}), 422, ["body"])
    r = client.post("/v1/datasets", json={"generator": {"kind": "blobs", "n_samples": 0}})
    assert_problem(r, 422, ["body", "generator", "n_samples"])
    assert_problem(client.post("/v1/datasets"), 422, ["body"])


def test_generator_datasets_are_the_generated_points(client: TestClient) -> None:
    spec = {"kind": "blobs", "n_samples": 40, "centers": 2, "random_state": 3}
    body = client.post("/v1/datasets", json={"generator": spec, "name": "two-blobs"}).json()
    X, _ = make_blobs(n_samples=40, centers=2, random_state=3)
    assert body["id"] == array_sha256(X) and body["name"] == "two-blobs"


# -- size limits ----------------------------------------------------------------------
@pytest.fixture
def small(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        store_dir=tmp_path / "small",
        secret_key="k",
        max_body_bytes=2048,
        max_upload_bytes=8192,
        max_points=500,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_uploads_may_pass_the_body_limit_up_to_the_upload_limit(small: TestClient) -> None:
    X = np.arange(400.0).reshape(200, 2)  # 3.3 KB: over GMM_MAX_BODY_BYTES, under uploads
    assert upload(small, npy_bytes(X), NPY).status_code == 201
    # JSON is decoded in memory and keeps the body limit, even here.
    r = small.post("/v1/datasets", json={"points": X.tolist()})
    assert "GMM_MAX_BODY_BYTES" in assert_problem(r, 413)["detail"]
    # Every other route keeps the body limit.
    r = small.post(
        f"/v1/models/{'0' * 28}/predict", content=npy_bytes(X), headers={"Content-Type": NPY}
    )
    assert "GMM_MAX_BODY_BYTES" in assert_problem(r, 413)["detail"]


def test_oversized_uploads_are_413_with_or_without_content_length(small: TestClient) -> None:
    body = npy_bytes(np.zeros((600, 2)))  # 9.7 KB
    r = upload(small, body, NPY)
    assert "GMM_MAX_UPLOAD_BYTES" in assert_problem(r, 413)["detail"]

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    r = small.post("/v1/datasets", content=chunks(), headers={"Content-Type": NPY})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert "GMM_MAX_UPLOAD_BYTES" in assert_problem(r, 413)["detail"]
    assert small.get("/v1/datasets").json()["total"] == 0


def test_point_limits_hold_for_uploads(small: TestClient) -> None:
    r = upload(small, "\n".join("1" for _ in range(501)), "text/csv")
    assert "GMM_MAX_POINTS" in assert_problem(r, 413)["detail"]


# -- predict and score with .npy ------------------------------------------------------
def test_predict_and_score_take_and_answer_npy(client: TestClient, X: np.ndarray) -> None:
    model = fit(client, {"points": X.tolist()}, "gaussian_mixture")
    kmeans = fit(client, {"points": X.tolist()}, "kmeans")
    probe = X[:17] + 0.25
    ref = GaussianMixture(**GMM).fit(X)
    ref_km = KMeans(n_clusters=3, random_state=0).fit(X)

    def post(
        url: str, points: np.ndarray | None = None, accept: str | None = None, **params: str
    ) -> Any:
        """``points`` as a .npy body (JSON when None: the probe as JSON)."""
        headers = {"Accept": accept} if accept else {}
        if points is None:
            return client.post(url, json={"points": probe.tolist()}, headers=headers, params=params)
        headers["Content-Type"] = NPY
        return client.post(url, content=npy_bytes(points), headers=headers, params=params)

    def as_npy(r: Any) -> np.ndarray:
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == NPY
        return np.load(io.BytesIO(r.content), allow_pickle=False)

    url = f"/v1/models/{model['id']}"
    assert post(f"{url}/predict", probe).json() == post(f"{url}/predict").json()
    assert post(f"{url}/score", probe).json() == post(f"{url}/score").json()
    np.testing.assert_array_equal(as_npy(post(f"{url}/predict", probe, NPY)), ref.predict(probe))
    # Predictions come from compiled model arrays: sklearn's numbers to 1e-12.
    np.testing.assert_allclose(
        as_npy(post(f"{url}/predict", None, NPY, output="probabilities")),
        ref.predict_proba(probe),
        rtol=0,
        atol=1e-12,
    )
    np.testing.assert_array_equal(
        as_npy(post(f"{url}/score", probe, NPY)), ref.score_samples(probe)
    )
    km_url = f"/v1/models/{kmeans['id']}"
    np.testing.assert_allclose(
        as_npy(post(f"{km_url}/predict", probe, NPY, output="distances")),
        ref_km.transform(probe),
        rtol=1e-12,
        atol=1e-12,
    )
    wrong = post(f"{km_url}/predict", None, NPY, output="probabilities")
    assert_problem(wrong, 422, ["query", "output"])
    assert_problem(post(f"{url}/predict", probe[:, :1]), 422, ["body", 0])
    junk = client.post(f"{url}/predict", content=b"junk", headers={"Content-Type": NPY})
    assert_problem(junk, 422, ["body"])
    assert_problem(client.post(f"{url}/predict"), 422, ["body"])
    # JSON stays the answer unless the client prefers .npy.
    both = "application/json, application/x-npy;q=0.5"
    assert (
        post(f"{url}/predict", probe, both).headers["content-type"].startswith("application/json")
    )


# -- the store under races ------------------------------------------------------------
def test_racing_uploads_of_one_array_store_it_once(tmp_path: Path) -> None:
    store = local_store(tmp_path / "s", secret_key="k")
    X = np.random.RandomState(0).randn(2000, 4)
    results: list[tuple[dict[str, Any], bool]] = []
    lock = threading.Lock()

    def put() -> None:
        meta = store.put_dataset(X, {"name": None, "created_at": "now"})
        with lock:
            results.append(meta)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(created for _, created in results) == 1
    assert {meta["id"] for meta, _ in results} == {array_sha256(X)}
    assert os.listdir(tmp_path / "s" / "datasets") == [array_sha256(X)]
    assert os.listdir(tmp_path / "s" / "tmp") == []


def test_stored_points_are_a_read_only_memmap_sklearn_fits_identically(tmp_path: Path) -> None:
    store = local_store(tmp_path / "s", secret_key="k")
    X, _ = make_blobs(n_samples=300, n_features=3, centers=4, random_state=1)
    meta, _ = store.put_dataset(X, {"name": None, "created_at": "now"})
    mapped = store.load_dataset(meta["id"])
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    for est in (GaussianMixture(n_components=4, random_state=0), KMeans(4, random_state=0)):
        a = est.fit(mapped)
        centers = getattr(a, "means_", None) if hasattr(a, "means_") else a.cluster_centers_
        b = type(est)(**est.get_params()).fit(np.array(X))
        other = b.means_ if hasattr(b, "means_") else b.cluster_centers_
        np.testing.assert_array_equal(centers, other)


def test_tampered_points_are_refused(settings: Settings, X: np.ndarray) -> None:
    with TestClient(create_app(settings)) as client:
        dataset_id = upload(client, npy_bytes(X), NPY).json()["id"]
    [path] = (Path(settings.store_dir) / "datasets" / dataset_id).glob("data-*.npy")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))  # a new inode-mtime: verified afresh
    with TestClient(create_app(settings)) as client:
        r = client.post(
            "/v1/models",
            json={
                "algorithm": "kmeans",
                "params": {"n_clusters": 2},
                "data": {"dataset_id": dataset_id},
            },
        )
        problem = assert_problem(r, 500)
        assert problem["type"].endswith("artifact-integrity")


def test_uploading_and_deleting_one_dataset_at_once_is_never_a_5xx(client: TestClient) -> None:
    """Each upload writes a data file of its own and each delete removes its row's file,
    so an upload racing a delete answers 201 or 200 and a delete 204 or 404."""
    X = np.random.default_rng(3).normal(size=(200, 3))
    body = npy_bytes(X)
    dataset_id = upload(client, body, NPY).json()["id"]
    statuses: list[tuple[str, int]] = []
    lock = threading.Lock()

    def race(kind: str) -> None:
        for _ in range(25):
            if kind == "post":
                r = upload(client, body, NPY)
            else:
                r = client.delete(f"/v1/datasets/{dataset_id}")
            with lock:
                statuses.append((kind, r.status_code))

    threads = [threading.Thread(target=race, args=(k,)) for k in ("post", "post", "delete")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {s for k, s in statuses if k == "post"} <= {200, 201}, statuses
    assert {s for k, s in statuses if k == "delete"} <= {204, 404}, statuses
    # Whatever won last, the store is consistent: a listed dataset loads.
    if client.get(f"/v1/datasets/{dataset_id}").status_code == 200:
        fit = {
            "algorithm": "kmeans",
            "params": {"n_clusters": 2},
            "data": {"dataset_id": dataset_id},
        }
        assert client.post("/v1/models", json=fit).status_code == 201
