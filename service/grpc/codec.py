"""The protocol's protobuf messages, decoded to arrays and encoded back.

The gRPC twin of ``service.api.v2.protocol`` (JSON and binary tensor data), and built
on its checks: each tensor's datatype, shape, byte or value count, integer range and
finite values are refused by the same functions, in the same words, naming the
protobuf field (``raw_input_contents[0]``, ``inputs[0].contents.fp64_contents``).

Inputs come as ``raw_input_contents`` (little-endian bytes, row-major: what
tritonclient sends) or as typed ``contents``. Outputs answer in kind, as Triton does:
``raw_output_contents`` when the inputs were raw (tritonclient reads nothing else),
typed ``contents`` when they were typed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.api.v2 import protocol
from service.api.v2.protocol import InferRequest, RequestedOutput
from service.errors import InvalidInferenceRequest
from service.grpc.generated import open_inference_grpc_pb2 as pb

#: The ``InferTensorContents`` field of each datatype, and the dtype protobuf gives it.
#: FP16 has none: the protocol sends it as raw bytes only.
CONTENTS: dict[str, tuple[str, np.dtype[Any]]] = {
    "FP64": ("fp64_contents", np.dtype(np.float64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
}


def _typed(
    tensor: pb.ModelInferRequest.InferInputTensor, where: str, datatype: str, shape: list[int]
) -> tuple[np.ndarray, str]:
    """A tensor's typed contents as a flat array, and the field they came from."""
    if datatype not in CONTENTS:
        raise InvalidInferenceRequest(
            f"{where}.datatype {datatype} has no typed contents in the protocol: send the "
            "tensor as raw_input_contents."
        )
    name, dtype = CONTENTS[datatype]
    field = f"{where}.contents.{name}"
    container = getattr(tensor.contents, name)
    if not container:
        raise InvalidInferenceRequest(
            f"{where} has no data: send contents.{name} (datatype {datatype}), or every "
            "input as raw_input_contents."
        )
    values = np.fromiter(container, dtype=dtype, count=len(container))
    protocol.check_value_count(field, values.size, shape)
    protocol.check_integer_range(field, values, datatype)
    return values, field


def parse_request(
    message: pb.ModelInferRequest, *, width: int, outputs: Sequence[str]
) -> InferRequest:
    """Decode an infer request for a model taking ``width`` features and answering
    ``outputs``: the points as ``(n_points, n_features)`` float64, and the outputs to
    answer (raw when the inputs were)."""
    raw = message.raw_input_contents
    if not message.inputs:
        raise protocol.no_inputs(width)
    if raw and len(raw) != len(message.inputs):
        raise InvalidInferenceRequest(
            f"raw_input_contents holds {len(raw)} tensors, but inputs names "
            f"{len(message.inputs)}: send one for each input, in order."
        )
    points: np.ndarray | None = None
    for i, tensor in enumerate(message.inputs):
        where = f"inputs[{i}]"
        protocol.check_input_name(where, tensor.name, seen=points is not None)
        datatype = protocol.check_datatype(where, tensor.datatype)
        shape = list(tensor.shape)
        protocol.check_shape(where, shape, width)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInferenceRequest(
                    f"{where} has both contents and raw_input_contents[{i}]; send one of them."
                )
            field = f"raw_input_contents[{i}]"
            protocol.check_byte_count(field, len(raw[i]), shape, datatype)
            values = np.frombuffer(raw[i], dtype=protocol.INPUT_DATATYPES[datatype])
        else:
            values, field = _typed(tensor, where, datatype, shape)
        points = protocol.finite_points(values, shape, field)
    assert points is not None  # inputs is non-empty and each one is points
    found: list[str] = []
    for i, output in enumerate(message.outputs):
        found.append(protocol.check_output_name(f"outputs[{i}]", output.name, outputs, found))
    return InferRequest(
        id=message.id or None,
        points=points,
        outputs=[RequestedOutput(name, bool(raw)) for name in found or outputs],
    )


def encode_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[RequestedOutput],
    results: dict[str, np.ndarray],
) -> pb.ModelInferResponse:
    """The answer: each output in ``raw_output_contents`` (``binary``) or in its typed
    contents, in the order the request named them; exactly the float64 and int64
    values the model computed."""
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request_id or ""
    )
    for output in outputs:
        datatype, array = protocol.output_array(output.name, results)
        tensor = response.outputs.add(name=output.name, datatype=datatype, shape=array.shape)
        if output.binary:
            response.raw_output_contents.append(array.tobytes())
        else:
            getattr(tensor.contents, CONTENTS[datatype][0]).extend(array.reshape(-1).tolist())
    return response


def model_metadata(document: dict[str, Any]) -> pb.ModelMetadataResponse:
    """``protocol.model_metadata``'s document as the protobuf message."""
    return pb.ModelMetadataResponse(**document)


def server_metadata(document: dict[str, Any]) -> pb.ServerMetadataResponse:
    """``dataplane.server_metadata``'s document as the protobuf message."""
    return pb.ServerMetadataResponse(**document)
