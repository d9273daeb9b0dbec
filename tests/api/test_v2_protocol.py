"""``service.api.v2.protocol`` on its own: bytes in, arrays out, and back. No server."""

from __future__ import annotations

import json
from typing import get_args

import numpy as np
import pytest

from service.api.v2 import protocol
from service.api.v2.types import InputDatatype
from service.errors import InvalidInferenceRequest

OUTPUTS = ["labels", "probabilities"]


def _parse(body: bytes, header_length: str | None = None) -> protocol.InferRequest:
    return protocol.parse_request(body, header_length, width=2, outputs=OUTPUTS)


def _framed(X: np.ndarray, datatype: str, **document: object) -> tuple[bytes, str]:
    raw = X.tobytes()
    tensor = {
        "name": "points",
        "shape": list(X.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": len(raw)},
    }
    header = json.dumps({"inputs": [tensor], **document}).encode()
    return header + raw, str(len(header))


def test_the_documented_datatypes_are_the_decoded_ones() -> None:
    assert set(get_args(InputDatatype)) == set(protocol.INPUT_DATATYPES)


@pytest.mark.parametrize("datatype", sorted(protocol.INPUT_DATATYPES))
def test_every_datatype_decodes_from_binary_and_json(datatype: str) -> None:
    dtype = protocol.INPUT_DATATYPES[datatype]
    X = np.array([[1, 2], [3, 4], [5, 100]], dtype=dtype)
    body, length = _framed(X, datatype)
    from_binary = _parse(body, length).points
    assert from_binary.dtype == np.float64 and from_binary.flags.c_contiguous
    np.testing.assert_array_equal(from_binary, X.astype(np.float64))
    document = {
        "inputs": [{"name": "points", "shape": [3, 2], "datatype": datatype, "data": X.tolist()}]
    }
    from_json = _parse(json.dumps(document).encode()).points
    np.testing.assert_array_equal(from_json, from_binary)


def test_fp32_json_values_are_rounded_as_fp32_holds_them() -> None:
    document = {
        "inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", "data": [0.1, 1 / 3]}]
    }
    points = _parse(json.dumps(document).encode()).points
    assert points.tolist() == np.array([[0.1, 1 / 3]], np.float32).astype(np.float64).tolist()


def test_binary_outputs_by_default_or_by_name() -> None:
    X = np.zeros((1, 2))
    body, length = _framed(X, "FP64", parameters={"binary_data_output": True})
    assert _parse(body, length).outputs == [
        protocol.RequestedOutput("labels", True),
        protocol.RequestedOutput("probabilities", True),
    ]
    body, length = _framed(
        X, "FP64", outputs=[{"name": "probabilities", "parameters": {"binary_data": False}}]
    )
    assert _parse(body, length).outputs == [protocol.RequestedOutput("probabilities", False)]
    body, length = _framed(X, "FP64", id="abc")
    parsed = _parse(body, length)
    assert parsed.id == "abc"
    assert [o.binary for o in parsed.outputs] == [False, False]


def test_encode_json_and_binary_round_trip() -> None:
    labels = np.array([2, 0, 1])
    probabilities = np.random.default_rng(0).random((3, 4))
    results = {"labels": labels, "probabilities": probabilities}
    body, length = protocol.encode_response(
        model_name="m",
        model_version="v",
        request_id=None,
        outputs=[
            protocol.RequestedOutput("labels", False),
            protocol.RequestedOutput("probabilities", False),
        ],
        results=results,
    )
    assert length is None
    document = json.loads(body)
    assert "id" not in document
    assert document["outputs"][0] == {
        "name": "labels",
        "datatype": "INT64",
        "shape": [3],
        "data": [2, 0, 1],
    }
    # Shortest round-tripping floats: exactly the same float64 back.
    assert document["outputs"][1]["data"] == probabilities.reshape(-1).tolist()

    body, length = protocol.encode_response(
        model_name="m",
        model_version="v",
        request_id="r",
        outputs=[
            protocol.RequestedOutput("probabilities", True),
            protocol.RequestedOutput("labels", True),
        ],
        results=results,
    )
    assert length is not None
    header = json.loads(body[:length])
    assert header["id"] == "r"
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes == [96, 24] and len(body) == length + 120
    np.testing.assert_array_equal(
        np.frombuffer(body[length : length + 96], "<f8").reshape(3, 4), probabilities
    )
    assert np.frombuffer(body[length + 96 :], "<i8").tolist() == [2, 0, 1]


@pytest.mark.parametrize(
    ("header_length", "words"),
    [("x", "non-negative integer"), ("-1", "non-negative integer"), ("999", "999 bytes")],
)
def test_header_length_is_checked(header_length: str, words: str) -> None:
    with pytest.raises(InvalidInferenceRequest, match=words) as info:
        _parse(b'{"inputs": []}', header_length)
    assert info.value.status == 400


def test_a_zero_length_header_is_an_empty_request() -> None:
    with pytest.raises(InvalidInferenceRequest, match="empty"):
        _parse(b"\x00" * 16, "0")


def test_model_metadata_names_the_outputs_of_each_family() -> None:
    mixture = {
        "id": "i",
        "algorithm": "bayesian_gaussian_mixture",
        "n_components": 5,
        "n_features": 2,
    }
    kmeans = {**mixture, "algorithm": "minibatch_kmeans"}
    assert protocol.model_metadata("x", mixture)["outputs"][1]["name"] == "probabilities"
    assert protocol.model_metadata("x", kmeans)["outputs"][1] == {
        "name": "distances",
        "datatype": "FP64",
        "shape": [-1, 5],
    }
