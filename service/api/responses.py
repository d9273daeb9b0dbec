"""A JSON response that serialises numpy arrays directly (orjson).

Fitted arrays go from numpy to bytes in one pass, without a detour through Python
lists and pydantic. Non-finite floats become ``null``, as the contract says.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class NumpyJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class ProblemResponse(NumpyJSONResponse):
    media_type = "application/problem+json"
