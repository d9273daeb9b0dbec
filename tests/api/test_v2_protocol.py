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


def _refusal(body: bytes, header_length: str) -> str:
    with pytest.raises(InvalidInferenceRequest) as refused:
        _parse(body, header_length)
    return str(refused.value)


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "INT16"])
def test_a_header_seen_before_decodes_as_a_new_one(datatype: str) -> None:
    """The second request with a header is answered from its checked plan: the same
    points, id and outputs as a first parse, and the same refusals."""
    protocol._plan_of.cache_clear()
    dtype = protocol.INPUT_DATATYPES[datatype]
    first, length = _framed(np.array([[1, 2], [3, 4]], dtype), datatype, id="r-1")
    fresh = _parse(first, length)
    second, _ = _framed(np.array([[5, 6], [7, 8]], dtype), datatype, id="r-1")
    hits = protocol._plan_of.cache_info().hits
    planned = _parse(second, length)
    assert protocol._plan_of.cache_info().hits == hits + 1
    assert planned.points.tolist() == [[5.0, 6.0], [7.0, 8.0]]
    assert planned.points.dtype == np.float64 and planned.points.flags.c_contiguous
    assert (planned.id, planned.outputs) == (fresh.id, fresh.outputs)
    if datatype != "INT16":
        bad, _ = _framed(np.array([[5, np.nan], [7, 8]], dtype), datatype, id="r-1")
        protocol._plan_of.cache_clear()
        unplanned = _refusal(bad, length)
        _parse(first, length)  # its plan again
        assert _refusal(bad, length) == unplanned
        assert "value 1 of point 0 is not a finite number" in unplanned
    # Fewer bytes than the header says: the full parse words the refusal.
    short = first[:-1]
    assert "bytes of binary data follow" in _refusal(short, length)


def test_json_data_and_large_headers_are_not_planned() -> None:
    protocol._plan_of.cache_clear()
    document = {"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}
    _parse(json.dumps(document).encode())
    padded, length = _framed(np.ones((1, 2)), "FP64", id="x" * protocol.PLAN_HEADER_MAX_BYTES)
    _parse(padded, length)
    assert protocol._plan_of.cache_info().currsize == 0


def test_a_binary_answer_made_again_is_the_answer_made_anew() -> None:
    """The second all-binary answer of a shape reuses its JSON header, and is byte for
    byte the answer made without it."""
    outputs = [
        protocol.RequestedOutput("labels", True),
        protocol.RequestedOutput("probabilities", True),
    ]
    rng = np.random.default_rng(1)

    def answer(seed_values: np.ndarray) -> tuple[bytes, int | None]:
        results = {"labels": seed_values.argmax(axis=1), "probabilities": seed_values}
        return protocol.encode_response(
            model_name="m", model_version="v", request_id="r", outputs=outputs, results=results
        )

    first, second = rng.random((2, 4)), rng.random((2, 4))
    protocol._binary_header.cache_clear()
    fresh = answer(second)
    answer(first)  # leaves its header, which fits the second answer too
    hits = protocol._binary_header.cache_info().hits
    assert answer(second) == fresh
    assert protocol._binary_header.cache_info().hits == hits + 1
    body, length = answer(rng.random((3, 4)))  # another shape: a header of its own
    assert json.loads(body[:length])["outputs"][1]["shape"] == [3, 4]


def test_an_answer_to_a_long_request_id_is_not_kept() -> None:
    """Request ids come with the body, at any size it may have: an answer header
    holding a long one is made anew, the same bytes, and not kept."""
    outputs = [protocol.RequestedOutput("labels", True)]
    results = {"labels": np.array([1, 0])}
    long_id = "i" * (protocol.ID_KEPT_MAX_CHARS + 1)
    protocol._binary_header.cache_clear()
    body, length = protocol.encode_response(
        model_name="m", model_version="v", request_id=long_id, outputs=outputs, results=results
    )
    assert protocol._binary_header.cache_info().currsize == 0
    assert json.loads(body[:length])["id"] == long_id
    assert body[length:] == np.array([1, 0], dtype="<i8").tobytes()
    protocol.encode_response(
        model_name="m", model_version="v", request_id="short", outputs=outputs, results=results
    )
    assert protocol._binary_header.cache_info().currsize == 1
