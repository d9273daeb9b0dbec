"""The Open Inference Protocol's (v2) JSON bodies, as the OpenAPI document shows them.

Requests are decoded by ``service.api.v2.protocol``, not by these models: an infer
body may be a JSON header followed by raw tensor bytes, and the protocol's own
error form (``{"error": "..."}``, 400) names each field. These models document the
JSON form and check the JSON answers. Unknown fields are allowed, as the protocol
allows extensions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: What ``points`` may be sent as (``service.api.v2.protocol`` knows their layouts).
InputDatatype = Literal[
    "FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8"
]


class ProtocolError(BaseModel):
    """How every ``/v2`` route answers an error: the protocol's form, not problem+json."""

    error: str = Field(description="What was wrong, naming the field.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"error": "inputs[0].shape [1, 3]: the model takes 2 features per point, not 3."}
            ]
        }
    )


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ServerMetadata(BaseModel):
    name: str = Field(examples=["gmm-service"])
    version: str
    extensions: list[str] = Field(description="Protocol extensions served: binary tensor data.")


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension of any size.")


class ModelMetadata(BaseModel):
    name: str = Field(description="The model as the path named it: its id or its name.")
    versions: list[str] = Field(
        description="The id of the model that answers (the newest of a name)."
    )
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


_BINARY_SIZE = (
    "With the binary tensor data extension: this tensor's bytes, raw little-endian "
    "and row-major, follow the JSON header (`Inference-Header-Content-Length`)."
)


class InputParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    binary_data_size: int | None = Field(None, ge=0, description=_BINARY_SIZE)


class OutputTensorParameters(BaseModel):
    binary_data_size: int = Field(ge=0, description=_BINARY_SIZE)


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: Literal["points"]
    shape: list[Annotated[int, Field(ge=1)]] = Field(
        min_length=2, max_length=2, description="[n_points, n_features]; n_features as the model."
    )
    datatype: InputDatatype = Field(
        description=(
            "FP16, FP32 and integers are converted to float64 (FP32 values as FP32 holds them)."
        )
    )
    parameters: InputParameters | None = None
    data: list[Any] | None = Field(
        None,
        description=(
            "The values, row-major: flat, or nested as `shape`. Absent when the tensor "
            "is sent as binary data."
        ),
    )


class OutputParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    binary_data: bool | None = Field(
        None, description="Answer this output as raw bytes after the JSON header."
    )


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: Literal["labels", "probabilities", "distances"]
    parameters: OutputParameters | None = None


class RequestParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    binary_data_output: bool | None = Field(
        None, description="Outputs not named in `outputs` answered as binary data."
    )


class InferenceRequest(BaseModel):
    """An infer request in the protocol's JSON form."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "id": "seed-blobs-1",
                    "inputs": [
                        {
                            "name": "points",
                            "shape": [2, 2],
                            "datatype": "FP64",
                            "data": [[-2.5, 5.0], [4.0, -7.5]],
                        }
                    ],
                    "outputs": [{"name": "labels"}, {"name": "probabilities"}],
                }
            ]
        },
    )

    id: str | None = Field(None, description="Echoed in the response.")
    parameters: RequestParameters | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestOutput] | None = Field(
        None, description="Outputs to answer, in this order; all of them when absent."
    )


class ResponseOutput(BaseModel):
    name: str
    datatype: Literal["INT64", "FP64"]
    shape: list[int]
    parameters: OutputTensorParameters | None = None
    data: list[float] | None = Field(
        None, description="Flat, row-major. Absent for an output sent as binary data."
    )


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str = Field(description="The id of the model that answered.")
    id: str | None = None
    outputs: list[ResponseOutput]
