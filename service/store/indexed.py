"""The store the service uses: artifacts in an object store, metadata in a database.

Why this split: every listing, filter, count and sweep used to read metadata files
one by one (a second per few thousand models, one GET each on S3). Rows answer those
in SQL, with indexes, whatever the number of models; the object store keeps what is
large and written once.

What keeps it safe:

- **Trust.** A row holds the signed document that ``meta.json`` used to be (HMAC of
  its canonical JSON, with the artifact's sha256 bound to the model id). A document
  is verified before it is used and an artifact before a byte is unpickled, so write
  access to the database alone cannot make an unsigned artifact load.
- **Order of writes.** A put writes the artifact first, then commits the row; a
  delete removes the row first, then the artifact. A crash between the two leaves an
  artifact without a row, never a row without its artifact; ``sweep_orphans``
  removes such artifacts once they are older than a grace period (a put in flight in
  another process is never that old).
- **Concurrency.** An update is a read-modify-write under the row's lock
  (``SELECT ... FOR UPDATE`` on PostgreSQL, SQLite's one writer), so two updates
  never lose one another, and an update after a delete finds no row.
- **Stores from before the database.** ``import_legacy`` turns their ``meta.json``
  and job files into rows once, at start, verifying each signature as a read would.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from cachetools import TTLCache

from service.errors import ArtifactIntegrityError, NotFound, StoreFull, StoreUnavailable
from service.ids import check_dataset_id, check_id, check_job_id
from service.store.base import (
    ALL_MODELS,
    Artifacts,
    LegacyRecord,
    MetadataChange,
    ModelQuery,
    array_sha256,
)
from service.store.db.catalogue import EXPIRED_CHUNK, CatalogueDB, parse_time
from service.store.signing import DATA, Signer, StoredRows, canonical_json

log = logging.getLogger("service.store")

#: Rounds an upload makes while deletes of the same array keep removing its row.
_DATASET_ROUNDS = 8
#: ``store_state`` row set once the files of a store from before the database are rows.
LEGACY_IMPORTED = "legacy_import"


def dataset_sort_key(created_ns: int, dataset_id: str) -> str:
    """Creation time (ms, 12 hex digits) then id: the datasets' order and cursor."""
    return f"{created_ns // 1_000_000:012x}{dataset_id}"


class IndexedStore:
    """Models, datasets and jobs: bytes in ``artifacts``, metadata in ``db``."""

    def __init__(
        self,
        artifacts: Artifacts,
        db: CatalogueDB,
        signer: Signer,
        *,
        local_dir: Path | None = None,
        min_free_bytes: int = 0,
        max_bytes: int | None = None,
    ) -> None:
        self.artifacts = artifacts
        self.db = db
        self._signer = signer
        #: The local folder whose disk the store writes (artifacts or SQLite), if any.
        self.local_dir = local_dir
        self.min_free_bytes = min_free_bytes
        #: The quota (``GMM_STORE_MAX_BYTES``) of artifacts and datasets together.
        self.max_bytes = max_bytes
        # The bytes in use, summed in SQL at most once a second, plus what this store
        # wrote since: a write checks the quota without a full-table sum each time (a
        # replica may overshoot it by what the others wrote within that second). The
        # sum expires a second after it was read, however many writes came since, and
        # at once when this store deletes something (``_freed``): another replica's
        # deletes count within a second.
        self._used: TTLCache[str, int] = TTLCache(maxsize=1, ttl=1.0)
        self._written_since = 0
        self._used_lock = threading.Lock()
        #: ``exists`` is one indexed read; on the event loop only when it is local.
        self.local_io = artifacts.local_io and db.dialect == "sqlite"

    def close(self) -> None:
        self.db.close()

    # -- models: writes -------------------------------------------------------------
    def put(
        self,
        model_id: str,
        estimator: Any,
        metadata: dict[str, Any],
        *,
        dataset_id: str | None = None,
    ) -> dict[str, Any]:
        check_id(model_id)
        buf = io.BytesIO()
        joblib.dump(estimator, buf)
        blob = buf.getvalue()
        meta = dict(metadata)
        meta["id"] = model_id
        meta["artifact"] = self._signer.artifact(model_id, blob)
        points: tuple[str, str] | None = None
        if dataset_id is not None:
            dataset = self.get_dataset_metadata(dataset_id)  # NotFound when it is gone
            points = (dataset_id, str(dataset["file"]))
            meta["points"] = {"file": DATA, "sha256": dataset_id, "shape": dataset["shape"]}
        meta = self._signer.seal(meta)
        self._check_quota(len(blob))
        self.artifacts.put_model(model_id, blob, points)  # first: a row never lacks it
        try:
            self.db.insert_model(model_id, canonical_json(meta), meta)
        except KeyError:
            raise StoreUnavailable(f"Model id {model_id} already exists.") from None
        except StoreUnavailable:
            self._discard(model_id)
            raise
        return meta

    def _check_quota(self, adding: int) -> None:
        if self.max_bytes is None:
            return
        with self._used_lock:
            summed = self._used.get("bytes")
            if summed is None:
                summed = self.db.total_artifact_bytes() + self.db.total_dataset_bytes()
                self._used["bytes"] = summed
                self._written_since = 0
            used = summed + self._written_since
            if used + adding > self.max_bytes:
                raise StoreFull(
                    f"The store holds {used} bytes; {adding} more would pass "
                    f"GMM_STORE_MAX_BYTES ({self.max_bytes}). Delete models or datasets "
                    "(reads and predictions go on)."
                )
            self._written_since += adding

    def _freed(self) -> None:
        """Something was deleted: the next write sums the bytes in use afresh."""
        with self._used_lock:
            self._used.clear()

    def _discard(self, model_id: str) -> None:
        """Best effort after a failed publish: the sweeper removes what this cannot."""
        try:
            self.artifacts.delete_model(model_id)
        except Exception:
            log.warning("could not remove the artifact of unpublished model %s", model_id)

    def delete(self, model_id: str) -> None:
        found, dataset_id = self.db.delete_model(check_id(model_id))  # first: gone for all
        if not found:
            raise NotFound(f"No model with id {model_id!r}.")
        self._freed()
        self._remove_model(model_id, dataset_id)

    def _remove_model(self, model_id: str, dataset_id: str | None) -> None:
        """After its row: the model's artifact, and the inline dataset it was fitted on
        if nothing else refers to it now. What cannot go now is left to the sweeper."""
        try:
            self.artifacts.delete_model(model_id)
            self.release_datasets([dataset_id])
        except StoreUnavailable:
            log.warning("model %s is deleted; its artifact is left to the sweeper", model_id)

    def release_datasets(
        self, dataset_ids: Iterable[str | None] = (), *, older_than: float | None = None
    ) -> int:
        """Delete the inline datasets (stored by fits from the points in their body) that
        nothing refers to any more: those among ``dataset_ids``, or with ``older_than``
        (seconds) every such one of that age (see ``CatalogueDB.release_datasets``)."""
        created_before = None
        if older_than is not None:
            created_before = dataset_sort_key(time.time_ns() - int(older_than * 1e9), "")
        rows = self.db.release_datasets(dataset_ids, created_before=created_before)
        if rows:
            self._freed()
        for row in rows:
            try:
                self.artifacts.delete_dataset(row.id, row.file)
            except (StoreUnavailable, ArtifactIntegrityError):
                log.warning("dataset %s is deleted; its file is left to the sweeper", row.id)
        return len(rows)

    def update_metadata(self, model_id: str, change: MetadataChange) -> dict[str, Any]:
        check_id(model_id)
        result: dict[str, dict[str, Any]] = {}

        def rewrite(document: bytes) -> tuple[bytes, dict[str, Any]] | None:
            meta = self._signer.verify_meta(document, "model", model_id)  # never re-sign damage
            new = change(json.loads(canonical_json(meta)))  # change works on a copy
            if new is None:
                result["meta"] = meta
                return None
            for key in ("id", "artifact", "points"):
                if new.get(key) != meta.get(key):
                    raise ValueError(f"a metadata update may not change {key!r}")
            sealed = self._signer.seal(new)
            result["meta"] = {k: v for k, v in sealed.items() if k != "signature"}
            return canonical_json(sealed), sealed

        if self.db.update_model(model_id, rewrite) is None:
            raise NotFound(f"No model with id {model_id!r}.")
        return result["meta"]

    # -- models: reads --------------------------------------------------------------
    def get_metadata(self, model_id: str) -> dict[str, Any]:
        document = self.db.model_document(check_id(model_id))
        if document is None:
            raise NotFound(f"No model with id {model_id!r}.")
        return self._signer.verify_meta(document, "model", model_id)

    def exists(self, model_id: str) -> bool:
        return self.db.model_exists(check_id(model_id))

    def load(self, model_id: str) -> Any:
        meta = self.get_metadata(model_id)
        blob = self.artifacts.read_model(model_id)
        self._signer.verify_artifact(model_id, blob, meta.get("artifact") or {})
        return joblib.load(io.BytesIO(blob))  # only ever verified bytes

    def load_points(self, model_id: str) -> np.ndarray | None:
        points = self.get_metadata(model_id).get("points")
        if not points:
            return None
        return self.artifacts.model_points(model_id, points["sha256"], points["shape"])

    def _verified(self, documents: list[bytes], kind: str) -> list[dict[str, Any]]:
        """The documents of a page that verify. One damaged row must not hide every
        other one: it is skipped loudly, and reading it by id answers the problem."""
        metas = []
        for document in documents:
            try:
                item_id = str(json.loads(document).get("id"))
                metas.append(self._signer.verify_meta(document, kind, item_id))
            except (ArtifactIntegrityError, ValueError, AttributeError) as exc:
                log.error("listing skipped a damaged %s: %s", kind, exc)
        return metas

    def list(
        self, query: ModelQuery = ALL_MODELS, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        documents, next_cursor = self.db.list_models(query, limit=limit, cursor=cursor)
        return self._verified(documents, "model"), next_cursor

    def count(self, query: ModelQuery = ALL_MODELS) -> int:
        return self.db.count_models(query)

    def total_bytes(self) -> int:
        return self.db.total_artifact_bytes()

    def check_writable(self) -> None:
        """Readiness: a write round trip to the database and the object store, and room
        on the local disk for a typical write (a store that answers every write 503 is
        not ready, however well it reads)."""
        if self.local_dir is not None and self.min_free_bytes:
            try:
                free = shutil.disk_usage(self.local_dir).free
            except OSError as exc:
                raise StoreUnavailable(f"The store's disk cannot be read: {exc.strerror}.") from exc
            if free < self.min_free_bytes:
                raise StoreUnavailable(
                    f"The store's disk has {free} bytes free, under GMM_STORE_MIN_FREE_BYTES "
                    f"({self.min_free_bytes}): writes would fail."
                )
        self.db.check()
        self.artifacts.check_writable()

    # -- datasets -------------------------------------------------------------------
    def put_dataset(
        self, X: np.ndarray, metadata: dict[str, Any], *, inline: bool = False
    ) -> tuple[dict[str, Any], bool]:
        X = np.ascontiguousarray(X, dtype=np.dtype("<f8"))
        dataset_id = array_sha256(X)
        # A delete of the same array may remove the row this upload would answer with,
        # between any two steps: then the upload goes round again (a few times at most,
        # as each round is a delete that just ran), and never answers 404 or 5xx.
        for _ in range(_DATASET_ROUNDS):
            document = self.db.dataset_document(dataset_id)
            if document is not None:
                if not inline:
                    self.db.adopt_dataset(dataset_id)
                return self._signer.verify_meta(document, "dataset", dataset_id), False
            self._check_quota(X.nbytes)
            file = self.artifacts.put_dataset(dataset_id, X)  # this upload's own file, first
            created_ns = time.time_ns()
            meta = dict(metadata)
            meta.update(
                id=dataset_id,
                shape=[int(n) for n in X.shape],
                dtype="float64",
                file=file,
                created_ns=created_ns,
            )
            sealed = self._signer.seal(meta)
            if self.db.insert_dataset(
                dataset_id,
                sort_key=dataset_sort_key(created_ns, dataset_id),
                shape=X.shape,
                file=file,
                document=canonical_json(sealed),
                expires_at=parse_time(meta.get("expires_at")),
                inline=inline,
            ):
                return {k: v for k, v in sealed.items() if k != "signature"}, True
            self.artifacts.delete_dataset(dataset_id, file)  # the same array won meanwhile
        raise StoreUnavailable(
            f"Dataset {dataset_id} is being deleted and stored in a loop; retry."
        )

    def get_dataset_metadata(self, dataset_id: str) -> dict[str, Any]:
        document = self.db.dataset_document(check_dataset_id(dataset_id))
        if document is None:
            raise NotFound(f"No dataset with id {dataset_id!r}.")
        return self._signer.verify_meta(document, "dataset", dataset_id)

    def load_dataset(self, dataset_id: str) -> np.ndarray:
        meta = self.get_dataset_metadata(dataset_id)
        return self.artifacts.dataset_points(dataset_id, str(meta["file"]), meta["shape"])

    def dataset_rows(self, dataset_id: str) -> StoredRows:
        meta = self.get_dataset_metadata(dataset_id)
        return self.artifacts.dataset_rows(dataset_id, str(meta["file"]), meta["shape"])

    def list_datasets(
        self, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        documents, next_cursor = self.db.list_datasets(limit=limit, cursor=cursor)
        return self._verified(documents, "dataset"), next_cursor

    def count_datasets(self) -> int:
        return self.db.count_datasets()

    def delete_dataset(self, dataset_id: str) -> None:
        """Models fitted on it keep their own reference to the points and keep working."""
        file = self.db.delete_dataset(check_dataset_id(dataset_id))
        if file is None:
            raise NotFound(f"No dataset with id {dataset_id!r}.")
        self._freed()
        try:
            self.artifacts.delete_dataset(dataset_id, file)
        except (StoreUnavailable, ArtifactIntegrityError):
            log.warning("dataset %s is deleted; its file is left to the sweeper", dataset_id)

    # -- jobs (plain JSON: nothing in a job is ever unpickled) ------------------------
    def add_job(self, job: dict[str, Any]) -> None:
        if not self.db.add_job({**job, "id": check_job_id(job["id"])}):
            raise StoreUnavailable(f"Job id {job['id']} already exists.")

    def put_job(self, job: dict[str, Any]) -> dict[str, Any] | None:
        written = self.db.put_job({**job, "id": check_job_id(job["id"])})
        if job.get("status") in ("succeeded", "failed", "cancelled"):
            self.release_datasets([(job.get("request") or {}).get("dataset_id")])
        return written

    def delete_job(self, job_id: str) -> None:
        if not self.db.delete_job(check_job_id(job_id)):
            raise NotFound(f"No job with id {job_id!r}.")

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
        return self.db.claim_key(
            scope,
            key,
            request_sha256=request_sha256,
            resource=resource,
            resource_id=resource_id,
            ttl_seconds=ttl_seconds,
        )

    def sweep_expired_keys(self) -> int:
        return self.db.forget_expired_keys()

    def sweep_expired_models(self) -> int:
        """Delete the models past their ``expires_at``, as ``delete`` does: rows first."""
        return self._sweep_expired("models", lambda row: self._remove_model(row.id, row.dataset_id))

    def sweep_expired_datasets(self) -> int:
        """Delete the datasets past their ``expires_at``, rows first; models fitted on
        them keep their own copy of the points."""
        return self._sweep_expired(
            "datasets", lambda row: self.artifacts.delete_dataset(row.id, row.file)
        )

    def sweep_expired_jobs(self) -> int:
        """Remove the records of jobs past their ``expires_at`` (they have no artifact)."""
        return self._sweep_expired("jobs", None)

    def _sweep_expired(self, kind: str, remove: Callable[[Any], None] | None) -> int:
        """Take expired rows a chunk at a time, then remove each one's artifact; one
        that cannot be removed now is left to the orphan sweeper."""
        removed = 0
        while True:
            rows = self.db.take_expired(kind, dt.datetime.now(dt.UTC))
            if rows:
                self._freed()
            for row in rows if remove is not None else ():
                try:
                    remove(row)
                except (StoreUnavailable, ArtifactIntegrityError):
                    log.warning("%s %s expired; its artifact is left to the sweeper", kind, row.id)
            removed += len(rows)
            if len(rows) < EXPIRED_CHUNK:
                return removed

    def _job(self, job_id: str, document: str) -> dict[str, Any]:
        try:
            job = json.loads(document)
        except ValueError:
            raise ArtifactIntegrityError(f"The record of job {job_id} is unreadable.") from None
        if not isinstance(job, dict) or job.get("id") != job_id:
            raise ArtifactIntegrityError(f"The record stored for job {job_id} is another's.")
        return job

    def get_job(self, job_id: str) -> dict[str, Any]:
        document = self.db.job_document(check_job_id(job_id))
        if document is None:
            raise NotFound(f"No job with id {job_id!r}.")
        return self._job(job_id, document)

    def list_jobs(
        self, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        documents, next_cursor = self.db.list_jobs(limit=limit, cursor=cursor)
        jobs = []
        for document in documents:
            try:
                job = json.loads(document)
                jobs.append(self._job(str(job.get("id")), document))
            except (ArtifactIntegrityError, ValueError, AttributeError) as exc:
                log.error("listing skipped a damaged job: %s", exc)
        return jobs, next_cursor

    def count_jobs(self) -> int:
        return self.db.count_jobs()

    def settle_jobs(
        self, statuses: tuple[str, ...], settle: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> int:
        def offer(document: str) -> dict[str, Any] | None:
            try:
                job = json.loads(document)
            except ValueError:
                return None
            return settle(job) if isinstance(job, dict) else None

        return self.db.settle_jobs(statuses, offer)

    # -- housekeeping -----------------------------------------------------------------
    def sweep_orphans(self, grace_seconds: float) -> int:
        """Remove artifacts without a row that are older than ``grace_seconds``: left
        by a put that crashed before its row, or a delete that crashed after it."""
        if self.db.state(LEGACY_IMPORTED) is None:
            return 0  # files of an older store are rows-to-be, not orphans
        removed = 0
        for kind, items, known in (
            ("models", self.artifacts.stored_models, self._model_rows),
            ("datasets", self.artifacts.stored_datasets, self._dataset_files),
        ):
            old = [item for item in items() if item.age_seconds > grace_seconds]
            have = known([item.id for item in old])
            for item in old:
                if item.id in have and (kind == "models" or have[item.id] == item.file):
                    continue
                try:
                    if kind == "models":
                        self.artifacts.delete_model(item.id)
                    else:
                        self.artifacts.delete_dataset(item.id, item.file)
                    removed += 1
                except (StoreUnavailable, ArtifactIntegrityError):
                    log.warning("could not remove orphan %s %s", kind, item.id)
        # Inline datasets let go of by a crash (a fit that died between storing its
        # points and its model, a job settled at start-up) have a row, but no referrer.
        return removed + self.release_datasets(older_than=grace_seconds)

    def _model_rows(self, ids: list[str]) -> dict[str, str]:
        return dict.fromkeys(self.db.known("models", ids), "")

    def _dataset_files(self, ids: list[str]) -> dict[str, str]:
        return self.db.dataset_files(ids)

    def import_legacy(self) -> int:
        """Once per store: rows for the ``meta.json`` and job files of a store written
        before the catalogue was a database. Idempotent (a row already there stays), so
        replicas starting together, or a start that crashed midway, do no harm. A file
        whose signature fails is left where it is and logged, never imported."""
        if self.db.state(LEGACY_IMPORTED) is not None:
            return 0
        imported = 0
        for record in self.artifacts.legacy_records():
            try:
                if self._import(record):
                    imported += 1
                self.artifacts.forget_legacy(record)
            except (ArtifactIntegrityError, NotFound, ValueError, KeyError, TypeError) as exc:
                log.error("did not import %s %s: %s", record.kind, record.id, exc)
        self.db.set_state(LEGACY_IMPORTED, str(time.time()))
        if imported:
            log.warning("imported %d record(s) of a store from before the database", imported)
        return imported

    def _import(self, record: LegacyRecord) -> bool:
        if record.kind == "job":
            job = self._job(check_job_id(record.id), record.raw.decode())
            return self.db.add_job(job)
        if record.kind == "dataset":
            dataset_id = check_dataset_id(record.id)
            meta = self._signer.verify_meta(record.raw, "dataset", dataset_id)
            created_ns = int(meta.get("created_ns", 0))
            return self.db.insert_dataset(
                dataset_id,
                sort_key=dataset_sort_key(created_ns, dataset_id),
                shape=meta["shape"],
                file=str(meta.get("file", DATA)),
                document=record.raw,
            )
        model_id = check_id(record.id)
        meta = self._signer.verify_meta(record.raw, "model", model_id)
        try:
            self.db.insert_model(model_id, record.raw, meta)
        except KeyError:
            return False
        return True
