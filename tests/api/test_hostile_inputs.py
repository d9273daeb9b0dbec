"""Hostile request bodies from the security review (issue 16): each finding's
reproduction, and a property test over ``.npy`` headers.

1. a ``.npy`` header with negative dimensions (500, or "needs -16 bytes");
2. bodies that break the JSON decoder other than by a syntax error (a generic
   ``about:blank`` 400 instead of ``malformed-json``);
3. a first CSV line with one cell that is not a number, dropped as a header;
4. a full disk while the store writes ("Could not write the dataset: None.").

The rule they all check is the contract's: bad input never gets a 5xx, nor a generic
``about:blank`` answer; it gets a 4xx problem+json whose ``errors[].loc`` names the
place and whose ``detail`` says what is wrong. A full disk is the server's trouble, a
503, but its ``detail`` too says what is wrong (and no path of the server's disk).
"""

from __future__ import annotations

import ast
import errno
import io
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service.config import Settings
from service.main import create_app

NPY = "application/x-npy"
PROBLEM = "application/problem+json"
WIDTH = 2


def assert_problem(r: Any, status: int, loc: list[str | int] | None = None) -> dict[str, Any]:
    """The problem+json shape; ``loc`` (when given) must be among ``errors``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers["content-type"]
    problem: dict[str, Any] = r.json()
    assert {"type", "title", "status", "detail"} <= set(problem), problem
    assert problem["type"] != "about:blank", problem
    if loc is not None:
        assert loc in [e["loc"] for e in problem.get("errors") or []], problem
    return problem


@pytest.fixture
def model_id(client: TestClient) -> str:
    """A 2-feature mixture, to send points to."""
    points = [[float(i % 5), float(i % 3)] for i in range(20)]
    r = client.post(
        "/v1/models",
        json={
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 2, "random_state": 0},
            "data": {"points": points},
            "include": [],
        },
    )
    assert r.status_code == 201, r.text
    model: str = r.json()["id"]
    return model


def npy_targets(model_id: str) -> list[str]:
    """Every route that takes an ``application/x-npy`` body."""
    return ["/v1/datasets", f"/v1/models/{model_id}/predict", f"/v1/models/{model_id}/score"]


def npy_file(header: str, payload: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    """A ``.npy`` file with ``header`` as is (padded as numpy pads it), so that it
    may say anything numpy's own writer refuses to."""
    length_format = "<H" if version == (1, 0) else "<I"
    prefix = 6 + 2 + struct.calcsize(length_format)
    text = header.encode()  # versions 1 and 2 read it as latin1: any bytes will do
    padding = -(prefix + len(text) + 1) % 64
    text += b" " * padding + b"\n"
    magic = b"\x93NUMPY" + bytes(version)
    return magic + struct.pack(length_format, len(text)) + text + payload


def header_text(descr: Any, fortran_order: Any, shape: Any) -> str:
    return repr({"descr": descr, "fortran_order": fortran_order, "shape": shape})


# -- finding 1: a .npy header with negative dimensions --------------------------------
@pytest.mark.parametrize("shape", [(-1, -2), (2, -1), (-1, 2), (-3, -4)])
def test_npy_header_with_negative_dimensions_is_422(
    client: TestClient, model_id: str, shape: tuple[int, int]
) -> None:
    """A header claiming ``(-1, -2)`` passed the length check (-1 x -2 x 8 = 16 bytes)
    and failed in ``reshape`` with a 500; ``(2, -1)`` answered "needs -16 bytes"."""
    body = npy_file(header_text("<f8", False, shape), b"\x00" * 16)
    for url in npy_targets(model_id):
        r = client.post(url, content=body, headers={"Content-Type": NPY})
        problem = assert_problem(r, 422, ["body"])
        assert "negative" in problem["detail"], problem
        assert "-16 bytes" not in problem["detail"], problem


# -- the property: any .npy header, any payload length ---------------------------------
#: Dimensions numpy writes, and ones it never would: negative, zero, huge.
DIMENSION = st.one_of(
    st.integers(min_value=-3, max_value=6),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**31, 2**63, 10**30]),
)
#: Shapes of every length, and values that are not a tuple of ints at all.
SHAPE = st.one_of(
    st.tuples(DIMENSION, DIMENSION),
    st.lists(DIMENSION, max_size=4).map(tuple),
    st.lists(DIMENSION, max_size=3),  # a list, not a tuple
    st.tuples(st.floats(allow_nan=True), DIMENSION),
    st.tuples(st.booleans(), st.booleans()),
    st.sampled_from([None, "2,2", 4, (2, "2"), ((2,), 2)]),
)
DTYPES = [
    np.dtype(name)
    for name in (
        "<f8",
        ">f8",
        "<f4",
        ">f4",
        "<f2",
        "<i8",
        ">i4",
        "|i1",
        "<u8",
        "|u1",
        "|b1",
        "|O",
        "<U3",
        "|S2",
        "<c16",
        "<M8[s]",
        "<m8[s]",
        "|V8",
    )
] + [
    np.dtype([("a", "<f8"), ("b", "<i4")]),
    np.dtype([("a", "<f8")]),
    np.dtype(("<f8", (2,))),
    np.dtype([("", "|V4"), ("x", "<f4")]),
]
DESCR = st.one_of(
    st.sampled_from(DTYPES).map(np.lib.format.dtype_to_descr),
    st.sampled_from(["<x9", "", "f8", "float64", "<f99", "O", "|V0"]),
    st.sampled_from([None, 8, [("a",)], [("a", "<f8", (2**40,))], ("<f8", (-1,))]),
)
FORTRAN_ORDER = st.one_of(st.booleans(), st.sampled_from([0, 1, None, "yes"]))
#: Whole header texts: what numpy's writer would write, and what it never would.
HEADER = st.one_of(
    st.builds(header_text, DESCR, FORTRAN_ORDER, SHAPE),
    st.builds(
        lambda d, f, s: repr({"descr": d, "fortran_order": f, "shape": s, "extra": 1}),
        DESCR,
        FORTRAN_ORDER,
        SHAPE,
    ),
    st.sampled_from(
        [
            "{'descr': '<f8', 'shape': (2, 2)}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2)",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2L, 2L), }",
            "{[1]: 2}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': " + "(" * 300 + ")" * 300 + "}",
            "[1, 2]",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), 'descr': '<f8'}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (" + "9" * 5000 + ", 2)}",
            "__import__('os')",
        ]
    ),
    st.text(max_size=200),
)


#: numpy reads Python 2's ``3L`` after a second try, and warns.
PY2_HEADER = header_text("<f8", False, (3, 2)).replace("3,", "3L,")


def expected_bytes(header: str) -> int | None:
    """The payload length a header of a plain dtype and shape asks for, if any."""
    try:
        fields = ast.literal_eval(header)  # as numpy reads it
        count = 1
        for n in fields["shape"]:
            count *= int(n)
        itemsize = np.lib.format.descr_to_dtype(fields["descr"]).itemsize
    except Exception:
        return None
    return count * itemsize


@settings(
    max_examples=150,
    deadline=None,
    # One app for every example: requests do not depend on each other's answers.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    header=HEADER,
    version=st.sampled_from([(1, 0), (2, 0), (3, 0)]),
    length=st.one_of(
        st.sampled_from(["exact", "short", "long"]), st.integers(min_value=0, max_value=300)
    ),
    route=st.sampled_from([0, 1, 2]),
)
@example(header=header_text("<f8", False, (-1, -2)), version=(1, 0), length="exact", route=0)
@example(header=header_text("<f8", False, (2, -1)), version=(1, 0), length=16, route=1)
@example(header=header_text("<f8", True, (3, 2)), version=(2, 0), length="exact", route=2)
@example(header=header_text(">i4", True, (3, 2)), version=(1, 0), length="exact", route=0)
@example(header=header_text("<f8", False, (10**30, 2)), version=(1, 0), length=64, route=0)
# What the property found besides: numpy's header parser fails in more ways than the
# ValueError it documents (tokenize.TokenError, TypeError, RecursionError), and warns.
@example(header="{'descr': '<f8', 'shape': (2, 2)", version=(1, 0), length=32, route=0)
@example(header="{[1]: 2}", version=(2, 0), length=32, route=1)
@example(header="-" * 4000 + "1", version=(1, 0), length=32, route=2)
@example(header=PY2_HEADER, version=(1, 0), length="exact", route=0)
def test_any_npy_header_answers_2xx_or_a_4xx_problem(
    client: TestClient,
    model_id: str,
    header: str,
    version: tuple[int, int],
    length: Any,
    route: int,
) -> None:
    """Over header shapes (negative, zero, huge, non-int, wrong lengths), dtypes
    (floats, ints, bool, object, structured, big-endian, either order) and payload
    lengths (exact, truncated, extra bytes): never a 5xx."""
    expected = expected_bytes(header)
    if isinstance(length, int):
        size = length
    else:
        size = 48 if expected is None else {"exact": 0, "short": -1, "long": 1}[length] + expected
    size = max(0, min(size, 4096))
    payload = bytes(i % 251 for i in range(size))  # any bit pattern, not only zeros
    url = npy_targets(model_id)[route]
    r = client.post(url, content=npy_file(header, payload, version), headers={"Content-Type": NPY})
    if r.status_code < 300:
        return
    problem = assert_problem(r, r.status_code)
    assert 400 <= r.status_code < 500, problem
    assert problem["errors"] and all(e["loc"][0] == "body" for e in problem["errors"]), problem
    assert problem["detail"] and problem["errors"][0]["msg"], problem


def test_npy_bodies_numpy_writes_are_accepted(client: TestClient, model_id: str) -> None:
    """The other side of the property: real files of every accepted dtype and order."""
    X = np.arange(12.0).reshape(6, 2)
    for dtype in ("<f8", ">f8", "<f4", "<i8", ">i4", "|u1"):
        for order in ("C", "F"):
            buf = io.BytesIO()
            np.save(buf, np.asarray(X.astype(dtype), order=order))
            for url in npy_targets(model_id):
                r = client.post(url, content=buf.getvalue(), headers={"Content-Type": NPY})
                assert r.status_code < 300, (dtype, order, url, r.text)


# -- finding 2: bodies the JSON decoders fail on in ways other than a syntax error -----
def _npy_body() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, WIDTH)))
    return buf.getvalue()


#: Each body, and what the answer must say about it.
NOT_JSON: dict[str, tuple[bytes, str]] = {
    # orjson stops at 1024 levels; the standard decoder then ran out of stack.
    "nested-10000-deep": (b"[" * 10_000 + b"]" * 10_000, "nest"),
    "invalid-utf8-in-a-string": (b'{"name": "caf\xe9\xff"}', "UTF-8"),
    # int("1" * 4301) is refused by Python's int_max_str_digits.
    "integer-of-4301-digits": (b'{"points": [[1, ' + b"7" * 4301 + b"]]}", "digits"),
    "npy-sent-as-json": (_npy_body(), "application/x-npy"),
}


@pytest.mark.parametrize("case", list(NOT_JSON))
def test_bodies_that_break_the_json_decoder_are_malformed_json(
    client: TestClient, model_id: str, case: str
) -> None:
    """They answered FastAPI's generic ``about:blank`` 400 ("There was an error
    parsing the body"); now the ``malformed-json`` problem every other bad JSON
    gets, naming the body and what is wrong with it, and under ``/v2`` the
    protocol's own ``{"error"}`` 400."""
    body, says = NOT_JSON[case]
    headers = {"Content-Type": "application/json"}
    for method, url in [
        ("POST", "/v1/models"),
        ("POST", "/v1/datasets"),
        ("POST", f"/v1/models/{model_id}/predict"),
        ("PATCH", f"/v1/models/{model_id}"),
    ]:
        r = client.request(method, url, content=body, headers=headers)
        problem = assert_problem(r, 400)
        assert problem["type"].endswith("malformed-json"), (method, url, problem)
        assert problem["errors"] and all(e["loc"][0] == "body" for e in problem["errors"])
        assert all(e["type"] == "json_invalid" for e in problem["errors"]), problem
        assert says in problem["detail"], (method, url, problem)
    r = client.post(f"/v2/models/{model_id}/infer", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert set(r.json()) == {"error"} and "not valid JSON" in r.json()["error"], r.json()
    assert "sys." not in r.json()["error"], r.json()  # no advice for the server's Python


# -- finding 3: a first CSV line with one non-numeric cell was taken for a header ---------
@pytest.mark.parametrize(
    ("text", "loc"),
    [
        ('"1,5",2\n3,4\n', ["body", 0, 0]),  # a decimal comma, quoted
        ("0x1p3,2\n3,4\n", ["body", 0, 0]),  # float.fromhex's notation, not float's
        ('1,2"3\n3,4\n', ["body", 0, 1]),  # a stray quote
        ("label,1\n3,4\n", ["body", 0, 0]),  # a header with a number in it
    ],
    ids=["decimal-comma", "hex-float", "stray-quote", "numbered-header"],
)
def test_csv_first_line_with_a_number_is_data_not_a_header(
    client: TestClient, text: str, loc: list[str | int]
) -> None:
    """Each of these first lines was dropped as a header, with a 201 for the rest.
    A first line is a header only when none of its cells is a number; anything else
    that does not parse is a 422 naming the row and column."""
    r = client.post("/v1/datasets", content=text, headers={"Content-Type": "text/csv"})
    problem = assert_problem(r, 422, loc)
    assert "header=present" in problem["detail"], problem  # says how to send a header
    assert client.get("/v1/datasets").json()["total"] == 0
    # A header of names only is still a header, and header=present still says so.
    r = client.post("/v1/datasets", content="a,b\n3,4\n", headers={"Content-Type": "text/csv"})
    assert r.status_code == 201 and r.json()["n_samples"] == 1, r.text
    r = client.post(
        "/v1/datasets", content=text, headers={"Content-Type": "text/csv; header=present"}
    )
    assert r.status_code in (200, 201) and r.json()["n_samples"] == 1, r.text


# -- finding 4: a full disk while a dataset is written -----------------------------------
def _no_space(with_strerror: str) -> OSError:
    if with_strerror == "errno-and-strerror-and-path":
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/srv/gmm/store/tmp/1-ab-cd")
    if with_strerror == "errno-only":
        return OSError(errno.ENOSPC)  # .errno and .strerror are None: only args hold it
    exc = OSError()
    exc.errno = errno.ENOSPC  # as some wrappers raise it: the attribute, no strerror
    return exc


@pytest.mark.parametrize(
    "with_strerror", ["errno-and-strerror-and-path", "errno-only", "errno-attribute"]
)
def test_full_disk_while_writing_a_dataset_names_the_cause(
    client: TestClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    with_strerror: str,
) -> None:
    """The 503 said "Could not write the dataset: None." when the error had no
    strerror. It names the cause now, and never a path of the server's disk."""
    write_array = np.lib.format.write_array

    def full_disk(fp: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(fp, io.BytesIO):  # answers and hashing: memory, not the disk
            write_array(fp, *args, **kwargs)
            return
        raise _no_space(with_strerror)

    monkeypatch.setattr(np.lib.format, "write_array", full_disk)
    r = client.post("/v1/datasets", content="1,2\n3,4\n", headers={"Content-Type": "text/csv"})
    problem = assert_problem(r, 503)
    assert problem["type"].endswith("store-unavailable"), problem
    assert "No space left on device" in problem["detail"], problem
    assert "None" not in problem["detail"], problem
    assert "/" not in problem["detail"].replace("/v1", ""), problem  # no path of the disk
    assert str(settings.store_dir) not in r.text
    monkeypatch.undo()
    assert client.get("/v1/datasets").json()["total"] == 0
    assert os.listdir(Path(settings.store_dir) / "tmp") == []


def test_full_disk_while_copying_s3_points_to_local_disk_names_the_cause(
    moto_url: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The S3 store's one write to local disk, its copy of a dataset's points, let a
    full disk through as a 500; it is the store's 503 naming the cause, as above."""
    settings = Settings(
        store_dir=tmp_path / "local",
        store_url=f"s3://{s3_bucket}/gmm",
        s3_endpoint_url=moto_url,
        secret_key="k",
    )
    copy = shutil.copyfileobj

    def full_disk(source: Any, target: Any, *args: Any) -> None:
        if str(getattr(target, "name", "")).endswith(".part"):  # the points' local copy
            raise OSError(errno.ENOSPC)
        copy(source, target, *args)

    with TestClient(create_app(settings)) as c:
        points = [[float(i % 5), float(i % 3)] for i in range(20)]
        dataset = c.post("/v1/datasets", json={"points": points}).json()
        monkeypatch.setattr(shutil, "copyfileobj", full_disk)
        r = c.post(
            "/v1/models",
            json={
                "algorithm": "kmeans",
                "params": {"n_clusters": 2, "n_init": 1},
                "data": {"dataset_id": dataset["id"]},
            },
        )
        problem = assert_problem(r, 503)
        assert problem["type"].endswith("store-unavailable"), problem
        assert "No space left on device" in problem["detail"], problem
        assert str(tmp_path) not in r.text
