"""The hot path (``service.api.hotpath``) answers exactly what FastAPI's routes answer.

Two apps over one store: one as shipped, one with ``fast_path=False`` (every request
through FastAPI's route). Each request of the corpus below, valid and invalid, v1
predict and score (JSON and ``.npy``, both ways) and v2 infer (JSON and binary
tensors), is sent to both: the status, the headers (in order; the request id aside)
and the body must be byte for byte the same, and so must the access log line (its
time, id and duration aside) and the request metrics. Each case also says whether
the hot path must have answered it or handed it to FastAPI, so that the corpus
cannot pass by having the hot path pass everything on.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from tests.conftest import SEED_BLOBS

HEADER = "Inference-Header-Content-Length"
NPY = "application/x-npy"
ADMIN, READER = "admin-key", "reader-key"


@dataclass
class Case:
    """One request: ``path`` may hold ``{gmm}``, ``{kmeans}`` or ``{bgm}`` for a model id."""

    name: str
    path: str
    body: bytes | Callable[[], Iterator[bytes]] = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: True: the hot path must answer; False: it must hand the request to FastAPI.
    hot: bool = True
    #: The status both answer (checked, so that a case means what its name says).
    status: int = 200


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _points(n: int, width: int = 2, seed: int = 0) -> list[list[float]]:
    points: list[list[float]] = np.random.default_rng(seed).normal(0, 5, (n, width)).tolist()
    return points


def _framed(X: np.ndarray, *, outputs: list[dict[str, Any]] | None = None) -> tuple[bytes, str]:
    """A binary tensor request: the JSON header, then the points' raw bytes."""
    raw = np.ascontiguousarray(X, dtype="<f8").tobytes()
    tensor = {
        "name": "points",
        "shape": list(X.shape),
        "datatype": "FP64",
        "parameters": {"binary_data_size": len(raw)},
    }
    document: dict[str, Any] = {"inputs": [tensor]}
    if outputs is not None:
        document["outputs"] = outputs
    header = _json(document)
    return header + raw, str(len(header))


def _infer(data: Any, shape: list[int], datatype: str = "FP64", **extra: Any) -> bytes:
    tensor = {"name": "points", "shape": shape, "datatype": datatype, "data": data}
    return _json({"inputs": [tensor], **extra})


def _chunks(body: bytes) -> Callable[[], Iterator[bytes]]:
    """A body sent without Content-Length (chunked), in pieces."""

    def pieces() -> Iterator[bytes]:
        for at in range(0, len(body), 4096):
            yield body[at : at + 4096]

    return pieces


JSON = {"Content-Type": "application/json"}
NPY_IN = {"Content-Type": NPY}
NPY_BOTH = {"Content-Type": NPY, "Accept": NPY}
X3 = np.random.default_rng(3).normal(0, 5, (7, 2))
binary_body, binary_length = _framed(X3)
binary_only_labels, only_labels_length = _framed(
    X3, outputs=[{"name": "labels", "parameters": {"binary_data": True}}]
)

CORPUS: list[Case] = [
    # -- v1 predict, JSON, valid ----------------------------------------------------------
    Case("one point", "/v1/models/{gmm}/predict", _json({"points": [[0.5, 1.5]]}), JSON),
    Case("integers", "/v1/models/{gmm}/predict", _json({"points": [[1, -2], [3, 4]]}), JSON),
    Case("exponents", "/v1/models/{gmm}/predict", b'{"points": [[1e1, -2.5E-1]]}', JSON),
    Case(
        "100 points (array path)", "/v1/models/{gmm}/predict", _json({"points": _points(100)}), JSON
    ),
    Case(
        "300 points (threadpool)", "/v1/models/{gmm}/predict", _json({"points": _points(300)}), JSON
    ),
    Case("kmeans distances", "/v1/models/{kmeans}/predict", _json({"points": _points(5)}), JSON),
    Case("bayesian", "/v1/models/{bgm}/predict", _json({"points": _points(5)}), JSON),
    Case(
        "charset and a request id",
        "/v1/models/{gmm}/predict",
        _json({"points": [[0.5, 1.5]]}),
        {"Content-Type": "application/json; charset=utf-8", "X-Request-ID": "corpus-1"},
    ),
    Case(
        "chunked body",
        "/v1/models/{gmm}/predict",
        _chunks(_json({"points": _points(1000)})),
        JSON,
    ),
    Case(
        "npy answer, default output",
        "/v1/models/{gmm}/predict",
        _json({"points": _points(4)}),
        {**JSON, "Accept": NPY},
    ),
    Case(
        "npy answer, probabilities",
        "/v1/models/{gmm}/predict?output=probabilities",
        _json({"points": _points(4)}),
        {**JSON, "Accept": f"application/json;q=0.5, {NPY}"},
    ),
    Case(
        "output without Accept npy",
        "/v1/models/{gmm}/predict?output=labels",
        _json({"points": _points(4)}),
        JSON,
    ),
    # -- v1 predict, .npy bodies --------------------------------------------------------
    Case("npy in, JSON out", "/v1/models/{gmm}/predict", _npy(X3), NPY_IN),
    Case("npy both ways", "/v1/models/{gmm}/predict", _npy(X3), NPY_BOTH),
    Case("npy float32", "/v1/models/{gmm}/predict", _npy(X3.astype(np.float32)), NPY_BOTH),
    Case("npy int64", "/v1/models/{gmm}/predict", _npy(np.arange(8).reshape(4, 2)), NPY_BOTH),
    Case("npy fortran order", "/v1/models/{gmm}/predict", _npy(np.asfortranarray(X3)), NPY_BOTH),
    Case(
        "npy kmeans distances",
        "/v1/models/{kmeans}/predict?output=distances",
        _npy(X3),
        NPY_BOTH,
    ),
    Case("npy chunked", "/v1/models/{gmm}/predict", _chunks(_npy(X3)), NPY_IN, hot=False),
    # -- v1 predict, errors the hot path answers (the domain's) --------------------------
    Case(
        "wrong width",
        "/v1/models/{gmm}/predict",
        _json({"points": [[1, 2, 3]]}),
        JSON,
        status=422,
    ),
    Case(
        "overflowing result",
        "/v1/models/{gmm}/predict",
        _json({"points": [[1e200, 1e200]]}),
        JSON,
        status=422,
    ),
    Case(
        "output the model lacks",
        "/v1/models/{gmm}/predict?output=distances",
        _json({"points": [[0, 0]]}),
        {**JSON, "Accept": NPY},
        status=422,
    ),
    Case("npy not npy", "/v1/models/{gmm}/predict", b"not a numpy file", NPY_IN, status=422),
    Case("npy truncated", "/v1/models/{gmm}/predict", _npy(X3)[:-3], NPY_IN, status=422),
    Case("npy too long", "/v1/models/{gmm}/predict", _npy(X3) + b"x", NPY_IN, status=422),
    Case(
        "npy pickled objects",
        "/v1/models/{gmm}/predict",
        _npy(np.array([[1, "a"]], dtype=object)),
        NPY_IN,
        status=422,
    ),
    Case("npy 1-D", "/v1/models/{gmm}/predict", _npy(np.arange(3.0)), NPY_IN, status=422),
    Case("npy wrong width", "/v1/models/{gmm}/predict", _npy(np.ones((2, 3))), NPY_IN, status=422),
    Case(
        "npy NaN",
        "/v1/models/{gmm}/predict",
        _npy(np.array([[1.0, np.nan]])),
        NPY_IN,
        status=422,
    ),
    # -- v1 predict, what FastAPI answers -----------------------------------------------
    Case("NaN literal", "/v1/models/{gmm}/predict", b'{"points": [[NaN, 1]]}', JSON, False, 422),
    Case("a string", "/v1/models/{gmm}/predict", _json({"points": [["1", 2]]}), JSON, False, 422),
    Case("a bool", "/v1/models/{gmm}/predict", _json({"points": [[True, 2]]}), JSON, False, 422),
    Case("a null", "/v1/models/{gmm}/predict", _json({"points": [[None, 2]]}), JSON, False, 422),
    Case("ragged", "/v1/models/{gmm}/predict", _json({"points": [[1, 2], [3]]}), JSON, True, 422),
    Case("no rows", "/v1/models/{gmm}/predict", _json({"points": []}), JSON, False, 422),
    Case("no points", "/v1/models/{gmm}/predict", _json({}), JSON, False, 422),
    Case(
        "unknown field",
        "/v1/models/{gmm}/predict",
        _json({"points": [[1, 2]], "extra": 1}),
        JSON,
        False,
        422,
    ),
    Case("not JSON", "/v1/models/{gmm}/predict", b'{"points": [[1, 2]', JSON, False, 400),
    Case("a list", "/v1/models/{gmm}/predict", _json([[1, 2]]), JSON, False, 422),
    Case("null", "/v1/models/{gmm}/predict", b"null", JSON, False, 422),
    Case("empty body", "/v1/models/{gmm}/predict", b"", JSON, False, 422),
    Case("not UTF-8", "/v1/models/{gmm}/predict", b'{"points": [[1, 2]]}\xff', JSON, False, 400),
    Case(
        "form content type",
        "/v1/models/{gmm}/predict",
        b"points=1",
        {"Content-Type": "application/x-www-form-urlencoded"},
        False,
        415,
    ),
    Case(
        "no content type", "/v1/models/{gmm}/predict", _json({"points": [[1, 2]]}), {}, False, 422
    ),
    Case(
        "unknown output",
        "/v1/models/{gmm}/predict?output=bogus",
        _json({"points": [[1, 2]]}),
        JSON,
        False,
        422,
    ),
    Case(
        "unknown query",
        "/v1/models/{gmm}/predict?foo=1",
        _json({"points": [[1, 2]]}),
        JSON,
        False,
    ),
    Case(
        "unknown model",
        "/v1/models/0123456789abcdef0123456789ab/predict",
        _json({"points": [[1, 2]]}),
        JSON,
        False,
        404,
    ),
    Case(
        "hostile id", "/v1/models/..%2F..%2Fetc/predict", _json({"points": [[1]]}), JSON, False, 404
    ),
    # -- v1 score ------------------------------------------------------------------------
    Case("score", "/v1/models/{gmm}/score", _json({"points": _points(5)}), JSON),
    Case("score bayesian", "/v1/models/{bgm}/score", _json({"points": _points(5)}), JSON),
    Case(
        "score npy percentile",
        "/v1/models/{gmm}/score?output=percentile",
        _npy(X3),
        NPY_BOTH,
    ),
    Case(
        "score kmeans", "/v1/models/{kmeans}/score", _json({"points": [[1, 2]]}), JSON, status=422
    ),
    Case(
        "score wrong width",
        "/v1/models/{gmm}/score",
        _json({"points": [[1]]}),
        JSON,
        status=422,
    ),
    Case("score NaN", "/v1/models/{gmm}/score", b'{"points": [[NaN, 1]]}', JSON, False, 422),
    # -- v2 infer ------------------------------------------------------------------------
    Case("infer JSON", "/v2/models/{gmm}/infer", _infer([0.5, 1.5], [1, 2]), JSON),
    Case(
        "infer nested, FP32, an id",
        "/v2/models/{gmm}/infer",
        _infer([[0.5, 1.5], [2, 3]], [2, 2], "FP32", id="req-7"),
        JSON,
    ),
    Case("infer INT64", "/v2/models/{kmeans}/infer", _infer([1, 2, 3, 4], [2, 2], "INT64"), JSON),
    Case(
        "infer binary both ways",
        "/v2/models/{gmm}/infer",
        binary_body,
        {"Content-Type": "application/octet-stream", HEADER: binary_length},
    ),
    Case(
        "infer binary labels only",
        "/v2/models/{gmm}/infer",
        binary_only_labels,
        {"Content-Type": "application/octet-stream", HEADER: only_labels_length},
    ),
    Case(
        "infer binary outputs asked in JSON",
        "/v2/models/{bgm}/infer",
        _infer([0.5, 1.5], [1, 2], parameters={"binary_data_output": True}),
        JSON,
    ),
    Case("infer version 1", "/v2/models/{gmm}/versions/1/infer", _infer([0, 0], [1, 2]), JSON),
    Case("infer version id", "/v2/models/{gmm}/versions/{gmm}/infer", _infer([0, 0], [1, 2]), JSON),
    Case(
        "infer unknown version",
        "/v2/models/{gmm}/versions/7/infer",
        _infer([0, 0], [1, 2]),
        JSON,
        status=404,
    ),
    Case(
        "infer wrong shape", "/v2/models/{gmm}/infer", _infer([0, 0, 0], [1, 3]), JSON, status=400
    ),
    Case("infer NaN", "/v2/models/{gmm}/infer", b'{"inputs": [NaN]}', JSON, status=400),
    Case(
        "infer wrong input",
        "/v2/models/{gmm}/infer",
        _json({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}),
        JSON,
        status=400,
    ),
    Case("infer not JSON", "/v2/models/{gmm}/infer", b"{", JSON, status=400),
    Case(
        "infer bad header length",
        "/v2/models/{gmm}/infer",
        binary_body,
        {"Content-Type": "application/octet-stream", HEADER: "-1"},
        status=400,
    ),
    Case(
        "infer text body",
        "/v2/models/{gmm}/infer",
        b"1,2",
        {"Content-Type": "text/csv"},
        status=415,
    ),
    Case(
        "infer gzip",
        "/v2/models/{gmm}/infer",
        _infer([0, 0], [1, 2]),
        {**JSON, "Content-Encoding": "gzip"},
        status=415,
    ),
    Case("infer by name", "/v2/models/seed-blobs/infer", _infer([0, 0], [1, 2]), JSON, False),
    Case(
        "infer unknown model",
        "/v2/models/nothing-here/infer",
        _infer([0, 0], [1, 2]),
        JSON,
        False,
        404,
    ),
    # -- not the hot path's at all -------------------------------------------------------
    Case(
        "sample", "/v1/models/{gmm}/sample", _json({"n_samples": 3, "random_state": 0}), JSON, False
    ),
]


def _fit(client: TestClient, algorithm: str, params: dict[str, Any], **extra: Any) -> str:
    body = {"algorithm": algorithm, "params": params, "data": {"generator": SEED_BLOBS}}
    response = client.post("/v1/models", json={**body, "include": [], **extra})
    assert response.status_code == 201, response.text
    model_id: str = response.json()["id"]
    return model_id


class AccessLines(logging.Handler):
    """The access log's records, as the JSON line gives their fields."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append({"message": record.getMessage(), **getattr(record, "fields", {})})


@dataclass
class Apps:
    fast: TestClient
    slow: TestClient
    ids: dict[str, str]
    headers: dict[str, str]


def _apps(tmp_path: Path, **settings: Any) -> Iterator[Apps]:
    def make(fast_path: bool) -> TestClient:
        return TestClient(
            create_app(
                Settings(
                    store_dir=tmp_path / "store",
                    secret_key="k",
                    max_body_bytes=64 * 1024,
                    fast_path=fast_path,
                    # Known to be stored for the whole test: a recheck would hand one
                    # request to FastAPI (to ask the store off the loop) on a slow run.
                    model_recheck_seconds=60,
                    **settings,
                )
            )
        )

    key = {"X-API-Key": ADMIN} if settings.get("api_keys") else {}
    with make(True) as fast, make(False) as slow:
        fast.headers.update(key)
        slow.headers.update(key)
        ids = {
            "gmm": _fit(
                fast, "gaussian_mixture", {"n_components": 4, "random_state": 0}, name="seed-blobs"
            ),
            "kmeans": _fit(fast, "kmeans", {"n_clusters": 3, "n_init": 1, "random_state": 0}),
            "bgm": _fit(fast, "bayesian_gaussian_mixture", {"n_components": 3, "random_state": 0}),
        }
        for client in (fast, slow):  # each app holds each model now
            for model_id in ids.values():
                r = client.post(f"/v1/models/{model_id}/predict", json={"points": [[0, 0]]})
                assert r.status_code == 200, r.text
            client.headers.pop("X-API-Key", None)  # each case sends its own
        yield Apps(fast, slow, ids, key)


def _send(client: TestClient, case: Case, ids: dict[str, str]) -> tuple[int, list[Any], bytes]:
    body = case.body() if callable(case.body) else case.body
    response = client.post(case.path.format(**ids), content=body, headers=case.headers)
    headers = [(k, v) for k, v in response.headers.multi_items() if k != "x-request-id"]
    return response.status_code, headers, response.content


def _answered(client: TestClient) -> float:
    registry = client.app.state.metrics.registry  # type: ignore[attr-defined]
    value = registry.get_sample_value("gmm_fast_path_requests_total", {"outcome": "answered"})
    return value or 0.0


def _request_counts(client: TestClient) -> dict[tuple[str, ...], float]:
    registry = client.app.state.metrics.registry  # type: ignore[attr-defined]
    return {
        tuple(sample.labels.values()): sample.value
        for metric in registry.collect()
        if metric.name == "gmm_http_requests"
        for sample in metric.samples
        if sample.name == "gmm_http_requests_total"
    }


def _same_everywhere(apps: Apps, cases: list[Case], log: AccessLines) -> None:
    counted = {app: _request_counts(app) for app in (apps.fast, apps.slow)}
    for case in cases:
        before = _answered(apps.fast)
        log.lines.clear()
        fast = _send(apps.fast, case, apps.ids)
        fast_line = log.lines[-1]
        hot = _answered(apps.fast) > before
        log.lines.clear()
        slow = _send(apps.slow, case, apps.ids)
        slow_line = log.lines[-1]
        assert fast[0] == case.status, (case.name, fast[0], fast[2][:300])
        assert fast == slow, case.name
        for line in (fast_line, slow_line):
            line.pop("duration_ms")
        assert fast_line == slow_line, case.name
        assert hot is case.hot, f"{case.name}: answered by the hot path: {hot}"
    fast, slow = (
        {k: v - counted[app].get(k, 0.0) for k, v in _request_counts(app).items()}
        for app in (apps.fast, apps.slow)
    )
    assert {k: v for k, v in fast.items() if v} == {k: v for k, v in slow.items() if v}


@pytest.fixture
def log() -> Iterator[AccessLines]:
    handler = AccessLines()
    logger = logging.getLogger("gmm.access")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_the_hot_path_answers_byte_for_byte_what_fastapi_answers(
    tmp_path: Path, log: AccessLines
) -> None:
    for apps in _apps(tmp_path):
        _same_everywhere(apps, CORPUS, log)


def test_a_body_past_the_limit_is_the_same_413_with_or_without_a_length(
    tmp_path: Path, log: AccessLines
) -> None:
    big = _json({"points": _points(5000)})  # past the test apps' 64 KiB
    cases = [
        Case("declared", "/v1/models/{gmm}/predict", big, JSON, hot=False, status=413),
        Case("chunked JSON", "/v1/models/{gmm}/predict", _chunks(big), JSON, status=413),
        Case(
            "declared npy",
            "/v1/models/{gmm}/predict",
            _npy(np.ones((5000, 2))),
            NPY_IN,
            hot=False,
            status=413,
        ),
        Case("v2 chunked", "/v2/models/{gmm}/infer", _chunks(big), JSON, status=413),
    ]
    for apps in _apps(tmp_path):
        _same_everywhere(apps, cases, log)


def test_keys_are_checked_before_the_hot_path_and_read_only_keys_predict(
    tmp_path: Path, log: AccessLines
) -> None:
    point = _json({"points": [[0.5, 1.5]]})
    cases = [
        Case("admin key", "/v1/models/{gmm}/predict", point, {**JSON, "X-API-Key": ADMIN}),
        Case(
            "read-only key",
            "/v1/models/{gmm}/predict",
            point,
            {**JSON, "X-API-Key": READER},
        ),
        Case(
            "read-only bearer on infer",
            "/v2/models/{gmm}/infer",
            _infer([0, 0], [1, 2]),
            {**JSON, "X-API-Key": "", "Authorization": f"Bearer {READER}"},
            status=401,
            hot=False,
        ),
        Case(
            "bearer alone",
            "/v2/models/{gmm}/infer",
            _infer([0, 0], [1, 2]),
            {**JSON, "Authorization": f"Bearer {READER}"},
        ),
        Case(
            "a wrong key",
            "/v1/models/{gmm}/score",
            point,
            {**JSON, "X-API-Key": "nope"},
            hot=False,
            status=401,
        ),
        Case("no key", "/v1/models/{gmm}/predict", point, JSON, hot=False, status=401),
    ]
    for apps in _apps(tmp_path, api_keys=f"{ADMIN},{READER}:read"):
        _same_everywhere(apps, cases, log)
