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
