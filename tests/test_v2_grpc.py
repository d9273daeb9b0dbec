"""Triton's own gRPC client, ``tritonclient.grpc``, against a real ``python -m service``
serving the Open Inference Protocol over gRPC (``GMM_GRPC_PORT``).

One server for the module, as a deployment would run it: two uvicorn workers sharing
the gRPC port, API keys on, and a small message limit. Models are fitted over REST and
called over gRPC; the numbers are checked against scikit-learn fitted in-process on
the same data, and the errors against what ``/v2`` answers for the same request.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from tests.conftest import SEED_BLOBS, SEED_FIT, require
from tests.helpers_server import HOST, ServerProcess, free_port, running_server

grpc = require("grpc")
grpcclient = require("tritonclient.grpc")
triton_pb = require("tritonclient.grpc.service_pb2")
triton_stub = require("tritonclient.grpc.service_pb2_grpc")
triton_utils = require("tritonclient.utils")

from service.grpc.server import SHUTDOWN_GRACE_SECONDS  # noqa: E402  (needs the grpc extra)

pytestmark = pytest.mark.slow

ADMIN, READER = "grpc-admin-key", "grpc-reader-key"
AUTH = {"x-api-key": ADMIN}
MAX_BODY_BYTES = 1024 * 1024
WORKERS = 2
KMEANS = {"n_clusters": 4, "n_init": 2, "random_state": 0}


@dataclass
class Served:
    http: ServerProcess
    grpc_port: int

    @property
    def target(self) -> str:
        return f"{HOST}:{self.grpc_port}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    cwd = tmp_path_factory.mktemp("grpc")
    port = free_port()
    env = {
        "GMM_STORE_DIR": str(cwd / "store"),
        "GMM_SECRET_KEY": "grpc-secret",
        "GMM_GRPC_PORT": str(port),
        "GMM_WORKERS": str(WORKERS),
        "GMM_API_KEYS": f"{ADMIN},{READER}:read",
        "GMM_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    }
    with running_server(env, cwd=cwd) as server:
        yield Served(server, port)


@pytest.fixture(scope="module")
def seed_X() -> np.ndarray:
    X, _ = make_blobs(**{k: v for k, v in SEED_BLOBS.items() if k != "kind"})
    return X


def _fit(served: Served, body: dict[str, Any]) -> str:
    response = served.http.client.post(
        "/v1/models", json={**body, "include": []}, headers={"X-API-Key": ADMIN}
    )
    assert response.status_code == 201, response.text
    model_id: str = response.json()["id"]
    return model_id


@pytest.fixture(scope="module")
def mixture(served: Served) -> str:
    return _fit(served, {**SEED_FIT, "name": "seed"})


@pytest.fixture(scope="module")
def kmeans(served: Served) -> str:
    body = {"algorithm": "kmeans", "params": KMEANS, "data": {"generator": SEED_BLOBS}}
    return _fit(served, {**body, "name": "km"})


@pytest.fixture
def triton(served: Served) -> Iterator[Any]:
    client = grpcclient.InferenceServerClient(url=served.target)
    yield client
    client.close()


def _points(n: int = 40) -> np.ndarray:
    return np.random.default_rng(3).normal(0.0, 8.0, size=(n, 2))


def _input(X: np.ndarray, datatype: str = "FP64") -> Any:
    tensor = grpcclient.InferInput("points", list(X.shape), datatype)
    tensor.set_data_from_numpy(X)
    return tensor


def _refused(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    """The gRPC status and message a call fails with."""
    with pytest.raises(triton_utils.InferenceServerException) as refused:
        call(*args, **kwargs)
    return refused.value.status(), refused.value.message()


def _rest_error(served: Served, model: str, tensors: list[dict[str, Any]]) -> str:
    """What ``POST /v2/models/{model}/infer`` answers for the same request in JSON."""
    response = served.http.client.post(
        f"/v2/models/{model}/infer", json={"inputs": tensors}, headers={"X-API-Key": ADMIN}
    )
    assert response.status_code in (400, 404), response.text
    error: str = response.json()["error"]
    return error


def _status(code: Any) -> str:
    return str(code)  # tritonclient reports "StatusCode.NOT_FOUND"


def test_health_and_server_metadata_are_open(triton: Any, served: Served) -> None:
    """No key needed, as for /v2/health and /v2; the metadata is /v2's."""
    assert triton.is_server_live()
    assert triton.is_server_ready()
    metadata = triton.get_server_metadata(as_json=True)
    assert metadata == served.http.client.get("/v2").json()


def test_each_call_writes_one_json_access_line(triton: Any, served: Served) -> None:
    """The gRPC transport writes the access line HTTP requests get, as JSON."""
    assert triton.is_server_live()
    deadline = time.monotonic() + 5
    while True:
        lines = [
            json.loads(line)
            for line in served.http.log().splitlines()
            if line.startswith("{") and '"method":"gRPC"' in line
        ]
        live = [x for x in lines if x["route"].endswith("/ServerLive")]
        if live or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert live, "no gRPC access line"
    line = live[-1]
    assert line["logger"] == "gmm.access" and line["level"] == "info"
    assert line["status"] == "OK" and line["message"] == f"gRPC {line['route']} OK"
    assert line["duration_ms"] >= 0 and line["client"]


def test_model_readiness_and_metadata(triton: Any, served: Served, mixture: str) -> None:
    for name, version in [("seed", ""), (mixture, ""), ("seed", "1"), ("seed", mixture)]:
        assert triton.is_model_ready(name, version, headers=AUTH), (name, version)
    # Unknown models and versions are not ready (Triton's answer; /v2 says 404).
    assert not triton.is_model_ready("no-such-model", headers=AUTH)
    assert not triton.is_model_ready("seed", "2", headers=AUTH)
    metadata = triton.get_model_metadata("seed", headers=AUTH, as_json=True)
    for tensor in metadata["inputs"] + metadata["outputs"]:
        tensor["shape"] = [int(s) for s in tensor["shape"]]  # int64 in protobuf's JSON
    rest = served.http.client.get("/v2/models/seed", headers={"X-API-Key": ADMIN}).json()
    assert metadata == rest
    assert metadata["versions"] == [mixture]
    status, message = _refused(triton.get_model_metadata, "no-such-model", headers=AUTH)
    assert (status, message) == (
        _status(grpc.StatusCode.NOT_FOUND),
        "No model with id or name 'no-such-model'.",
    )


@pytest.mark.parametrize("model", ["id", "name"])
def test_infer_equals_sklearn(triton: Any, mixture: str, seed_X: np.ndarray, model: str) -> None:
    """tritonclient's defaults: raw input bytes, every output, raw output bytes."""
    gm = GaussianMixture(**SEED_FIT["params"]).fit(seed_X)  # type: ignore[arg-type]
    X = _points()
    name = mixture if model == "id" else "seed"
    result = triton.infer(name, [_input(X)], request_id="r1", headers=AUTH)
    np.testing.assert_array_equal(result.as_numpy("labels"), gm.predict(X))
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), gm.predict_proba(X), rtol=1e-12, atol=1e-300
    )
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (name, mixture, "r1")


def test_kmeans_distances_of_fp32_points(triton: Any, kmeans: str, seed_X: np.ndarray) -> None:
    km = KMeans(**KMEANS).fit(seed_X)  # type: ignore[arg-type]
    X = _points(8).astype(np.float32)
    outputs = [grpcclient.InferRequestedOutput("distances")]
    result = triton.infer("km", [_input(X, "FP32")], outputs=outputs, headers=AUTH)
    X64 = X.astype(np.float64)
    np.testing.assert_allclose(result.as_numpy("distances"), km.transform(X64), rtol=1e-12)
    assert result.as_numpy("labels") is None  # not asked for
    assert result.get_response().model_version == kmeans


def test_typed_contents_are_answered_typed(
    served: Served, mixture: str, seed_X: np.ndarray
) -> None:
    """A client that sends ``contents.fp64_contents`` (not raw bytes) gets typed
    ``contents`` back, as Triton answers; through tritonclient's own stub."""
    gm = GaussianMixture(**SEED_FIT["params"]).fit(seed_X)  # type: ignore[arg-type]
    X = _points(6)
    request = triton_pb.ModelInferRequest(model_name="seed", id="typed")
    request.inputs.add(name="points", datatype="FP64", shape=X.shape)
    request.inputs[0].contents.fp64_contents.extend(X.ravel().tolist())
    request.outputs.add(name="probabilities")
    request.outputs.add(name="labels")
    with grpc.insecure_channel(served.target) as channel:
        response = triton_stub.GRPCInferenceServiceStub(channel).ModelInfer(
            request, metadata=[("authorization", f"Bearer {ADMIN}")], timeout=30
        )
    assert not response.raw_output_contents
    assert [o.name for o in response.outputs] == ["probabilities", "labels"]
    probabilities = np.array(response.outputs[0].contents.fp64_contents).reshape(6, 4)
    np.testing.assert_allclose(probabilities, gm.predict_proba(X), rtol=1e-12, atol=1e-300)
    np.testing.assert_array_equal(response.outputs[1].contents.int64_contents, gm.predict(X))
    assert response.id == "typed"


def test_errors_have_grpc_status_codes_and_v2_words(
    triton: Any, served: Served, mixture: str
) -> None:
    X = _points(2)
    not_found = _refused(triton.infer, "no-such-model", [_input(X)], headers=AUTH)
    assert not_found == (
        _status(grpc.StatusCode.NOT_FOUND),
        _rest_error(served, "no-such-model", []),
    )
    status, _ = _refused(triton.infer, "seed", [_input(X)], model_version="2", headers=AUTH)
    assert status == _status(grpc.StatusCode.NOT_FOUND)
    wide = np.zeros((2, 3))
    same_in_json = [{"name": "points", "shape": [2, 3], "datatype": "FP64", "data": [0.0] * 6}]
    assert _refused(triton.infer, "seed", [_input(wide)], headers=AUTH) == (
        _status(grpc.StatusCode.INVALID_ARGUMENT),
        _rest_error(served, "seed", same_in_json),
    )
    flags = np.ones((2, 2), dtype=bool)
    status, message = _refused(triton.infer, "seed", [_input(flags, "BOOL")], headers=AUTH)
    assert status == _status(grpc.StatusCode.INVALID_ARGUMENT)
    assert message.startswith("inputs[0].datatype 'BOOL' is not supported for points; use FP64")
    nan = np.array([[0.0, 1.0], [np.nan, 2.0]])
    status, message = _refused(triton.infer, "seed", [_input(nan)], headers=AUTH)
    assert status == _status(grpc.StatusCode.INVALID_ARGUMENT)
    assert message.startswith("raw_input_contents[0]: value 0 of point 1 is not a finite number")
    outputs = [grpcclient.InferRequestedOutput("distances")]
    status, message = _refused(triton.infer, "seed", [_input(X)], outputs=outputs, headers=AUTH)
    assert status == _status(grpc.StatusCode.INVALID_ARGUMENT)
    assert message == (
        "outputs[0].name 'distances' is not an output of this model; "
        "it has ['labels', 'probabilities']."
    )


def test_messages_past_max_body_bytes_are_refused(triton: Any, mixture: str) -> None:
    """GMM_MAX_BODY_BYTES bounds a gRPC message as it bounds an HTTP body."""
    X = np.zeros((MAX_BODY_BYTES // 16 + 1, 2))
    status, message = _refused(triton.infer, "seed", [_input(X)], headers=AUTH)
    assert status == _status(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert str(MAX_BODY_BYTES) in message
    X = np.zeros((MAX_BODY_BYTES // 16 - 1000, 2))  # just under: answered
    assert triton.infer("seed", [_input(X)], headers=AUTH).as_numpy("labels").shape == (len(X),)


def test_api_keys_in_the_call_metadata(triton: Any, served: Served, mixture: str) -> None:
    X = _points(3)
    unauthenticated = _status(grpc.StatusCode.UNAUTHENTICATED)
    rest = served.http.client.post("/v2/models/seed/infer", json={"inputs": []})
    assert rest.status_code == 401
    assert _refused(triton.infer, "seed", [_input(X)]) == (unauthenticated, rest.json()["error"])
    assert _refused(triton.is_model_ready, "seed")[0] == unauthenticated
    assert _refused(triton.get_model_metadata, "seed")[0] == unauthenticated
    wrong = {"x-api-key": "not-a-key"}
    assert _refused(triton.infer, "seed", [_input(X)], headers=wrong) == (
        unauthenticated,
        "The API key is not valid.",
    )
    # A read-only key may infer, as over REST; here as a bearer token.
    reader = {"authorization": f"Bearer {READER}"}
    assert triton.infer("seed", [_input(X)], headers=reader).as_numpy("labels").shape == (3,)
    assert triton.is_model_ready("seed", headers=reader)


def _listening_sockets(port: int, group: int) -> dict[str, int]:
    """``{socket inode: pid}`` of the sockets listening on ``port`` held by
    processes of the process group ``group`` (the server and its workers), from /proc."""
    inodes = set()
    # grpc listens on an IPv6 socket for IPv4 too (::ffff:127.0.0.1): tcp6 lists it.
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rpartition(":")[2], 16) == port:
                inodes.add(inode)
    owners: dict[str, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[2]) != group:
                continue
            for fd in (stat.parent / "fd").iterdir():
                found = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
                if found and found[1] in inodes:
                    owners[found[1]] = int(stat.parent.name)
        except OSError:  # a process that ended meanwhile
            continue
    return owners


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc")
def test_every_worker_listens_on_the_grpc_port(triton: Any, served: Served) -> None:
    """SO_REUSEPORT: one listening socket per uvicorn worker, none in the parent."""
    deadline = time.monotonic() + 30  # the second worker may still be starting
    while True:
        owners = _listening_sockets(served.grpc_port, served.http.proc.pid)
        if len(owners) == WORKERS or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(owners) == WORKERS, owners
    assert len(set(owners.values())) == WORKERS, "each worker holds its own socket"
    assert served.http.proc.pid not in owners.values()
    assert triton.is_server_live()


def _count(metrics: str, method: str, code: str) -> float:
    found = re.search(
        rf'^gmm_grpc_requests_total\{{code="{code}",method="{method}"\}} (\S+)$', metrics, re.M
    )
    return float(found[1]) if found else 0.0


def test_metrics_count_grpc_calls_of_every_worker(served: Served, mixture: str) -> None:
    """One figure for the service: each call counted once, whichever worker took it
    (a new client is a new connection, which the kernel may give either worker)."""
    before = served.http.client.get("/metrics").text
    X = _points(2)
    for _ in range(6):
        with grpcclient.InferenceServerClient(url=served.target) as client:
            client.infer("seed", [_input(X)], headers=AUTH)
            with pytest.raises(triton_utils.InferenceServerException):
                client.infer("no-such-model", [_input(X)], headers=AUTH)
    after = served.http.client.get("/metrics").text
    assert _count(after, "ModelInfer", "OK") - _count(before, "ModelInfer", "OK") == 6
    assert _count(after, "ModelInfer", "NOT_FOUND") - _count(before, "ModelInfer", "NOT_FOUND") == 6
    assert 'gmm_grpc_request_duration_seconds_count{method="ModelInfer"}' in after


def test_without_the_extra_the_service_does_not_start(tmp_path: Path) -> None:
    """``python -m service`` says what to install, once, before starting a worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GMM_")}
    env.update({"GMM_GRPC_PORT": "50051", "GMM_WORKERS": "2", "GMM_STORE_DIR": str(tmp_path)})
    code = "import sys; sys.modules['grpc'] = None; from service.__main__ import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "`grpc` extra" in done.stderr and "gmm-service[grpc]" in done.stderr
    assert "Started" not in done.stderr  # no worker was spawned


def test_shutdown_lets_calls_in_flight_finish(tmp_path: Path) -> None:
    """SIGTERM while a client calls in a loop: calls answer until the server stops
    taking new ones (UNAVAILABLE, or CANCELLED for one it had not started), and the
    process ends sooner than the grace the gRPC server gives calls in flight, so none
    was cut off: that would have taken the whole grace."""
    env = {
        "GMM_STORE_DIR": str(tmp_path / "store"),
        "GMM_SECRET_KEY": "grpc-secret",
        "GMM_GRPC_PORT": str(free_port()),
    }
    with running_server(env, cwd=tmp_path) as server:
        target = f"{HOST}:{env['GMM_GRPC_PORT']}"
        _fit(Served(server, int(env["GMM_GRPC_PORT"])), {**SEED_FIT, "name": "seed"})
        statuses: list[str] = []
        answered = threading.Event()

        def call_until_refused() -> None:
            with grpcclient.InferenceServerClient(url=target) as client:
                X = _points(500)
                while not statuses or statuses[-1] == "OK":
                    try:
                        client.infer("seed", [_input(X)], client_timeout=30)
                        statuses.append("OK")
                    except triton_utils.InferenceServerException as exc:
                        statuses.append(str(exc.status()))
                    answered.set()

        caller = threading.Thread(target=call_until_refused)
        caller.start()
        assert answered.wait(30)
        stopping = time.monotonic()
        os.killpg(server.proc.pid, signal.SIGTERM)
        # uvicorn shuts down, then raises the signal it caught again: -SIGTERM.
        assert server.proc.wait(30) in (0, -signal.SIGTERM)
        took = time.monotonic() - stopping
        caller.join(30)
        assert not caller.is_alive()
        log = server.log()
    assert took < SHUTDOWN_GRACE_SECONDS, took
    assert statuses.count("OK") == len(statuses) - 1 >= 1
    refused = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert statuses[-1] in {_status(code) for code in refused}, statuses[-3:]
    assert "Application shutdown complete" in log and "Finished server process" in log
    assert "Traceback" not in log, log[-3000:]
