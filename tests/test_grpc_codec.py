"""The gRPC transport in-process: its protobuf codec against the REST codec's words,
its stubs against tritonclient's, and start-up without the ``grpc`` extra.

``tests/test_v2_grpc.py`` drives a real server with tritonclient; these pin what
that cannot see cheaply: that both transports refuse a request with the same message,
that every input datatype decodes to the float64 the model sees, and that the shipped
stubs can share a process with tritonclient's.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from packaging.requirements import Requirement

from service import errors
from service.api.v2 import protocol
from service.config import Settings
from service.errors import InvalidInferenceRequest, ServiceError
from service.grpc import MISSING_EXTRA, require_extra
from service.main import create_app
from tests.conftest import require

grpc = require("grpc")
triton_pb = require("tritonclient.grpc.service_pb2")

from service.grpc import codec, servicer  # noqa: E402  (needs the grpc extra)
from service.grpc.generated import open_inference_grpc_pb2 as pb  # noqa: E402
from service.grpc.generated import open_inference_grpc_pb2_grpc as pb_grpc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = ["labels", "probabilities"]
X = np.array([[0.5, -1.25], [3.0, 4.0], [-2.0, 1e-3]])


def _pb_request(
    tensors: list[dict[str, Any]], outputs: list[str] | None = None, raw: list[bytes] | None = None
) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m", id="r", raw_input_contents=raw or [])
    for tensor in tensors:
        message.inputs.add(**tensor)
    for name in outputs or []:
        message.outputs.add(name=name)
    return message


def _grpc_refusal(message: pb.ModelInferRequest) -> str:
    with pytest.raises(InvalidInferenceRequest) as refused:
        codec.parse_request(message, width=2, outputs=OUTPUTS)
    return refused.value.detail


def _rest_refusal(document: dict[str, Any]) -> str:
    with pytest.raises(InvalidInferenceRequest) as refused:
        protocol.parse_request(json.dumps(document).encode(), None, width=2, outputs=OUTPUTS)
    return refused.value.detail


def _points(shape: list[int], datatype: str = "FP64", name: str = "points") -> dict[str, Any]:
    """One input as both transports send it: JSON values, and protobuf typed contents."""
    return {"name": name, "datatype": datatype, "shape": shape}


FP64 = {"fp64_contents": [0.0] * 4}

#: The same mistake over both transports: (JSON request, protobuf request).
SAME_WORDS = {
    "unknown input": (
        {"inputs": [{**_points([2, 2], name="x"), "data": [0] * 4}]},
        _pb_request([{**_points([2, 2], name="x"), "contents": FP64}]),
    ),
    "input twice": (
        {"inputs": [{**_points([2, 2]), "data": [0.0] * 4}] * 2},
        _pb_request([{**_points([2, 2]), "contents": FP64}] * 2),
    ),
    "datatype": (
        {"inputs": [{**_points([2, 2], "BOOL"), "data": [True] * 4}]},
        _pb_request([{**_points([2, 2], "BOOL"), "contents": {"bool_contents": [True] * 4}}]),
    ),
    "rank": (
        {"inputs": [{**_points([1, 2, 2]), "data": [0.0] * 4}]},
        _pb_request([{**_points([1, 2, 2]), "contents": FP64}]),
    ),
    "empty dimension": (
        {"inputs": [{**_points([0, 2]), "data": []}]},
        _pb_request([{**_points([0, 2]), "contents": FP64}]),
    ),
    "width": (
        {"inputs": [{**_points([2, 3]), "data": [0.0] * 6}]},
        _pb_request([{**_points([2, 3]), "contents": {"fp64_contents": [0.0] * 6}}]),
    ),
    "no inputs": ({"inputs": []}, _pb_request([])),
    "unknown output": (
        {"inputs": [{**_points([2, 2]), "data": [0.0] * 4}], "outputs": [{"name": "x"}]},
        _pb_request([{**_points([2, 2]), "contents": FP64}], ["x"]),
    ),
    "output twice": (
        {
            "inputs": [{**_points([2, 2]), "data": [0.0] * 4}],
            "outputs": [{"name": "labels"}, {"name": "labels"}],
        },
        _pb_request([{**_points([2, 2]), "contents": FP64}], ["labels", "labels"]),
    ),
}


@pytest.mark.parametrize("case", list(SAME_WORDS))
def test_both_transports_refuse_in_the_same_words(case: str) -> None:
    document, message = SAME_WORDS[case]
    assert _grpc_refusal(message) == _rest_refusal(document)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            _pb_request([_points([2, 2])], raw=[b"\0" * 24]),
            "raw_input_contents[0] is 24 bytes, but shape [2, 2] of FP64 takes 32.",
        ),
        (
            _pb_request([{**_points([2, 2]), "contents": {"fp64_contents": [0.0] * 3}}]),
            "inputs[0].contents.fp64_contents holds 3 values, but its shape [2, 2] needs 4.",
        ),
        (
            _pb_request([{**_points([1, 2], "INT8"), "contents": {"int_contents": [1, 300]}}]),
            "inputs[0].contents.int_contents holds values outside the range of INT8.",
        ),
        (
            _pb_request([_points([1, 2])], raw=[np.array([1.0, np.inf]).tobytes()]),
            "raw_input_contents[0]: value 1 of point 0 is not a finite number (inf as float64)",
        ),
        (
            _pb_request([{**_points([1, 2]), "contents": {"fp32_contents": [1.0, 2.0]}}]),
            "inputs[0] has no data: send contents.fp64_contents (datatype FP64)",
        ),
        (
            _pb_request([{**_points([1, 2], "FP16"), "contents": {"fp32_contents": [1.0, 2.0]}}]),
            "inputs[0].datatype FP16 has no typed contents in the protocol",
        ),
        (
            _pb_request([_points([1, 2]), _points([1, 2])], raw=[b"\0" * 16]),
            "raw_input_contents holds 1 tensors, but inputs names 2",
        ),
        (
            _pb_request([{**_points([1, 2]), "contents": FP64}], raw=[b"\0" * 16]),
            "inputs[0] has both contents and raw_input_contents[0]",
        ),
    ],
    ids=["bytes", "count", "range", "finite", "wrong-field", "fp16-typed", "raw-count", "both"],
)
def test_refusals_name_the_protobuf_field(message: pb.ModelInferRequest, expected: str) -> None:
    assert _grpc_refusal(message).startswith(expected)


@pytest.mark.parametrize("datatype", sorted(protocol.INPUT_DATATYPES))
def test_raw_inputs_of_every_datatype_decode_to_float64(datatype: str) -> None:
    values = np.array([[1, 2], [3, 120]], dtype=protocol.INPUT_DATATYPES[datatype])
    message = _pb_request([_points([2, 2], datatype)], ["probabilities"], [values.tobytes()])
    decoded = codec.parse_request(message, width=2, outputs=OUTPUTS)
    assert decoded.points.dtype == np.float64
    np.testing.assert_array_equal(decoded.points, values.astype(np.float64))
    assert decoded.id == "r"
    assert decoded.outputs == [protocol.RequestedOutput("probabilities", True)]


@pytest.mark.parametrize("datatype", sorted(set(codec.CONTENTS)))
def test_typed_inputs_of_every_datatype_decode_to_float64(datatype: str) -> None:
    field, dtype = codec.CONTENTS[datatype]
    values = np.array([[1, 2], [3, 120]], dtype=protocol.INPUT_DATATYPES[datatype])
    contents = {field: values.reshape(-1).astype(dtype).tolist()}
    message = _pb_request([{**_points([2, 2], datatype), "contents": contents}])
    decoded = codec.parse_request(message, width=2, outputs=OUTPUTS)
    np.testing.assert_array_equal(decoded.points, values.astype(np.float64))
    # No outputs named: all of them, typed as the inputs were.
    assert decoded.outputs == [protocol.RequestedOutput(n, False) for n in OUTPUTS]


def test_fp32_values_reach_the_model_as_fp32_holds_them() -> None:
    """As over REST: FP32 values are FP32's, not the float64 the client started from."""
    X32 = X.astype(np.float32)
    typed = _pb_request([{**_points([3, 2], "FP32"), "contents": {"fp32_contents": X.ravel()}}])
    raw = _pb_request([_points([3, 2], "FP32")], raw=[X32.tobytes()])
    for message in (typed, raw):
        points = codec.parse_request(message, width=2, outputs=OUTPUTS).points
        np.testing.assert_array_equal(points, X32.astype(np.float64))


@pytest.mark.parametrize("binary", [True, False], ids=["raw", "typed"])
def test_answers_carry_the_exact_values(binary: bool) -> None:
    results = {
        "labels": np.array([3, 0, 1]),
        "probabilities": np.array([[0.1, 0.9], [1 / 3, 2 / 3], [1e-300, 1.0]]),
    }
    outputs = [protocol.RequestedOutput(n, binary) for n in ("probabilities", "labels")]
    response = codec.encode_response(
        model_name="seed", model_version="v", request_id=None, outputs=outputs, results=results
    )
    # Read back by Triton's own message, as tritonclient reads it.
    back = triton_pb.ModelInferResponse.FromString(response.SerializeToString())
    assert (back.model_name, back.model_version, back.id) == ("seed", "v", "")
    assert [(o.name, o.datatype, list(o.shape)) for o in back.outputs] == [
        ("probabilities", "FP64", [3, 2]),
        ("labels", "INT64", [3]),
    ]
    if binary:
        probabilities = np.frombuffer(back.raw_output_contents[0], "<f8").reshape(3, 2)
        labels = np.frombuffer(back.raw_output_contents[1], "<i8")
    else:
        assert not back.raw_output_contents
        probabilities = np.array(back.outputs[0].contents.fp64_contents).reshape(3, 2)
        labels = np.array(back.outputs[1].contents.int64_contents)
    np.testing.assert_array_equal(probabilities, results["probabilities"])
    np.testing.assert_array_equal(labels, results["labels"])


def test_stubs_share_a_process_with_tritonclients() -> None:
    """Both register ``inference.*`` messages: ours live in a pool of their own (see
    service/grpc/generated/README.md), and the two speak the same wire format."""
    assert pb.ModelInferRequest.DESCRIPTOR.full_name == "inference.ModelInferRequest"
    sent = triton_pb.ModelInferRequest(model_name="seed", model_version="1", id="r")
    sent.inputs.add(name="points", datatype="FP64", shape=[3, 2])
    sent.raw_input_contents.append(X.tobytes())
    sent.outputs.add(name="labels")
    sent.parameters["priority"].uint64_param = 3
    received = pb.ModelInferRequest.FromString(sent.SerializeToString())
    decoded = codec.parse_request(received, width=2, outputs=OUTPUTS)
    np.testing.assert_array_equal(decoded.points, X)
    assert received.parameters["priority"].uint64_param == 3
    metadata = codec.model_metadata(
        protocol.model_metadata(
            "seed", {"id": "i", "n_components": 4, "n_features": 2, "algorithm": "kmeans"}
        )
    )
    read = triton_pb.ModelMetadataResponse.FromString(metadata.SerializeToString())
    assert [(t.name, list(t.shape)) for t in read.outputs] == [
        ("labels", [-1]),
        ("distances", [-1, 4]),
    ]


def test_the_servicer_serves_every_rpc_of_the_service() -> None:
    rpcs = {m.name for m in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
    assert rpcs == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    }
    for name in rpcs:
        mine = getattr(servicer.Servicer, name)
        assert mine is not getattr(pb_grpc.GRPCInferenceServiceServicer, name), name


def test_every_service_error_has_its_grpc_status() -> None:
    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, ServiceError) and c is not ServiceError
    ]
    assert len(classes) >= 10
    for cls in classes:
        assert servicer.status_code(cls.status) != grpc.StatusCode.UNKNOWN, cls.__name__
    assert servicer.status_code(errors.NotFound.status) == grpc.StatusCode.NOT_FOUND
    assert servicer.status_code(errors.Unauthorized.status) == grpc.StatusCode.UNAUTHENTICATED
    assert servicer.status_code(InvalidInferenceRequest.status) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_the_grpc_extra_floors_are_those_the_stubs_check() -> None:
    """The stubs refuse to import below the versions they were generated with."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    floors = {Requirement(r).name: str(Requirement(r).specifier) for r in extras["grpc"]}
    generated = ROOT / "service" / "grpc" / "generated"
    grpc_version = pb_grpc.GRPC_GENERATED_VERSION
    gencode = re.search(
        r"^# Protobuf Python Version: (\S+)$",
        (generated / "open_inference_grpc_pb2.py").read_text(encoding="utf-8"),
        re.M,
    )
    assert gencode, "the pb2 module says which protobuf generated it"
    assert floors == {"grpcio": f">={grpc_version}", "protobuf": f">={gencode[1]}"}
    readme = (generated / "README.md").read_text(encoding="utf-8")
    assert f"grpcio >= {grpc_version}" in readme and f"protobuf **{gencode[1]}**" in readme
    script = (ROOT / "scripts" / "generate_grpc_stubs.py").read_text(encoding="utf-8")
    assert f'GRPCIO_TOOLS = "{grpc_version}"' in script


def test_start_up_without_the_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    monkeypatch.setitem(sys.modules, "grpc", None)  # as if grpcio were not installed
    with pytest.raises(RuntimeError, match="`grpc` extra") as refused:
        require_extra()
    assert str(refused.value) == MISSING_EXTRA
    app = create_app(settings.model_copy(update={"grpc_port": 50051}))  # builds: no work yet
    with pytest.raises(RuntimeError, match="`grpc` extra"), TestClient(app):
        pass
