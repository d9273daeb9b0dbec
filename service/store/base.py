"""The contract every model store keeps, whatever it stores models on."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from service.errors import ArtifactIntegrityError, NotFound

if TYPE_CHECKING:
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


#: A condition on a model's stored metadata (``list``, ``count``): the store applies it
#: without knowing what it asks, and without ever unpickling a model.
MetadataFilter = Callable[[dict[str, Any]], bool]
#: Rewrites a model's metadata (``update_metadata``): the new metadata, or None when
#: nothing changes (then nothing is written).
MetadataChange = Callable[[dict[str, Any]], dict[str, Any] | None]


_log = logging.getLogger("service.errors")


def readable_metadata(
    model_ids: Iterable[str], read: Callable[[str], dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """The verified metadata of each of ``model_ids`` that can still be read, in order.

    One deleted between the scan and the read is passed over. One damaged model must
    not hide every other one: it is skipped loudly, and reading it by id still
    answers the integrity problem."""
    for model_id in model_ids:
        try:
            yield read(model_id)
        except NotFound:
            continue
        except ArtifactIntegrityError as exc:
            _log.error("listing skipped a damaged model: %s", exc.detail)


def page_models(
    metadata: Iterable[dict[str, Any]],
    *,
    limit: int,
    where: MetadataFilter | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the models ``metadata`` yields (newest first, after the cursor) that
    ``where`` keeps. The next match is found before the page is called not the last,
    so that a filter never leaves an empty page at the end."""
    items: list[dict[str, Any]] = []
    for meta in metadata:
        if where is not None and not where(meta):
            continue
        if len(items) == limit:
            return items, items[-1]["id"]
        items.append(meta)
    return items, None


class ModelListing:
    """``list`` and ``count`` of models, the same in every store: each store says which
    models are published (``_ids``, newest first) and reads one's verified metadata
    (``get_metadata``); listing never reads an artifact."""

    def _ids(self) -> list[str]:
        raise NotImplementedError

    def get_metadata(self, model_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def _metadata(self, ids: list[str]) -> Iterator[dict[str, Any]]:
        return readable_metadata(ids, self.get_metadata)

    def list(
        self, *, limit: int, cursor: str | None, where: MetadataFilter | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        ids = self._ids()
        if cursor is not None:
            ids = [i for i in ids if i < cursor]
        return page_models(self._metadata(ids), limit=limit, where=where)

    def count(self, *, where: MetadataFilter | None = None) -> int:
        """Without ``where``, from the names alone; with it, every model's metadata is
        read (never an artifact), as the listing reads it."""
        if where is None:
            return len(self._ids())
        return sum(1 for meta in self._metadata(self._ids()) if where(meta))


def page_jobs(
    job_ids: Iterable[str],
    get_job: Callable[[str], dict[str, Any]],
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of jobs from ids sorted newest first, whichever store holds them: one
    deleted meanwhile is passed over, and a damaged one is logged and passed over
    rather than failing the whole listing."""
    items: list[dict[str, Any]] = []
    for job_id in job_ids:
        if cursor is not None and job_id >= cursor:
            continue
        if len(items) == limit:
            return items, items[-1]["id"]
        try:
            items.append(get_job(job_id))
        except NotFound:
            continue
        except ArtifactIntegrityError as exc:
            _log.error("listing skipped a damaged job: %s", exc.detail)
    return items, None


def page_datasets(
    dataset_ids: Iterable[str],
    read_metadata: Callable[[str], dict[str, Any]],
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of dataset metadata, newest first, whichever store holds them.

    Content-addressed ids do not sort by time, so every (small) metadata record is
    read and keyed by creation time (ms, 12 hex) then id: that key is the cursor."""
    keyed: list[tuple[str, dict[str, Any]]] = []
    for dataset_id in dataset_ids:
        try:
            meta = read_metadata(dataset_id)
        except NotFound:  # deleted between the scan and the read
            continue
        except ArtifactIntegrityError as exc:
            _log.error("listing skipped a damaged dataset: %s", exc.detail)
            continue
        ms = int(meta.get("created_ns", 0)) // 1_000_000
        keyed.append((f"{ms:012x}{dataset_id}", meta))
    keyed.sort(key=lambda item: item[0], reverse=True)
    if cursor is not None:
        keyed = [item for item in keyed if item[0] < cursor]
    page = keyed[:limit]
    next_cursor = page[-1][0] if len(keyed) > limit else None
    return [meta for _, meta in page], next_cursor


class ModelStore(Protocol):
    """Persistent models: a pickled estimator plus JSON metadata that listing reads alone."""

    def put(
        self,
        model_id: str,
        estimator: Any,
        metadata: dict[str, Any],
        *,
        dataset_id: str | None = None,
    ) -> dict[str, Any]:
        """Store atomically; returns the metadata as stored (with artifact checksums).

        With ``dataset_id`` the model keeps its own reference to that stored dataset's
        points (``load_points``), which then outlives a delete of the dataset;
        ``NotFound`` when the dataset is not stored (anymore).
        """
        ...

    def load_points(self, model_id: str) -> np.ndarray | None:
        """The training points a model was stored with (read-only, verified), or None."""
        ...

    def get_metadata(self, model_id: str) -> dict[str, Any]: ...

    #: Whether ``exists`` reads only local disk, so that it may run on the event loop.
    local_io: bool

    def exists(self, model_id: str) -> bool:
        """Whether the model is stored now: cheap, asked before serving a cached copy."""
        ...

    def load(self, model_id: str) -> Any:
        """The fitted estimator, verified before a single byte is unpickled."""
        ...

    def update_metadata(self, model_id: str, change: MetadataChange) -> dict[str, Any]:
        """Apply ``change`` to the model's verified metadata and store the result signed,
        atomically, under a per-model lock (two updates never lose one another);
        returns the metadata as stored. The artifact is never rewritten, and ``change``
        may not alter ``id``, ``artifact`` or ``points``. ``NotFound`` when the model
        is gone, before or during the update: an update never brings a deleted model
        back."""
        ...

    def list(
        self, *, limit: int, cursor: str | None, where: MetadataFilter | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of metadata, newest first, and the cursor of the next page (or None).

        With ``where``, only models whose metadata it accepts; the cursor then pages
        through those, and is None on their last page."""
        ...

    def count(self, *, where: MetadataFilter | None = None) -> int:
        """How many models are stored (that ``where`` accepts)."""
        ...

    def total_bytes(self) -> int: ...

    def delete(self, model_id: str) -> None: ...

    def check_writable(self) -> None:
        """Raise ``StoreUnavailable`` unless a write round-trip succeeds."""
        ...

    # -- datasets: content-addressed float64 arrays --------------------------------
    def put_dataset(self, X: np.ndarray, metadata: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store ``X`` (float64, 2-D) under its ``array_sha256`` unless it is stored
        already; returns the stored metadata and whether this call created it."""
        ...

    def get_dataset_metadata(self, dataset_id: str) -> dict[str, Any]: ...

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

    # -- jobs (the job resources of long work; ``service.domain.jobs.manager.JobStore``) -----
    def put_job(self, job: dict[str, Any]) -> None:
        """Write the job resource atomically (replacing the previous copy)."""
        ...

    def get_job(self, job_id: str) -> dict[str, Any]: ...

    def list_jobs(
        self, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of jobs, newest first, and the cursor of the next page (or None)."""
        ...

    def job_ids(self) -> list[str]: ...
