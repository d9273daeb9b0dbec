"""One error hierarchy for the whole service.

Domain and store code raise these; ``service.api.problems`` turns them into
RFC 9457 problem+json in one place. Nothing here imports FastAPI, so the domain
stays usable (and testable) without HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Loc = Sequence[str | int]

PROBLEM_BASE = "urn:gmm-service:problem:"


class ServiceError(Exception):
    """Base class: knows its HTTP status, problem type and title."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal server error"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug

    @classmethod
    def at(cls, loc: Loc, msg: str, err_type: str = "value_error") -> ServiceError:
        """Build an error about one place in the request (``loc`` as FastAPI names it)."""
        return cls(msg, errors=[{"loc": list(loc), "msg": msg, "type": err_type}])


class InvalidInput(ServiceError):
    """The request is well-formed JSON but its values cannot be used."""

    status = 422
    slug = "invalid-input"
    title = "Invalid input"


class FitFailed(ServiceError):
    """scikit-learn refused the data or parameters during the fit."""

    status = 422
    slug = "fit-failed"
    title = "The estimator could not be fitted"


class NotFound(ServiceError):
    status = 404
    slug = "not-found"
    title = "Not found"


class PayloadTooLarge(ServiceError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class LimitExceeded(ServiceError):
    """A parameter asks for more work than a setting allows (``n_components`` past
    GMM_MAX_COMPONENTS, a grid past GMM_MAX_GRID_CELLS, ...). The body may be tiny, so
    it is no "payload too large" (413, kept for data and bodies past their size
    limits): a 422 whose detail names the setting."""

    status = 422
    slug = "limit-exceeded"
    title = "Over a limit of this service"


class UnsupportedOperation(ServiceError):
    """The operation exists but not for this kind of model (for example sampling KMeans)."""

    status = 422
    slug = "unsupported-operation"
    title = "Operation not supported for this model"


class StoreUnavailable(ServiceError):
    status = 503
    slug = "store-unavailable"
    title = "Model store unavailable"


class StoreFull(ServiceError):
    """The store holds GMM_STORE_MAX_BYTES: writes are refused, reads go on."""

    status = 507
    slug = "insufficient-storage"
    title = "The store is full"


class ArtifactIntegrityError(ServiceError):
    """A stored artifact failed its signature or checksum: it is never unpickled."""

    status = 500
    slug = "artifact-integrity"
    title = "Stored artifact failed its integrity check"


class Busy(ServiceError):
    """Too many fits at once: shed load rather than queue without bound."""

    status = 429
    slug = "busy"
    title = "Too many fits running"


class FitTimeout(ServiceError):
    """The fit ran past GMM_FIT_TIMEOUT_SECONDS and its worker process was killed."""

    status = 422
    slug = "fit-timeout"
    title = "The fit took longer than the time limit"


class UnsupportedMediaType(ServiceError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class ExtraNotInstalled(ServiceError):
    """The operation needs an optional extra (``pip install 'gmm-service[onnx]'``) that
    this server was installed without: the server's operator can add it, the client
    cannot, so it is a 5xx that names the extra rather than a 4xx."""

    status = 501
    slug = "extra-not-installed"
    title = "An optional extra is not installed on this server"


class InvalidInferenceRequest(ServiceError):
    """An Open Inference Protocol (v2) request that cannot be used. The protocol
    answers every bad request 400 with ``{"error": "..."}``, whatever is wrong, so
    this one class carries them all; its message names the field."""

    status = 400
    slug = "invalid-inference-request"
    title = "Invalid inference request"


class Conflict(ServiceError):
    """The resource is not in a state that allows this (a job's result before it ended)."""

    status = 409
    slug = "conflict"
    title = "Conflict"


def from_problem(problem: dict[str, Any]) -> ServiceError:
    """The error a stored problem object describes (a failed job's ``error``), raised
    again as it was first answered: same status, type, title, detail and errors."""
    error = ServiceError(str(problem.get("detail", "")), errors=problem.get("errors"))
    error.status = int(problem.get("status", 500))
    error.title = str(problem.get("title", ServiceError.title))
    error.slug = str(problem.get("type", "")).removeprefix(PROBLEM_BASE) or ServiceError.slug
    return error


class Unauthorized(ServiceError):
    """No API key, or one the service does not know (``service.api.security``)."""

    status = 401
    slug = "unauthorized"
    title = "Missing or invalid API key"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="gmm-service"'})


class Forbidden(ServiceError):
    """A read-only key asked for an operation that writes."""

    status = 403
    slug = "forbidden"
    title = "This API key may not do that"
