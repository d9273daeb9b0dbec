"""The shared store: models, datasets and jobs in an S3-compatible bucket (boto3).

Layout under ``s3://<bucket>/<prefix>/``::

    models/<id>/model.joblib        # the pickled estimator
    models/<id>/data.npy            # the model's own copy of its training points
    models/<id>/meta.json           # signed metadata: written LAST, deleted FIRST
    datasets/<sha256>/data-<token>.npy
    datasets/<sha256>/meta.json     # signed; names its data file
    jobs/<id>.json                  # job resources, rewritten whole
    probe/<token>                   # check_writable's round trip

Why it is safe with many service processes on one bucket:

- **Publishing.** A PUT makes one object appear whole or not at all, so a model's
  artifact (and points) are uploaded under their final keys first and the signed
  ``meta.json`` last, with ``IfNoneMatch="*"``. Every read starts from a verified
  ``meta.json``: a crash mid-put leaves objects that no reader ever sees (``cleanup``
  removes them once they are old), never half a model.
- **Deleting.** ``meta.json`` goes first, so the model disappears for every process
  at once; the rest follows.
- **Updating metadata** (rename, tags) is read-verify-modify-write with a
  conditional PUT (``IfMatch`` on the ETag read): a concurrent update makes it fail
  with 412 and it is retried on the new version, so no update is lost; after a
  delete the PUT finds no object and fails with 404, so a model is never brought back.
- **Caches.** Nothing is cached that a delete could make stale without a check:
  ``exists`` asks the bucket (HEAD), loaded estimators are served only after it, and
  points are cached on local disk by content hash (the dataset's signed metadata is
  still read from the bucket on every use).

The signing key must be configured (``secret_key``): a key generated into the bucket
would let anyone who can write the bucket sign, and every replica must share it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import joblib
import numpy as np
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.caching import LockedLRU
from service.errors import ArtifactIntegrityError, NotFound, StoreUnavailable
from service.ids import check_dataset_id, check_id, check_job_id
from service.store.base import MetadataChange, ModelListing, array_sha256, page_datasets, page_jobs
from service.store.signing import (
    ARTIFACT,
    DATA,
    HEADER_BYTES,
    META,
    Signer,
    StoredRows,
    canonical_json,
    npy_data_offset,
    open_npy,
)

#: Conditional metadata writes retried this often before the store gives up (503).
_UPDATE_ATTEMPTS = 64
#: Objects of a put that never published (a crashed writer) are removed by ``cleanup``
#: once they are this old: a put in flight in another process is never younger.
ORPHAN_GRACE_SECONDS = 3600.0

_MISSING = {"NoSuchKey", "404", "NotFound"}
_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    if not url.startswith("s3://"):
        raise ValueError(f"expected an s3://bucket/prefix URL, got {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"the store URL {url!r} names no bucket")
    return bucket, prefix.strip("/")


class S3ModelStore(ModelListing):
    """Models, datasets and jobs in one bucket, signed, published by their metadata."""

    #: ``exists`` is a HEAD request over the network: never asked on the event loop.
    local_io = False

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        secret_key: str | None,
        endpoint_url: str | None = None,
        cache_size: int = 64,
        points_cache_dir: Path | None = None,
        client: Any = None,
    ) -> None:
        if not secret_key:
            raise ValueError(
                "The S3 store needs a signing key shared by every replica: set GMM_SECRET_KEY."
            )
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        # endpoint_url None: boto3 reads AWS_ENDPOINT_URL itself, then AWS's endpoint.
        self._s3 = client or boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(max_pool_connections=64, retries={"mode": "standard"}),
        )
        self._signer = Signer(secret_key.encode())
        self._cache: LockedLRU[str, Any] = LockedLRU(cache_size)
        if points_cache_dir is None:
            points_cache_dir = Path(tempfile.mkdtemp(prefix="gmm-s3-points-"))
            weakref.finalize(self, shutil.rmtree, points_cache_dir, True)
        self.points_cache_dir = Path(points_cache_dir)
        self.points_cache_dir.mkdir(parents=True, exist_ok=True)

    @property
    def cache_hits(self) -> int:
        return self._cache.hits

    @property
    def cache_misses(self) -> int:
        return self._cache.misses

    # -- keys and raw object access ------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts)) if self.prefix else "/".join(parts)

    def _model_key(self, model_id: str, name: str) -> str:
        return self._key("models", check_id(model_id), name)

    def _dataset_key(self, dataset_id: str, name: str) -> str:
        return self._key("datasets", check_dataset_id(dataset_id), name)

    @contextlib.contextmanager
    def _unavailable(self, doing: str) -> Iterator[None]:
        """Errors of the bucket or the network become ``StoreUnavailable`` (503)."""
        try:
            yield
        except ClientError as exc:
            raise StoreUnavailable(f"Could not {doing}: {_code(exc) or exc}.") from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"Could not {doing}: {exc}.") from exc

    def _get(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None when there is no such object."""
        with self._unavailable("read the store"):
            try:
                got = self._s3.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    return None
                raise
            return got["Body"].read(), str(got["ETag"])

    def _head(self, key: str) -> bool:
        with self._unavailable("read the store"):
            try:
                self._s3.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    return False
                raise
        return True

    def _put(self, key: str, body: bytes, **conditions: str) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, **conditions)

    def _delete_keys(self, *keys: str) -> None:
        for key in keys:
            with self._unavailable("delete from the store"):
                self._s3.delete_object(Bucket=self.bucket, Key=key)

    def _objects(self, *parts: str) -> Iterator[dict[str, Any]]:
        """Every object under a folder of the store (ListObjectsV2, all pages)."""
        prefix = self._key(*parts) + "/"
        with self._unavailable("list the store"):
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    yield {**obj, "Name": obj["Key"][len(prefix) :]}

    def _read_signed(self, key: str, kind: str, item_id: str) -> tuple[dict[str, Any], str]:
        got = self._get(key)
        if got is None:
            raise NotFound(f"No {kind} with id {item_id!r}.")
        raw, etag = got
        return self._signer.verify_meta(raw, kind, item_id), etag

    # -- housekeeping --------------------------------------------------------------------
    def cleanup(self, *, older_than: float = ORPHAN_GRACE_SECONDS) -> int:
        """Remove objects of puts that never published (their writer died), once they
        are ``older_than`` seconds old; younger ones may be a put in flight elsewhere."""
        now = datetime.now(UTC)
        removed = 0
        for kind in ("models", "datasets"):
            folders: dict[str, list[dict[str, Any]]] = {}
            for obj in self._objects(kind):
                folder, _, _ = obj["Name"].partition("/")
                folders.setdefault(folder, []).append(obj)
            for objs in folders.values():
                if any(o["Name"].endswith("/" + META) for o in objs):
                    continue
                if all((now - o["LastModified"]).total_seconds() > older_than for o in objs):
                    self._delete_keys(*(o["Key"] for o in objs))
                    removed += len(objs)
        return removed

    def check_writable(self) -> None:
        key = self._key("probe", secrets.token_hex(8))
        try:
            self._put(key, b"ok")
            self._s3.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise StoreUnavailable(f"The model store is not writable: {exc}.") from exc

    # -- models: writes ------------------------------------------------------------------
    def put(
        self,
        model_id: str,
        estimator: Any,
        metadata: dict[str, Any],
        *,
        dataset_id: str | None = None,
    ) -> dict[str, Any]:
        meta_key = self._model_key(model_id, META)
        buf = io.BytesIO()
        joblib.dump(estimator, buf)
        blob = buf.getvalue()
        meta = dict(metadata)
        meta["id"] = model_id
        meta["artifact"] = self._signer.artifact(model_id, blob)
        points_src: str | None = None
        if dataset_id is not None:
            dataset, _ = self._read_dataset_meta(dataset_id)  # NotFound when it is gone
            points_src = self._dataset_key(dataset_id, dataset["file"])
            meta["points"] = {"file": DATA, "sha256": dataset_id, "shape": dataset["shape"]}
        meta = self._signer.seal(meta)
        if self._head(meta_key):
            raise StoreUnavailable(f"Model id {model_id} already exists.")
        parts = [self._model_key(model_id, ARTIFACT)]
        try:
            if points_src is not None:
                parts.append(self._model_key(model_id, DATA))
                try:
                    # Server-side: the model's own copy outlives a delete of the dataset.
                    self._s3.copy_object(
                        Bucket=self.bucket,
                        Key=parts[-1],
                        CopySource={"Bucket": self.bucket, "Key": points_src},
                    )
                except ClientError as exc:
                    if _code(exc) in _MISSING:
                        raise NotFound(f"No dataset with id {dataset_id!r}.") from None
                    raise
            self._put(parts[0], blob)
            # Last, and only if no model has this id: from here on the model is visible.
            self._put(meta_key, canonical_json(meta), IfNoneMatch="*")
        except ClientError as exc:
            if _code(exc) in _CONFLICT:
                raise StoreUnavailable(f"Model id {model_id} already exists.") from exc
            self._discard(parts)
            raise StoreUnavailable(f"Could not write the model: {_code(exc) or exc}.") from exc
        except BotoCoreError as exc:
            self._discard(parts)
            raise StoreUnavailable(f"Could not write the model: {exc}.") from exc
        except NotFound:
            self._discard(parts)
            raise
        return meta

    def _discard(self, keys: list[str]) -> None:
        """Best effort: what a failed put uploaded is invisible anyway (no metadata),
        and ``cleanup`` removes what this cannot."""
        for key in keys:
            with contextlib.suppress(ClientError, BotoCoreError):
                self._s3.delete_object(Bucket=self.bucket, Key=key)

    def delete(self, model_id: str) -> None:
        meta_key = self._model_key(model_id, META)
        if not self._head(meta_key):
            raise NotFound(f"No model with id {model_id!r}.")
        # The metadata first: the model is gone for every process from here on.
        self._delete_keys(meta_key)
        self._cache.pop(model_id)
        self._delete_keys(self._model_key(model_id, ARTIFACT), self._model_key(model_id, DATA))

    def update_metadata(self, model_id: str, change: MetadataChange) -> dict[str, Any]:
        meta_key = self._model_key(model_id, META)
        for attempt in range(_UPDATE_ATTEMPTS):
            meta, etag = self._read_signed(meta_key, "model", model_id)  # verified
            new = change(json.loads(canonical_json(meta)))  # change works on a copy
            if new is None:
                return meta
            for key in ("id", "artifact", "points"):
                if new.get(key) != meta.get(key):
                    raise ValueError(f"a metadata update may not change {key!r}")
            new = self._signer.seal(new)
            try:
                # Only over the very version read: a concurrent update (412) is retried
                # on its result; a delete (404) is final.
                self._put(meta_key, canonical_json(new), IfMatch=etag)
                return new
            except ClientError as exc:
                code = _code(exc)
                if code in _MISSING:
                    raise NotFound(f"No model with id {model_id!r}.") from None
                if code not in _CONFLICT:
                    raise StoreUnavailable(
                        f"Could not write the model's metadata: {code or exc}."
                    ) from exc
            except BotoCoreError as exc:
                raise StoreUnavailable(f"Could not write the model's metadata: {exc}.") from exc
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # jitter: let one win
        raise StoreUnavailable(f"The metadata of model {model_id} is changing too often; retry.")

    # -- models: reads -------------------------------------------------------------------
    def get_metadata(self, model_id: str) -> dict[str, Any]:
        return self._read_signed(self._model_key(model_id, META), "model", model_id)[0]

    def exists(self, model_id: str) -> bool:
        """A HEAD of the metadata on every call: a delete by any process shows at once."""
        return self._head(self._model_key(model_id, META))

    def load(self, model_id: str) -> Any:
        cached = self._cache.get(model_id)
        if cached is not None:
            if self.exists(model_id):  # ids are never reused: present means unchanged
                return cached
            self._cache.pop(model_id)
        meta = self.get_metadata(model_id)
        got = self._get(self._model_key(model_id, ARTIFACT))
        if got is None:  # deleted between the two reads
            raise NotFound(f"No model with id {model_id!r}.")
        blob = got[0]
        self._signer.verify_artifact(model_id, blob, meta.get("artifact") or {})
        estimator = joblib.load(io.BytesIO(blob))  # only ever verified bytes
        self._cache.put(model_id, estimator)
        return estimator

    def _published(self) -> dict[str, int]:
        """``{id: artifact bytes}`` of every model whose metadata is there.

        One listing without a delimiter: the object names tell which folders are
        published (a half-written one has no ``meta.json``) and the artifacts' sizes,
        so neither ``count`` nor ``total_bytes`` reads an object."""
        published: set[str] = set()
        sizes: dict[str, int] = {}
        for obj in self._objects("models"):
            model_id, _, name = obj["Name"].partition("/")
            if name == META:
                published.add(model_id)
            elif name == ARTIFACT:
                sizes[model_id] = int(obj.get("Size", 0))
        ids = set()
        for model_id in published:
            with contextlib.suppress(NotFound):
                ids.add(check_id(model_id))
        return {model_id: sizes.get(model_id, 0) for model_id in ids}

    def _ids(self) -> list[str]:
        # Ids are time-ordered: newest first is reverse lexical (S3 lists ascending).
        return sorted(self._published(), reverse=True)

    def total_bytes(self) -> int:
        return sum(self._published().values())

    # -- points: downloaded once per process and content hash ----------------------------
    def _local_points(self, key: str, sha256: str, shape: list[int], what: str) -> np.ndarray:
        """A read-only memory map of stored points, from a local file named by their
        hash. A download is verified against ``sha256`` before it gets that name, so a
        file found under it was verified (in this process's private folder)."""
        path = self.points_cache_dir / f"{sha256}.npy"
        if not path.exists():
            part = self.points_cache_dir / f".{sha256}.{secrets.token_hex(6)}.part"
            try:
                with self._unavailable(f"read {what}"):
                    try:
                        got = self._s3.get_object(Bucket=self.bucket, Key=key)
                    except ClientError as exc:
                        if _code(exc) in _MISSING:
                            raise NotFound(f"No {what}.") from None
                        raise
                    with open(part, "wb") as fh:
                        shutil.copyfileobj(got["Body"], fh, 1 << 20)
                X = open_npy(part, shape, what)
                if array_sha256(X) != sha256:
                    raise ArtifactIntegrityError(
                        f"The points of {what} failed their integrity check and were not used."
                    )
                del X
                os.replace(part, path)
            finally:
                part.unlink(missing_ok=True)
        return open_npy(path, shape, what)

    def load_points(self, model_id: str) -> np.ndarray | None:
        points = self.get_metadata(model_id).get("points")
        if not points:
            return None
        return self._local_points(
            self._model_key(model_id, DATA),
            points["sha256"],
            points["shape"],
            f"the training points of model {model_id}",
        )

    # -- datasets ------------------------------------------------------------------------
    def _read_dataset_meta(self, dataset_id: str) -> tuple[dict[str, Any], str]:
        return self._read_signed(self._dataset_key(dataset_id, META), "dataset", dataset_id)

    def put_dataset(self, X: np.ndarray, metadata: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        X = np.ascontiguousarray(X, dtype=np.dtype("<f8"))
        dataset_id = array_sha256(X)
        with contextlib.suppress(NotFound):
            return self._read_dataset_meta(dataset_id)[0], False
        # A data file of its own per upload: a delete racing this upload removes only
        # the file named by the metadata it deleted, never this one.
        name = f"data-{secrets.token_hex(8)}.npy"
        meta = dict(metadata)
        meta.update(
            id=dataset_id,
            shape=[int(n) for n in X.shape],
            dtype="float64",
            file=name,
            created_ns=time.time_ns(),
        )
        meta = self._signer.seal(meta)
        buf = io.BytesIO()
        np.lib.format.write_array(buf, X, version=(1, 0), allow_pickle=False)
        data_key = self._dataset_key(dataset_id, name)
        try:
            self._put(data_key, buf.getvalue())
            self._put(self._dataset_key(dataset_id, META), canonical_json(meta), IfNoneMatch="*")
        except ClientError as exc:
            self._discard([data_key])
            if _code(exc) in _CONFLICT:  # the same array, uploaded at the same time, won
                return self._read_dataset_meta(dataset_id)[0], False
            raise StoreUnavailable(f"Could not write the dataset: {_code(exc) or exc}.") from exc
        except BotoCoreError as exc:
            self._discard([data_key])
            raise StoreUnavailable(f"Could not write the dataset: {exc}.") from exc
        return meta, True

    def get_dataset_metadata(self, dataset_id: str) -> dict[str, Any]:
        return self._read_dataset_meta(dataset_id)[0]

    def load_dataset(self, dataset_id: str) -> np.ndarray:
        meta = self._read_dataset_meta(dataset_id)[0]  # from the bucket: deletes show at once
        return self._local_points(
            self._dataset_key(dataset_id, str(meta.get("file", DATA))),
            dataset_id,
            meta["shape"],
            f"dataset {dataset_id}",
        )

    def dataset_rows(self, dataset_id: str) -> S3Rows:
        meta = self._read_dataset_meta(dataset_id)[0]
        key = self._dataset_key(dataset_id, str(meta.get("file", DATA)))
        n_samples, n_features = meta["shape"]
        rows = S3Rows(
            self.bucket,
            key,
            n_samples,
            n_features,
            0,
            endpoint_url=self._s3.meta.endpoint_url,
            region_name=self._s3.meta.region_name,
        )
        try:
            head = rows._read(0, HEADER_BYTES)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise NotFound(f"No dataset with id {dataset_id!r}.") from None
            raise StoreUnavailable(f"Could not read the dataset: {_code(exc) or exc}.") from exc
        rows.offset = npy_data_offset(head, meta["shape"], f"dataset {dataset_id}")
        return rows

    def _dataset_ids(self) -> list[str]:
        ids = []
        for obj in self._objects("datasets"):
            dataset_id, _, name = obj["Name"].partition("/")
            if name == META:
                with contextlib.suppress(NotFound):
                    ids.append(check_dataset_id(dataset_id))
        return ids

    def list_datasets(
        self, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first, as the local store: every (small) metadata object is read."""
        return page_datasets(
            self._dataset_ids(),
            lambda dataset_id: self._read_dataset_meta(dataset_id)[0],
            limit=limit,
            cursor=cursor,
        )

    def count_datasets(self) -> int:
        return len(self._dataset_ids())

    def delete_dataset(self, dataset_id: str) -> None:
        """Models fitted on it keep their own copy of the points and keep working."""
        meta_key = self._dataset_key(dataset_id, META)
        got = self._get(meta_key)
        if got is None:
            raise NotFound(f"No dataset with id {dataset_id!r}.")
        name = DATA
        with contextlib.suppress(ArtifactIntegrityError, KeyError):
            name = str(self._signer.verify_meta(got[0], "dataset", dataset_id)["file"])
        self._delete_keys(meta_key)  # gone for every process from here on
        if "/" not in name:
            self._delete_keys(self._dataset_key(dataset_id, name))

    # -- jobs: plain JSON, as in the local store (nothing in a job is unpickled) ----------
    def _job_key(self, job_id: str) -> str:
        return self._key("jobs", f"{check_job_id(job_id)}.json")

    def put_job(self, job: dict[str, Any]) -> None:
        key = self._job_key(job["id"])
        with self._unavailable("write the job"):
            self._put(key, json.dumps(job, allow_nan=False).encode())  # one atomic PUT

    def get_job(self, job_id: str) -> dict[str, Any]:
        got = self._get(self._job_key(job_id))
        if got is None:
            raise NotFound(f"No job with id {job_id!r}.")
        try:
            job = json.loads(got[0])
        except ValueError:
            raise ArtifactIntegrityError(f"The record of job {job_id} is unreadable.") from None
        if not isinstance(job, dict) or job.get("id") != job_id:
            raise ArtifactIntegrityError(f"The record stored for job {job_id} is another's.")
        return job

    def job_ids(self) -> list[str]:
        names = (o["Name"] for o in self._objects("jobs") if o["Name"].endswith(".json"))
        return sorted((n[: -len(".json")] for n in names if "/" not in n), reverse=True)

    def list_jobs(
        self, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return page_jobs(self.job_ids(), self.get_job, limit=limit, cursor=cursor)


#: boto3 clients of this process by (endpoint, region): a worker reading many chunks
#: opens its connection pool once.
_CLIENTS: dict[tuple[str | None, str | None], Any] = {}
_CLIENTS_LOCK = threading.Lock()


class S3Rows(StoredRows):
    """Rows of a dataset in the S3 store, read with ranged GETs. A Dask worker reads its
    chunk straight from the bucket with its own credentials (the usual AWS variables);
    the endpoint and region travel with the object."""

    def __init__(
        self,
        bucket: str,
        key: str,
        n_samples: int,
        n_features: int,
        offset: int,
        *,
        endpoint_url: str | None,
        region_name: str | None,
    ) -> None:
        super().__init__(n_samples, n_features, offset)
        self.bucket = bucket
        self.key = key
        self.endpoint_url = endpoint_url
        self.region_name = region_name

    def _client(self) -> Any:
        where = (self.endpoint_url, self.region_name)
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(where)
            if client is None:
                client = _CLIENTS[where] = boto3.session.Session().client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    region_name=self.region_name,
                    config=Config(retries={"mode": "standard"}),
                )
            return client

    def _read(self, offset: int, size: int) -> bytes:
        got = self._client().get_object(
            Bucket=self.bucket, Key=self.key, Range=f"bytes={offset}-{offset + size - 1}"
        )
        data: bytes = got["Body"].read()
        return data
