"""The contract every model store keeps, whatever it stores models on."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from service.store.signing import StoredRows

_FLOAT64_LE = np.dtype("<f8")


def array_sha256(X: np.ndarray) -> str:
    """sha256 of the canonical bytes of a 2-D array: its shape as two little-endian
    uint64, then its values as C-ordered little-endian float64. (2, 3) and (3, 2)
    views of the same values differ; the same values uploaded as int32, float32 or
    CSV hash alike once converted to float64.
    """
    if X.ndim != 2:
        raise ValueError(f"datasets are 2-D; got shape {X.shape}")
    digest = hashlib.sha256(np.asarray(X.shape, dtype="<u8").tobytes())
    data = np.ascontiguousarray(X, dtype=_FLOAT64_LE)
    digest.update(memoryview(data).cast("B"))
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelQuery:
    """Which models a listing or count asks for; every field given narrows it.

    ``name`` and ``algorithm`` match exactly. Each of ``tags`` is ``"key:value"`` and
    must be one of the model's tags written that way: matching the whole string rather
    than splitting it keeps it exact although keys and values may both hold ``:``.
    ``created_after`` is exclusive, ``created_before`` inclusive."""

    name: str | None = None
    algorithm: str | None = None
    tags: tuple[str, ...] = ()
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None


#: Every model: the query of a listing or count that asks for nothing in particular.
ALL_MODELS = ModelQuery()

#: Rewrites a model's metadata (``update_metadata``): the new metadata, or None when
#: nothing changes (then nothing is written).
MetadataChange = Callable[[dict[str, Any]], dict[str, Any] | None]


class StoredItem(NamedTuple):
    """An artifact the object store holds, as the orphan sweeper sees it: the model or
    dataset id, the data file (datasets), and how old it is."""

    id: str
    file: str
    age_seconds: float


class LegacyRecord(NamedTuple):
    """A metadata file of a store written before the catalogue was a database."""

    kind: str  # "model", "dataset" or "job"
    id: str
    raw: bytes
    location: str


class Artifacts(Protocol):
    """Where the bytes of models and datasets live (local disk, an S3 bucket). It knows
    nothing of metadata: what exists is what the catalogue's rows say, and anything
    stored here without a row is an orphan of a crashed write."""

    #: Whether reads touch only local disk.
    local_io: bool

    def put_model(self, model_id: str, blob: bytes, points: tuple[str, str] | None) -> None: ...

    def read_model(self, model_id: str) -> bytes: ...

    def model_points(self, model_id: str, sha256: str, shape: list[int]) -> np.ndarray: ...

    def delete_model(self, model_id: str) -> None: ...

    def put_dataset(self, dataset_id: str, X: np.ndarray) -> str: ...

    def dataset_points(self, dataset_id: str, file: str, shape: list[int]) -> np.ndarray: ...

    def dataset_rows(self, dataset_id: str, file: str, shape: list[int]) -> StoredRows: ...

    def delete_dataset(self, dataset_id: str, file: str) -> None: ...

    def check_writable(self) -> None: ...

    def stored_models(self) -> Iterator[StoredItem]: ...

    def stored_datasets(self) -> Iterator[StoredItem]: ...

    def legacy_records(self) -> Iterator[LegacyRecord]: ...

    def forget_legacy(self, record: LegacyRecord) -> None: ...


class ModelStore(Protocol):
    """Persistent models: a signed artifact, and signed metadata that listing reads alone."""

    #: Whether ``exists`` reads only local disk, so that it may run on the event loop.
    local_io: bool

    def put(
        self,
        model_id: str,
        estimator: Any,
        metadata: dict[str, Any],
        *,
        dataset_id: str | None = None,
    ) -> dict[str, Any]:
        """Store the artifact, then publish the metadata; returns the metadata as
        stored (with the artifact's checksum and signature).

        With ``dataset_id`` the model keeps its own reference to that stored dataset's
        points (``load_points``), which then outlives a delete of the dataset;
        ``NotFound`` when the dataset is not stored (anymore).
        """
        ...

    def load_points(self, model_id: str) -> np.ndarray | None:
        """The training points a model was stored with (read-only, verified), or None."""
        ...

    def get_metadata(self, model_id: str) -> dict[str, Any]: ...

    def exists(self, model_id: str) -> bool:
        """Whether the model is stored now: cheap, asked before serving a cached copy."""
        ...

    def load(self, model_id: str) -> Any:
        """The fitted estimator, verified before a single byte is unpickled."""
        ...

    def update_metadata(self, model_id: str, change: MetadataChange) -> dict[str, Any]:
        """Apply ``change`` to the model's verified metadata and store the result signed,
        under the model's lock (two updates never lose one another); returns the
        metadata as stored. The artifact is never rewritten, and ``change`` may not
        alter ``id``, ``artifact`` or ``points``. ``NotFound`` when the model is gone,
        before or during the update: an update never brings a deleted model back."""
        ...

    def list(
        self, query: ModelQuery = ALL_MODELS, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the metadata of the models ``query`` asks for, newest first, and
        the cursor of the next page (or None on the last)."""
        ...

    def count(self, query: ModelQuery = ALL_MODELS) -> int: ...

    def total_bytes(self) -> int: ...

    def delete(self, model_id: str) -> None: ...

    def check_writable(self) -> None:
        """Raise ``StoreUnavailable`` unless a write round-trip succeeds."""
        ...

    def sweep_expired_models(self) -> int:
        """Delete the models past their ``expires_at``; how many."""
        ...


class DatasetStore(Protocol):
    """Datasets: content-addressed float64 arrays."""

    def put_dataset(
        self, X: np.ndarray, metadata: dict[str, Any], *, inline: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """Store ``X`` (float64, 2-D) under its ``array_sha256`` unless it is stored
        already; returns the stored metadata and whether this call created it.
        ``inline``: a fit stores the points of its body, and the dataset goes once no
        model or unfinished job refers to it; an upload (not ``inline``) of an array
        stored inline keeps it for good."""
        ...

    def get_dataset_metadata(self, dataset_id: str) -> dict[str, Any]: ...

    def release_datasets(
        self, dataset_ids: Iterable[str | None] = (), *, older_than: float | None = None
    ) -> int:
        """Delete the ``inline`` datasets among ``dataset_ids`` (or, with ``older_than``
        seconds, every one that old) that no model or unfinished job refers to."""
        ...

    def load_dataset(self, dataset_id: str) -> np.ndarray:
        """A read-only memory map of the points, verified against the id."""
        ...

    def dataset_rows(self, dataset_id: str) -> StoredRows:
        """Where the dataset's rows can be read by byte range, for readers in other
        processes or machines (Dask workers fitting it in chunks)."""
        ...

    def list_datasets(
        self, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of dataset metadata, newest first, and the next page's cursor."""
        ...

    def count_datasets(self) -> int: ...

    def delete_dataset(self, dataset_id: str) -> None: ...

    def sweep_expired_datasets(self) -> int:
        """Delete the datasets past their ``expires_at``; how many."""
        ...


class JobStore(Protocol):
    """Job resources of long work (``service.domain.jobs.manager``)."""

    def add_job(self, job: dict[str, Any]) -> None:
        """Store a new job's record."""
        ...

    def put_job(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """Replace the job's record whole, keeping a ``cancel_requested`` written
        meanwhile by another process; the record as written, or None when it was
        deleted meanwhile (the record is not written again)."""
        ...

    def delete_job(self, job_id: str) -> None: ...

    def sweep_expired_jobs(self) -> int:
        """Remove the records of finished jobs past their ``expires_at``; how many."""
        ...

    def claim_key(
        self,
        scope: str,
        key: str,
        *,
        request_sha256: str,
        resource: str,
        resource_id: str,
        ttl_seconds: float,
    ) -> dict[str, Any]:
        """Record an idempotency key for ``resource_id`` unless a live row holds it
        (one row per scope and key, however many replicas race): the row that holds
        it, this one or the first request's."""
        ...

    def get_job(self, job_id: str) -> dict[str, Any]: ...

    def list_jobs(
        self, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of jobs, newest first, and the cursor of the next page (or None)."""
        ...

    def count_jobs(self) -> int: ...

    def settle_jobs(
        self, statuses: tuple[str, ...], settle: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> int:
        """Offer each job in ``statuses`` to ``settle`` (which answers its new version,
        or None to leave it), each job to one process only; how many changed."""
        ...


class Store(ModelStore, DatasetStore, JobStore, Protocol):
    """Everything the service keeps: what ``open_store`` answers."""
