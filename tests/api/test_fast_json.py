"""Points decoded into arrays without pydantic walking each number.

The fast path (``service.api.routing.decode_json``) must be invisible to clients:
every malformed body gets exactly the problem+json the number-by-number schema gives
(compared here with the fast path switched off), valid bodies give exactly the arrays
``np.asarray(points, dtype=float64)`` gives, and fits and predictions are unchanged.
"""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from service.api import routing
from service.api.routing import decode_json, gc_paused, simd_document
from service.schemas.data import DataSpec
from service.schemas.models import PointsRequest

JSON = {"content-type": "application/json"}
FIT = b'{"algorithm":"gaussian_mixture","params":{"n_components":2,"random_state":0},'
GOOD = [[0.0, 0.0], [0.0, 1.0], [5.0, 5.0], [5.0, 6.0], [0.5, 0.2], [5.2, 5.1]]

#: The ``points`` value of a malformed body, as raw JSON, with where the schema says
#: it fails (relative to ``points``).
MALFORMED: dict[str, tuple[bytes, list[str | int]]] = {
    "nan-literal": (b"[[0, 1], [NaN, 1]]", [1, 0]),
    "infinity-literal": (b"[[0, 1], [1, Infinity]]", [1, 1]),
    "minus-infinity-literal": (b"[[-Infinity, 1]]", [0, 0]),
    "overflowing-float": (b"[[0, 1], [1, 1e400]]", [1, 1]),
    "bool-among-floats": (b"[[0.5, 1], [1, true]]", [1, 1]),
    "bool-among-ints": (b"[[0, false], [1, 2]]", [0, 1]),
    "bools-only": (b"[[true, false]]", [0, 0]),
    "string-number": (b'[[0, 1], [1, "1.5"]]', [1, 1]),
    "null": (b"[[0, null]]", [0, 1]),
    "nested-list": (b"[[0, [1]], [1, 2]]", [0, 1]),
    "dict-in-row": (b'[[0, {"x": 1}]]', [0, 1]),
    "ragged": (b"[[0, 1], [1, 2], [3]]", [2]),
    "empty-list": (b"[]", []),
    "empty-row": (b"[[0, 1], []]", [1]),
    "empty-rows": (b"[[], []]", [0]),
    "huge-integer": (b"[[0, 1], [1, 1" + b"0" * 400 + b"]]", [1, 1]),
    "flat-list": (b"[0, 1]", [0]),
    "not-a-list": (b'"0, 1"', []),
    "row-not-a-list": (b"[[0, 1], 2]", [1]),
}


@pytest.fixture
def model_ids(client: TestClient) -> dict[str, str]:
    ids = {}
    for algorithm, params in (
        ("gaussian_mixture", {"n_components": 2, "random_state": 0}),
        ("kmeans", {"n_clusters": 2, "n_init": 1, "random_state": 0}),
    ):
        r = client.post(
            "/v1/models",
            json={"algorithm": algorithm, "params": params, "data": {"points": GOOD}},
        )
        assert r.status_code == 201, r.text
        ids[algorithm] = r.json()["id"]
    return ids


@pytest.fixture(autouse=True)
def every_list_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small lists skip it in production (numpy's fixed costs pass pydantic's walk);
    here the smallest bodies go through it too, so every case tests it."""
    monkeypatch.setattr(routing, "MIN_ARRAY_ROWS", 1)


def _slow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every points list validated number by number by the schema."""
    monkeypatch.setattr(routing, "points_array", lambda value: None)
    monkeypatch.setattr(routing, "simd_document", lambda body: None)


def _bodies(points: bytes, ids: dict[str, str]) -> Iterator[tuple[str, bytes, list[str | int]]]:
    """(path, body, loc prefix of points) for every request kind that carries points."""
    data = b'"data":{"points":' + points + b"}"
    yield "/v1/models", FIT + data + b"}", ["body", "data", "points"]
    yield (
        "/v1/model-selection",
        b'{"grid":{"n_components":[1,2]},' + data + b"}",
        ["body", "data", "points"],
    )
    yield (
        "/v1/comparisons",
        b'{"algorithms":[{"algorithm":"kmeans","params":{"n_clusters":2}}],' + data + b"}",
        ["body", "data", "points"],
    )
    gm = ids["gaussian_mixture"]
    for path in (f"/v1/models/{gm}/predict", f"/v1/models/{gm}/score"):
        yield path, b'{"points":' + points + b"}", ["body", "points"]


def _answers(client: TestClient, points: bytes, ids: dict[str, str]) -> list[tuple[Any, ...]]:
    out = []
    for path, body, prefix in _bodies(points, ids):
        r = client.post(path, content=body, headers=JSON)
        out.append((path, prefix, r.status_code, r.headers["content-type"], r.json()))
    return out


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
@pytest.mark.parametrize("size", ["small", "large"])
def test_malformed_points_answer_exactly_as_the_schema_did(
    client: TestClient,
    model_ids: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    size: str,
) -> None:
    """Same status, type, detail and ``errors`` (loc, msg, type) with and without the
    fast path; "large" pads the body past the threshold where it decodes in a thread."""
    points, where = MALFORMED[case]
    if size == "large" and points.startswith(b"[["):
        pad = b"[0.25, 0.75]," * 8000
        points = b"[" + pad + points[1:]
        where = [where[0] + 8000, *where[1:]] if where else where
    fast = _answers(client, points, model_ids)
    _slow_path(monkeypatch)
    slow = _answers(client, points, model_ids)
    assert fast == slow
    for path, prefix, status, content_type, problem in fast:
        assert status in (400, 422), (path, problem)
        assert content_type.startswith("application/problem+json")
        if status == 422:
            assert [*prefix, *where] in [e["loc"] for e in problem["errors"]], (path, problem)


@pytest.mark.parametrize(
    ("points", "loc"),
    [
        ([[0.0, 0.0, 0.0]], ["body", "points", 0]),
        ([[0.0]] * 3, ["body", "points", 0]),
    ],
)
def test_wrong_width_is_the_same_problem(
    client: TestClient,
    model_ids: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    points: list[list[float]],
    loc: list[str | int],
) -> None:
    path = f"/v1/models/{model_ids['kmeans']}/predict"
    fast = client.post(path, json={"points": points})
    _slow_path(monkeypatch)
    slow = client.post(path, json={"points": points})
    assert (fast.status_code, fast.json()) == (slow.status_code, slow.json())
    assert fast.status_code == 422
    assert fast.json()["errors"] == [
        {
            "loc": loc,
            "msg": f"row 0 has {len(points[0])} values, expected 2 (the model's n_features).",
            "type": "wrong_width",
        }
    ]


def test_valid_points_become_one_float64_array() -> None:
    body = orjson.dumps({"points": [[1, 2.5], [3, -0.0]], "data": {"points": [[7]]}})
    document = decode_json(body)
    for value, expected in (
        (document["points"], [[1, 2.5], [3, -0.0]]),
        (document["data"]["points"], [[7]]),
    ):
        assert isinstance(value, np.ndarray)
        assert value.dtype == np.float64 and value.flags.c_contiguous
        assert value.tobytes() == np.asarray(expected, dtype=np.float64).tobytes()
    request = PointsRequest.model_validate({"points": document["points"]})
    assert request.points is document["points"]  # taken as is, not copied


@pytest.mark.parametrize(
    "body",
    [
        b'{"points": [[1, 2]], "name": "true story"}',  # the word, not a bool: still safe
        b'{"points": [[1, true]]}',
        b'{"data": {"points": [[1, 2], [3, false]]}}',
    ],
)
def test_bodies_with_bool_literals_keep_their_lists_unless_every_bool_is_elsewhere(
    body: bytes,
) -> None:
    document = decode_json(body)
    points = document.get("points", document.get("data", {}).get("points"))
    assert isinstance(points, list)


def test_small_lists_stay_lists_for_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing, "MIN_ARRAY_ROWS", 64)
    assert isinstance(decode_json(orjson.dumps({"points": [[1.0, 2.0]] * 63}))["points"], list)
    assert isinstance(
        decode_json(orjson.dumps({"points": [[1.0, 2.0]] * 64}))["points"], np.ndarray
    )


def test_bools_outside_the_points_do_not_slow_them_down() -> None:
    body = b'{"data": {"points": [[1, 2]]}, "store_best": true, "grid": {"x": [false]}}'
    assert isinstance(decode_json(body)["data"]["points"], np.ndarray)


def test_other_lists_are_left_alone() -> None:
    document = decode_json(b'{"params": {"means_init": [[1, 2]]}, "points": [[1, 2]]}')
    assert isinstance(document["params"]["means_init"], list)


def test_requests_holding_arrays_dump_as_lists() -> None:
    spec = DataSpec.model_validate(decode_json(b'{"points": [[1, 2.5], [3, 4]]}'))
    assert isinstance(spec.points, np.ndarray)
    expected = {"points": [[1.0, 2.5], [3.0, 4.0]], "generator": None, "dataset_id": None}
    assert spec.model_dump() == expected
    assert spec.model_dump(mode="json") == expected
    assert orjson.loads(spec.model_dump_json()) == expected
    assert DataSpec.model_validate(spec.model_dump()).points == expected["points"]


def test_an_array_that_is_not_ready_is_validated_as_its_lists() -> None:
    """A Python caller handing an array with a NaN gets the JSON client's error."""
    with pytest.raises(ValueError, match="finite number") as info:
        PointsRequest(points=np.array([[0.0, np.nan]]))  # type: ignore[arg-type]
    assert info.value.errors()[0]["loc"] == ("points", 0, 1)  # type: ignore[attr-defined]


@pytest.mark.parametrize("algorithm", ["gaussian_mixture", "kmeans"])
def test_fits_and_predictions_are_unchanged(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, algorithm: str
) -> None:
    X = np.random.RandomState(0).normal(size=(3000, 3)) * [1.0, 2.0, 0.5]
    X[1500:] += 4
    k = "n_components" if algorithm == "gaussian_mixture" else "n_clusters"
    params = {k: 2, "random_state": 0}
    body = {"algorithm": algorithm, "params": params, "data": {"points": X.tolist()}}

    def run() -> tuple[dict[str, Any], dict[str, Any]]:
        fit = client.post("/v1/models", json=body)
        assert fit.status_code == 201, fit.text
        model = fit.json()
        pred = client.post(f"/v1/models/{model['id']}/predict", json={"points": X[:700].tolist()})
        assert pred.status_code == 200, pred.text
        for key in ("id", "created_at", "fit_seconds"):
            model.pop(key)
        return model, pred.json()

    fast = run()
    _slow_path(monkeypatch)
    assert run() == fast
    est = (GaussianMixture if algorithm == "gaussian_mixture" else KMeans)(**params).fit(X)
    means = est.means_ if algorithm == "gaussian_mixture" else est.cluster_centers_
    np.testing.assert_array_equal(np.asarray(fast[0]["means"]), means)
    np.testing.assert_array_equal(fast[1]["labels"], est.predict(X[:700]))


def test_gc_pause_is_counted_across_overlapping_holders() -> None:
    assert gc.isenabled()
    first, second = gc_paused(), gc_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second holder is still parsing
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_gc_pause_leaves_a_disabled_gc_disabled() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_gc_is_enabled_after_concurrent_parses() -> None:
    body = orjson.dumps({"points": [[float(i), 1.0] for i in range(20_000)]})
    start = threading.Barrier(4)
    seen_disabled: list[bool] = []

    def parse() -> None:
        start.wait()
        for _ in range(5):
            decode_json(body)
            seen_disabled.append(not gc.isenabled())

    threads = [threading.Thread(target=parse) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gc.isenabled()
    assert routing._gc_pauses == 0
    assert len(seen_disabled) == 20


def test_gc_is_enabled_after_a_failed_parse() -> None:
    with pytest.raises(ValueError):
        decode_json(b'{"points": [[1, 2]')
    assert gc.isenabled()


_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
)


@st.composite
def _matrices(draw: st.DrawFn) -> list[list[float | int]]:
    n_features = draw(st.integers(1, 6))
    rows = st.lists(_numbers, min_size=n_features, max_size=n_features)
    return draw(st.lists(rows, min_size=1, max_size=30))


@settings(max_examples=300, deadline=None)
@given(points=_matrices(), top_level=st.booleans())
def test_fast_path_gives_exactly_numpys_float64_array(
    points: list[list[float | int]], top_level: bool
) -> None:
    body = {"points": points} if top_level else {"data": {"points": points}}
    document = decode_json(orjson.dumps(body))
    value = document["points"] if top_level else document["data"]["points"]
    expected = np.asarray(points, dtype=np.float64)
    assert isinstance(value, np.ndarray)
    assert value.dtype == np.float64 and value.shape == expected.shape
    assert value.tobytes() == expected.tobytes()


# -- the simdjson path for large bodies (``simd_document``) ---------------------------
#: Bodies it must refuse (None), each standing for a way a points value can look like
#: a matrix to a byte count without being one; the usual path then judges them.
NOT_MATRICES = {
    "deeper-row-hiding-a-scalar-row": b'{"points": [[1, 2], 3, [[4], 5, 6]]}',
    "ragged": b'{"points": [[1, 2], [3], [4, 5, 6]]}',
    "empty-rows": b'{"points": [[], []]}',
    "empty-and-full-rows": b'{"points": [[1], []]}',
    "empty": b'{"points": []}',
    "flat": b'{"points": [1, 2]}',
    "bool": b'{"points": [[1, true]]}',
    "null": b'{"points": [[1, null]]}',
    "string": b'{"points": [[1, "2"]]}',
    "nan": b'{"points": [[1, NaN]]}',
    "overflow": b'{"points": [[1, 1e400]]}',
    "huge-int": b'{"points": [[1, 1' + b"0" * 30 + b"]]}",
    "truncated": b'{"points": [[1, 2], [3, 4]',
    "two-points-keys": b'{"points": [[1, 2]], "data": {"points": [[1, 2]]}}',
    "duplicate-key": b'{"points": [[1, 2]], "points": [[3, 4]]}',
    "the-word-elsewhere": b'{"points": [[1, 2]], "name": "points"}',
    "escaped-quote-key": b'{"a\\"points": [[1, 2]]}',
    "in-a-string": b'{"name": "\\"points\\": [[1, 2]]", "x": 1}',
    "not-an-object": b'[{"points": [[1, 2]]}]',
    "nested-deeper": b'{"params": {"points": [[1, 2]]}}',
}


@pytest.mark.parametrize("body", NOT_MATRICES.values(), ids=list(NOT_MATRICES))
def test_simd_path_refuses_anything_but_one_plain_matrix(body: bytes) -> None:
    assert simd_document(body) is None


def _as_usual(body: bytes) -> Any:
    """What the usual path reads: orjson's document, the points slot as float64."""
    document = orjson.loads(body)
    slot = document if "points" in document else document["data"]
    slot["points"] = np.asarray(slot["points"], dtype=np.float64)
    return document


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b) and type(a) is type(b)


_ENCODINGS = {
    "orjson": lambda doc: orjson.dumps(doc),
    "spaced": lambda doc: json.dumps(doc).encode(),
    "indented": lambda doc: json.dumps(doc, indent=2).encode(),
    "rows-spaced": lambda doc: json.dumps(doc, separators=(" , ", " : ")).encode(),
}


@settings(max_examples=300, deadline=None)
@given(
    points=_matrices(),
    top_level=st.booleans(),
    encoding=st.sampled_from(list(_ENCODINGS)),
    after=st.booleans(),
)
def test_simd_path_reads_exactly_what_the_usual_path_reads(
    points: list[list[float | int]], top_level: bool, encoding: str, after: bool
) -> None:
    """Bit for bit, whatever the layout: spaces anywhere, other matrices after it."""
    fields: dict[str, Any] = {"algorithm": "gaussian_mixture"}
    data = {"points": points}
    document = {**fields, **data} if top_level else {**fields, "data": data}
    if after:
        document["params"] = {"means_init": [[1.5, 2], [3, 4]], "n_components": 2}
    body = _ENCODINGS[encoding](document)
    fast = simd_document(body)
    assert fast is not None
    assert _same(fast, _as_usual(body))


def test_simd_path_serves_large_requests(client: TestClient, model_ids: dict[str, str]) -> None:
    X = np.random.default_rng(1).normal(size=(20_000, 2))
    body = orjson.dumps({"points": X.tolist()})
    assert simd_document(body) is not None  # the request below takes this path
    gm = model_ids["gaussian_mixture"]
    r = client.post(f"/v1/models/{gm}/predict", content=body, headers=JSON)
    assert r.status_code == 200, r.text
    small = client.post(f"/v1/models/{gm}/predict", json={"points": X[:10].tolist()})
    assert r.json()["labels"][:10] == small.json()["labels"]
