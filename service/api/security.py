"""Optional API keys: who may call ``/v1``, and who may only read.

Keys are kept as SHA-256 digests and every comparison runs over all of them with
``hmac.compare_digest``, so neither the key nor its position leaks through timing.
Health, readiness and metrics stay open for orchestrators and scrapers. The check
runs in an ASGI layer, before the body is read (``ApiKeyMiddleware``); the
``authenticate`` dependency declares the schemes in OpenAPI and gives routes the role.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.problems import service_error_response
from service.config import Settings
from service.errors import Forbidden, ServiceError, Unauthorized

#: Operations a read-only key may call besides every GET.
READ_OPERATIONS = frozenset(
    {
        "predict",
        "score_points",
        "sample_points",
        "generate_dataset",
        "plot_dataset",
        # Open Inference Protocol predict (service.api.v2.routes)
        "model_infer",
        "model_version_infer",
    }
)


@dataclass(frozen=True)
class KeyRing:
    """Digests of accepted keys and whether each is read-only."""

    entries: tuple[tuple[bytes, bool], ...]

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def role(self, key: str) -> str | None:
        """``"admin"``, ``"read"`` or None; always compares against every entry."""
        digest = hashlib.sha256(key.encode()).digest()
        found: str | None = None
        for known, read_only in self.entries:
            if hmac.compare_digest(known, digest) and found is None:
                found = "read" if read_only else "admin"
        return found


def _split_role(text: str) -> tuple[str, bool]:
    if text.endswith(":read"):
        return text[: -len(":read")], True
    if text.endswith(":admin"):
        return text[: -len(":admin")], False
    return text, False


def load_keyring(settings: Settings) -> KeyRing:
    entries: list[tuple[bytes, bool]] = []
    if settings.api_keys is not None:
        for raw in settings.api_keys.get_secret_value().split(","):
            key, read_only = _split_role(raw.strip())
            if key:
                entries.append((hashlib.sha256(key.encode()).digest(), read_only))
    if settings.api_keys_file is not None:
        for n, line in enumerate(Path(settings.api_keys_file).read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            body, read_only = _split_role(line)
            algo, _, hexdigest = body.partition(":")
            if algo != "sha256" or len(hexdigest) != 64:
                raise ValueError(
                    f"{settings.api_keys_file}:{n}: expected 'sha256:<64 hex digits>[:read]'"
                )
            entries.append((bytes.fromhex(hexdigest), read_only))
    return KeyRing(tuple(entries))


#: Where ``ApiKeyMiddleware`` leaves the role it checked, for ``authenticate``.
ROLE_SCOPE_KEY = "gmm.api_key_role"


def presented_keys(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Every credential the request sends, as FastAPI's schemes would read it.

    Every credential sent must be valid: a wrong bearer token next to a good X-API-Key
    is a client sending someone else's (or a stale) key, not an anonymous extra header.
    A header that is sent but empty, or an Authorization that is not a Bearer token,
    counts as a wrong key (""). The first of repeated headers counts, as Starlette's
    ``request.headers`` gives it.
    """
    api_key: bytes | None = None
    authorization: bytes | None = None
    for name, value in headers:
        if name == b"x-api-key" and api_key is None:
            api_key = value
        elif name == b"authorization" and authorization is None:
            authorization = value
    presented: list[str] = []
    if api_key is not None:
        presented.append(api_key.decode("latin-1"))
    if authorization is not None:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()
        presented.append(token if scheme.lower() == "bearer" and token else "")
    return presented


def role_of(ring: KeyRing, presented: list[str]) -> str:
    """``"admin"`` or ``"read"``; Unauthorized unless every key presented is known."""
    if not presented:
        raise Unauthorized("Send an API key in X-API-Key or Authorization: Bearer.")
    roles = [ring.role(key) for key in presented]
    if None in roles:
        raise Unauthorized("The API key is not valid.")
    return "read" if "read" in roles else "admin"


def check_may_call(role: str, method: str, operation: str, path: str) -> None:
    """Forbidden when a read-only key asks for an operation that writes."""
    if role == "read" and method not in ("GET", "HEAD") and operation not in READ_OPERATIONS:
        raise Forbidden(f"A read-only key may not call {operation or path}.")


class ApiKeyMiddleware:
    """Checks the key before any byte of the body is read (issue 16).

    FastAPI reads and parses a route's body before it solves the route's dependencies,
    so ``authenticate`` alone let a client without a key have 500 MB spooled to disk,
    or a large JSON body parsed, before its 401, and made malformed JSON a 400 rather
    than a 401. This pure ASGI layer decides first, from the headers alone, and answers
    what ``authenticate`` answered (the same problems, statuses and headers).

    ``routes`` are those of the routers included with ``AuthDep``: a request one of
    them fully matches needs a key, and that route's name is the operation a read-only
    key is checked against. Any other request (health, metrics, docs, the explorer's
    files, /v2's health, an unknown path's 404, a wrong method's 405) passes as it did.
    The search runs only for requests that are not plainly allowed: a valid admin key,
    or a valid read-only key on a GET, passes after the hash comparisons alone.
    """

    def __init__(self, app: ASGIApp, keyring: KeyRing, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.keyring = keyring
        self.routes = tuple(routes)

    def _guarding_route(self, scope: Scope) -> BaseRoute | None:
        for route in self.routes:
            if route.matches(scope)[0] is Match.FULL:
                return route
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        role: str | None = None
        refusal: Unauthorized | None = None
        try:
            role = role_of(self.keyring, presented_keys(scope["headers"]))
        except Unauthorized as exc:
            refusal = exc
        if role == "admin" or (role == "read" and method in ("GET", "HEAD")):
            scope[ROLE_SCOPE_KEY] = role
            await self.app(scope, receive, send)
            return
        route = self._guarding_route(scope)
        if route is not None:
            try:
                if refusal is not None:
                    raise refusal
                assert role is not None
                check_may_call(role, method, getattr(route, "name", ""), scope["path"])
            except ServiceError as exc:
                await service_error_response(scope["path"], exc)(scope, receive, send)
                return
            scope[ROLE_SCOPE_KEY] = role
        await self.app(scope, receive, send)


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey")
_bearer = HTTPBearer(auto_error=False, scheme_name="Bearer")


async def authenticate(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str | None:
    """Dependency of every /v1 router: declares the schemes in OpenAPI, and gives the
    role; a no-op when no keys are configured.

    ``ApiKeyMiddleware`` has checked the key by the time this runs, before the body was
    read, and left the role in the scope. Should a route it did not see as guarded get
    here, the same check runs again rather than let the request through. ``async`` so
    that it runs on the loop (a few hash comparisons) rather than costing every request
    a hop into the threadpool.
    """
    ring: KeyRing = request.app.state.keyring
    if not ring.enabled:
        return None
    checked: str | None = request.scope.get(ROLE_SCOPE_KEY)
    if checked is not None:
        return checked
    role = role_of(ring, presented_keys(request.scope["headers"]))
    name = getattr(request.scope.get("route"), "name", "")
    check_may_call(role, request.method, name, request.url.path)
    return role


AuthDep = Depends(authenticate)
