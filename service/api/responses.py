"""A JSON response that serialises numpy arrays directly (orjson).

Fitted arrays go from numpy to bytes in one pass, without a detour through Python
lists and pydantic. Non-finite floats become ``null``, as the contract says.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from service.errors import (
    ArtifactIntegrityError,
    Busy,
    Conflict,
    ExtraNotInstalled,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    StoreFull,
    StoreUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)


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


def _example(error: ServiceError, summary: str) -> dict[str, Any]:
    """A named OpenAPI example of the body ``error`` is answered with."""
    body: dict[str, Any] = {
        "type": error.type,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }
    if error.errors is not None:
        body["errors"] = error.errors
    return {"summary": summary, "value": body}


def _at(error: type[ServiceError], loc: list[str | int], msg: str, err_type: str) -> ServiceError:
    return error(msg, errors=[{"loc": loc, "msg": msg, "type": err_type}])


class _MalformedJson(ServiceError):
    """What ``service.api.problems`` answers for a body that is not JSON at all."""

    status = 400
    slug = "malformed-json"
    title = "Malformed JSON"


class _ValidationFailed(ServiceError):
    """What ``service.api.problems`` answers when the body does not fit the schema."""

    status = 422
    slug = "validation-error"
    title = "Request validation failed"


_MODEL_ID = "019abc12de34f0a1b2c3d4e5f6a7"
_TOO_SMALL = "Input should be greater than or equal to 1"
_BAD_JSON = "Expecting property name enclosed in double quotes at character 23"

#: Per status, examples of the problem+json bodies the service really answers with it;
#: each shows its own ``type``, so a client sees which errors to tell apart.
PROBLEM_EXAMPLES: dict[int, dict[str, dict[str, Any]]] = {
    400: {
        "malformed-json": _example(
            _MalformedJson(
                f"The request body is not valid JSON: {_BAD_JSON}",
                errors=[{"loc": ["body", 23], "msg": _BAD_JSON, "type": "json_invalid"}],
            ),
            "The body is not JSON",
        )
    },
    401: {
        "unauthorized": _example(
            Unauthorized("Send an API key in X-API-Key or Authorization: Bearer."),
            "No API key, or an unknown one",
        )
    },
    403: {
        "forbidden": _example(
            Forbidden("A read-only key may not call create_model."),
            "A read-only key tried to change something",
        )
    },
    404: {
        "not-found": _example(
            NotFound(f"No model with id '{_MODEL_ID}'."), "The model does not exist (any more)"
        )
    },
    409: {
        "conflict": _example(
            Conflict(
                f"Job {_MODEL_ID} is running: its result exists once it has succeeded. "
                f"Poll GET /v1/jobs/{_MODEL_ID} until then."
            ),
            "A job's result asked for before the job succeeded",
        )
    },
    413: {
        "payload-too-large": _example(
            PayloadTooLarge(
                "The request body exceeds the limit of 52428800 bytes (GMM_MAX_BODY_BYTES)."
            ),
            "Body or data larger than a configured limit",
        )
    },
    415: {
        "unsupported-media-type": _example(
            UnsupportedMediaType(
                "The body must be JSON, sent as Content-Type: application/json "
                "(got 'application/x-www-form-urlencoded')."
            ),
            "The body was sent as a form",
        )
    },
    422: {
        "validation-error": _example(
            _ValidationFailed(
                f"body.params.n_components: {_TOO_SMALL}",
                errors=[
                    {
                        "loc": ["body", "params", "n_components"],
                        "msg": _TOO_SMALL,
                        "type": "greater_than_equal",
                    }
                ],
            ),
            "The body does not fit the schema",
        ),
        "invalid-input": _example(
            _at(
                InvalidInput,
                ["body", "points", 0],
                "row 0 has 3 values, expected 2 (the model's n_features).",
                "wrong_width",
            ),
            "Valid JSON whose values cannot be used",
        ),
    },
    429: {
        "busy": _example(
            Busy("2 fits are already running (GMM_MAX_CONCURRENT_FITS); retry in 2 s."),
            "Every fit slot is busy",
        )
    },
    500: {
        "artifact-integrity": _example(
            ArtifactIntegrityError(
                f"The artifact of model {_MODEL_ID} failed its integrity check and was not loaded."
            ),
            "A stored artifact failed its integrity check",
        )
    },
    501: {
        "extra-not-installed": _example(
            ExtraNotInstalled(
                "ONNX export needs the onnx extra, which this server was installed without "
                "(No module named 'skl2onnx'). The server's operator can add it: pip install "
                "'gmm-service[onnx]'. The portable JSON export (format=json) needs nothing more."
            ),
            "An optional extra is not installed",
        )
    },
    503: {
        "store-unavailable": _example(
            StoreUnavailable("Could not write the model: No space left on device (ENOSPC)."),
            "The model store is unavailable",
        )
    },
    507: {
        "insufficient-storage": _example(
            StoreFull(
                "The store holds 9999623 bytes; 48211 more would pass GMM_STORE_MAX_BYTES "
                "(10000000). Delete models or datasets (reads and predictions go on)."
            ),
            "The store is full",
        )
    },
}

#: Headers some problem responses carry, declared where they are answered.
PROBLEM_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The authentication scheme to use: `Bearer`.",
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}
