"""Optional API keys: who may call ``/v1``, and who may only read.

Keys are kept as SHA-256 digests and every comparison runs over all of them with
``hmac.compare_digest``, so neither the key nor its position leaks through timing.
Health, readiness and metrics stay open for orchestrators and scrapers.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.config import Settings
from service.errors import ServiceError

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


class Unauthorized(ServiceError):
    status = 401
    slug = "unauthorized"
    title = "Missing or invalid API key"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="gmm-service"'})


class Forbidden(ServiceError):
    status = 403
    slug = "forbidden"
    title = "This API key may not do that"


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


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey")
_bearer = HTTPBearer(auto_error=False, scheme_name="Bearer")


async def authenticate(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str | None:
    """Dependency of every /v1 router; a no-op when no keys are configured.

    ``async`` so that it runs on the loop (a few hash comparisons) rather than costing
    every request a hop into the threadpool.
    """
    ring: KeyRing = request.app.state.keyring
    if not ring.enabled:
        return None
    # Every credential sent must be valid: a wrong bearer token next to a good X-API-Key
    # is a client sending someone else's (or a stale) key, not an anonymous extra header.
    # A header that is sent but empty, or an Authorization that is not a Bearer token,
    # counts as a wrong key.
    presented: list[str] = []
    if "x-api-key" in request.headers:
        presented.append(api_key or "")
    if "authorization" in request.headers:
        presented.append(bearer.credentials if bearer is not None else "")
    if not presented:
        raise Unauthorized("Send an API key in X-API-Key or Authorization: Bearer.")
    roles = [ring.role(key) for key in presented]
    if None in roles:
        raise Unauthorized("The API key is not valid.")
    role = "read" if "read" in roles else "admin"
    route = request.scope.get("route")
    name = getattr(route, "name", "")
    if role == "read" and request.method not in ("GET", "HEAD") and name not in READ_OPERATIONS:
        raise Forbidden(f"A read-only key may not call {name or request.url.path}.")
    return role


AuthDep = Depends(authenticate)
