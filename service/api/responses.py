"""A JSON response that serialises numpy arrays directly (orjson).

Fitted arrays go from numpy to bytes in one pass, without a detour through Python
lists and pydantic. Non-finite floats become ``null``, as the contract says.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from starlette.responses import Response


def _default(obj: Any) -> Any:
    """What orjson hands back: non-contiguous arrays (transposes, slices) and scalars."""
    if isinstance(obj, np.ndarray):
        return np.ascontiguousarray(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


class NumpyJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY, default=_default)


class ProblemResponse(NumpyJSONResponse):
    media_type = "application/problem+json"


#: The 201 of every route that stores a new model, as OpenAPI documents it.
MODEL_CREATED_DOC: dict[str, Any] = {
    "headers": {"Location": {"description": "URL of the new model", "schema": {"type": "string"}}}
}


def model_created(resource: dict[str, Any]) -> NumpyJSONResponse:
    """201 with the new model's ``Location``."""
    return NumpyJSONResponse(
        resource, status_code=201, headers={"Location": f"/v1/models/{resource['id']}"}
    )
