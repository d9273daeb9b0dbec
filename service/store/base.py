"""The contract every model store keeps, whatever it stores models on."""

from __future__ import annotations

import re
import secrets
import threading
import time
from typing import Any, Protocol

from service.errors import NotFound

#: Ids are 12 hex digits of creation time in milliseconds and 16 random hex digits:
#: URL-safe, opaque to clients, and sortable so that "newest first" is a name sort.
MODEL_ID_PATTERN = r"^[0-9a-f]{28}$"
_ID_RE = re.compile(MODEL_ID_PATTERN)


_last_ms = 0
_id_lock = threading.Lock()


def new_model_id() -> str:
    """Time-ordered within this process: two ids made in one millisecond still sort
    in creation order, so "newest first" holds for back-to-back fits."""
    global _last_ms
    with _id_lock:
        _last_ms = max(time.time_ns() // 1_000_000, _last_ms + 1)
        ms = _last_ms
    return f"{ms:012x}{secrets.token_hex(8)}"


def check_id(model_id: str) -> str:
    """Refuse anything that is not exactly a server-made id before it becomes a path."""
    if not isinstance(model_id, str) or not _ID_RE.fullmatch(model_id):
        raise NotFound(f"No model with id {model_id!r}.")
    return model_id


class ModelStore(Protocol):
    """Persistent models: a pickled estimator plus JSON metadata that listing reads alone."""

    def put(self, model_id: str, estimator: Any, metadata: dict[str, Any]) -> dict[str, Any]:
        """Store atomically; returns the metadata as stored (with artifact checksums)."""
        ...

    def get_metadata(self, model_id: str) -> dict[str, Any]: ...

    def exists(self, model_id: str) -> bool:
        """Whether the model is stored now: cheap, asked before serving a cached copy."""
        ...

    def load(self, model_id: str) -> Any:
        """The fitted estimator, verified before a single byte is unpickled."""
        ...

    def list(self, *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """A page of metadata, newest first, and the cursor of the next page (or None)."""
        ...

    def count(self) -> int: ...

    def total_bytes(self) -> int: ...

    def delete(self, model_id: str) -> None: ...

    def check_writable(self) -> None:
        """Raise ``StoreUnavailable`` unless a write round-trip succeeds."""
        ...
