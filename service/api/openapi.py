"""The OpenAPI document: built once per process for each shape it can take.

Building it walks every route's models through pydantic (about half a second), and
every app ``create_app`` makes has the same routes, so the document depends only on
whether API keys are configured: without keys, security is not declared (it is not
enforced). Limits and every other setting stay out of it (tests/test_openapi.py builds
it under very different settings and compares). The process keeps each document as
JSON (it is nothing else) and each app gets its own parse of it, a deep copy 5x
cheaper than ``copy.deepcopy``: no caller can change another app's.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute

from service.api.problems import is_protocol_path
from service.api.responses import PROBLEM_EXAMPLES, PROBLEM_HEADERS
from service.api.v2 import routes as v2

DESCRIPTION = """
Train and serve scikit-learn's **GaussianMixture** and **KMeans** over HTTP, with
exactly the numbers scikit-learn gives in-process.

Start with `POST /v1/models` and the *seed-blobs* example: the notebook's
`make_blobs(n_samples=200, centers=4, cluster_std=1.6, random_state=10)` fitted by a
4-component mixture. Every error is RFC 9457 `application/problem+json`.

To look at the data and the fitted components in a browser, open
[`/explorer`](/explorer): it generates or uploads data, fits as a job, and draws the
points, means, covariance ellipses and a BIC/AIC curve, using only these routes.
"""


def operation_id(route: APIRoute) -> str:
    """Operation ids are the route functions' names: stable across refactors of paths."""
    return route.name


TAGS: list[dict[str, Any]] = [
    {
        "name": "models",
        "description": (
            "Fit a mixture or k-means and store it; then read, predict with, score points "
            "against, sample from, export, import and delete it."
        ),
    },
    {
        "name": "datasets",
        "description": (
            "Synthetic data (`make_blobs`, explicit Gaussians, moons, circles) to look at "
            "before fitting it: the same generators `data.generator` takes everywhere."
        ),
    },
    {
        "name": "plots",
        "description": "Pictures (PNG or SVG) of models and data, and covariance ellipses.",
    },
    {
        "name": "analysis",
        "description": (
            "Choose the number of components by BIC or AIC, and compare algorithms on the "
            "same data. Nothing is stored unless asked."
        ),
    },
    {
        "name": "jobs",
        "description": (
            "Fits, model selections and comparisons run as jobs; one not done within "
            "GMM_SYNC_WAIT_SECONDS (or sent with `wait: false`) is answered 202: follow "
            "its progress, read its result, or cancel it."
        ),
    },
    {"name": v2.TAG, "description": v2.TAG_DESCRIPTION},
    {
        "name": "operations",
        "description": "Liveness, readiness and Prometheus metrics; never behind an API key.",
    },
]

#: Errors some middleware or dependency can answer on many operations, documented
#: centrally so that every operation lists every status it can really return.
_AUTH_ERRORS = {
    "401": "Missing or invalid API key.",
    "403": "A read-only API key tried to change something.",
}
_BODY_ERRORS = {
    "413": "Request larger than a configured limit.",
    "415": "The body is not JSON (send Content-Type: application/json).",
}
_BUSY_ERROR = {
    "429": (
        "Every fit slot of this server process is busy (GMM_MAX_CONCURRENT_FITS) and the "
        "queue of requests waiting for one is full (GMM_FIT_QUEUE_LENGTH), or this "
        "request waited longer than GMM_FIT_QUEUE_SECONDS: retry after `Retry-After` "
        "seconds, or send the work as a job (`wait: false`)."
    )
}

#: Operations that hold a fit slot while they run, so they answer 429 when none is free
#: (a test in tests/test_openapi.py finds them by filling the slots, and checks this).
FITTING_OPERATIONS = frozenset(
    {"create_model", "select_model", "plot_model_selection", "compare_algorithms"}
)


def _problem_ref(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _protocol_error_ref(status: str, description: str) -> dict[str, Any]:
    """An error of a ``/v2`` route: the Open Inference Protocol's ``{"error": ...}``."""
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProtocolError"}}},
    }
    if int(status) in PROBLEM_HEADERS:
        response["headers"] = copy.deepcopy(PROBLEM_HEADERS[int(status)])
    return response


def _document_problems(status: str, response: dict[str, Any]) -> None:
    """Errors as application/problem+json, with examples of their own ``type``."""
    content = response.get("content", {})
    if "application/json" in content:
        content["application/problem+json"] = content.pop("application/json")
    media = content.get("application/problem+json")
    if media is not None and int(status) in PROBLEM_EXAMPLES:
        media.setdefault("examples", copy.deepcopy(PROBLEM_EXAMPLES[int(status)]))
    if int(status) in PROBLEM_HEADERS:
        response.setdefault("headers", copy.deepcopy(PROBLEM_HEADERS[int(status)]))


def build(app: FastAPI, *, keyed: bool) -> dict[str, Any]:
    """The document of ``app``, built now (no cache): errors under
    application/problem+json, shared errors listed, and API-key security declared only
    when ``keyed`` (as it is enforced)."""
    kept, app.openapi_schema = app.openapi_schema, None  # FastAPI.openapi returns it
    try:
        schema = FastAPI.openapi(app)
    finally:
        app.openapi_schema = kept
    components = schema.setdefault("components", {})
    if not keyed:
        components.pop("securitySchemes", None)
    # The v2 infer body is read raw (it may be binary): its JSON form's schemas.
    schemas = components.setdefault("schemas", {})
    for name, definition in v2.component_schemas().items():
        assert schemas.setdefault(name, definition) == definition, name
    for route, path in schema.get("paths", {}).items():
        protocol = is_protocol_path(route)
        for operation in path.values():
            # Every router behind AuthDep declares it; without keys nothing is asked.
            extra = dict(_AUTH_ERRORS) if keyed and "security" in operation else {}
            if not keyed:
                operation.pop("security", None)
            responses = operation.setdefault("responses", {})
            if protocol:  # FastAPI's default 422: the protocol answers 400 instead
                responses.pop("422", None)
            if "requestBody" in operation:
                extra.update(_BODY_ERRORS)
            if operation.get("operationId") in FITTING_OPERATIONS:
                extra.update(_BUSY_ERROR)
            for status, description in extra.items():
                ref = _protocol_error_ref(status, description) if protocol else None
                responses.setdefault(status, ref or _problem_ref(description))
            for status, response in responses.items():
                if status[0] in "45" and not protocol:
                    _document_problems(status, response)
    return schema


#: The process's documents as JSON, by ``keyed``.
_DOCUMENTS: dict[bool, bytes] = {}
_LOCK = threading.Lock()


def document(app: FastAPI) -> dict[str, Any]:
    """A copy of the process's document for an app like ``app``, built by the first
    app that asks (so under the lock, two apps starting at once build it once)."""
    keyed: bool = app.state.keyring.enabled
    with _LOCK:
        built = _DOCUMENTS.get(keyed)
        if built is None:
            built = _DOCUMENTS[keyed] = orjson.dumps(build(app, keyed=keyed))
    copied: dict[str, Any] = orjson.loads(built)
    return copied


def openapi_method(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi``: the app's copy of the document, taken on the first call."""

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            app.openapi_schema = document(app)
        return app.openapi_schema

    return openapi
