"""Problems (RFC 9457) become exceptions that carry the problem object.

The service answers every error as problem+json with a ``type`` that names what went
wrong. Callers branch on the exception class (``NotFound``, ``InvalidInput``,
``Busy``...) and read the details (``errors`` with their ``loc``) from ``problem``,
so nothing has to parse a message string.
"""

from __future__ import annotations

from typing import Any

import httpx


class GMMError(Exception):
    """Anything this client raises about the service."""


class ProblemError(GMMError):
    """An error answer of the service. ``problem`` is its problem+json object."""

    status: int = 0

    def __init__(self, problem: dict[str, Any], status: int, *, method: str = "", url: str = ""):
        self.problem = problem
        self.status = status
        self.method = method
        self.url = url
        super().__init__(self._message())

    @property
    def type(self) -> str:
        return str(self.problem.get("type", "about:blank"))

    @property
    def title(self) -> str:
        return str(self.problem.get("title", ""))

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", ""))

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Field errors (``loc``, ``msg``, ``type``) of a 422, empty otherwise."""
        return list(self.problem.get("errors") or [])

    @property
    def retry_after(self) -> float | None:
        value = self.problem.get("retry_after")
        return float(value) if value is not None else None

    def _message(self) -> str:
        head = f"{self.status} {self.title}".strip()
        text = f"{head}: {self.detail}" if self.detail else head
        for error in self.errors[:5]:
            loc = ".".join(str(part) for part in error.get("loc", []))
            text += f"\n  {loc}: {error.get('msg', '')}"
        return text


class BadRequest(ProblemError):
    """400: a body that is not JSON, or not what the route reads."""


class Unauthorized(ProblemError):
    """401/403: no API key, or one the service does not know."""


class NotFound(ProblemError):
    """404: no model, dataset or job with that id (or it was deleted)."""


class PayloadTooLarge(ProblemError):
    """413: the body passes a size limit; upload it as a dataset (``.npy``) instead."""


class UnsupportedMediaType(ProblemError):
    """415: a body in a format the route does not take."""


class InvalidInput(ProblemError):
    """422: the request is well-formed but its values are not acceptable (see
    ``errors`` for the fields), or scikit-learn refused to fit the data."""


class Busy(ProblemError):
    """429: every fit slot and the queue are full; ``retry_after`` says when to retry."""


class ServerError(ProblemError):
    """5xx: the service failed; the problem's ``instance`` names the request in its logs."""


class JobFailed(GMMError):
    """A job ended ``failed`` or ``cancelled``; ``job`` is its final resource."""

    def __init__(self, job: dict[str, Any]):
        self.job = job
        error = job.get("error") or {}
        reason = error.get("detail") or error.get("title") or job.get("status")
        super().__init__(f"job {job.get('id')} {job.get('status')}: {reason}")


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidInput,
    429: Busy,
}


def problem_from(response: httpx.Response) -> ProblemError:
    """The exception for an error ``response``, with its problem object (or one made
    from whatever the body held, when a proxy answered instead of the service)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"title": response.reason_phrase, "detail": response.text[:500]}
    body.setdefault("status", response.status_code)
    if "retry_after" not in body and "retry-after" in response.headers:
        body["retry_after"] = response.headers["retry-after"]
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else ProblemError
    return cls(
        body,
        response.status_code,
        method=response.request.method if response.request else "",
        url=str(response.request.url) if response.request else "",
    )


def problem_for_status(status: int, problem: dict[str, Any]) -> ProblemError:
    """The exception a job's stored problem stands for (a failed fit's 422, say)."""
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ProblemError)
    return cls(problem, status)
