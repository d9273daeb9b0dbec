"""Ids: the formats of every id the server makes, and their checks. The bottom floor:
schemas (path and cursor patterns), the store (ids become paths) and the domain all
import it, and it imports nothing of the service but its errors."""

from __future__ import annotations

import re
import secrets
import threading
import time

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


#: Job ids are made like model ids (time-ordered, so "newest first" is a name sort)
#: and validated the same way before they become paths.
JOB_ID_PATTERN = MODEL_ID_PATTERN


def new_job_id() -> str:
    return new_model_id()


def check_job_id(job_id: str) -> str:
    """Refuse anything that is not exactly a server-made job id: a 404, like a model's."""
    if not isinstance(job_id, str) or not _ID_RE.fullmatch(job_id):
        raise NotFound(f"No job with id {job_id!r}.")
    return job_id


def check_id(model_id: str) -> str:
    """Refuse anything that is not exactly a server-made id before it becomes a path."""
    if not isinstance(model_id, str) or not _ID_RE.fullmatch(model_id):
        raise NotFound(f"No model with id {model_id!r}.")
    return model_id


#: A dataset's id is the sha256 of its canonical bytes (``array_sha256``): the same
#: array uploaded twice is one dataset.
DATASET_ID_PATTERN = r"^[0-9a-f]{64}$"
_DATASET_ID_RE = re.compile(DATASET_ID_PATTERN)
#: Datasets list newest first; a cursor is the creation time (ms, 12 hex) and the id.
DATASET_CURSOR_PATTERN = r"^[0-9a-f]{76}$"


def check_dataset_id(dataset_id: str) -> str:
    """Refuse anything that is not exactly a dataset id before it becomes a path."""
    if not isinstance(dataset_id, str) or not _DATASET_ID_RE.fullmatch(dataset_id):
        raise NotFound(f"No dataset with id {dataset_id!r}.")
    return dataset_id
