"""The shared object store: artifacts and datasets' points in an S3-compatible bucket.

Layout under ``s3://<bucket>/<prefix>/``::

    models/<id>/model.joblib           # the pickled estimator
    models/<id>/data.npy               # the model's own copy of its training points
    datasets/<sha256>/data-<token>.npy # one file per upload
    probe/<token>                      # check_writable's round trip

A PUT makes one object appear whole or not at all, and what exists is what the
catalogue's rows say (``service.store.indexed``): an artifact is uploaded before its
row is committed, and deleted after its row is. Objects without a row are orphans of
a crashed write, removed by the sweeper once older than its grace period. Points are
cached on local disk by content hash, verified before they get that name.

Stores written before the catalogue was a database also hold ``models/<id>/meta.json``,
``datasets/<sha256>/meta.json`` and ``jobs/<id>.json``: ``legacy_records`` hands them
to the one-time import.

The signing key must be configured: a key generated into the bucket would let anyone
who can write the bucket sign, and every replica must share it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import numpy as np
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.errors import ArtifactIntegrityError, NotFound, StoreUnavailable
from service.ids import check_dataset_id, check_id
from service.store.base import LegacyRecord, StoredItem, array_sha256
from service.store.os_errors import os_error_reason
from service.store.signing import (
    ARTIFACT,
    DATA,
    HEADER_BYTES,
    META,
    StoredRows,
    npy_data_offset,
    open_npy,
)

log = logging.getLogger("service.store")

_MISSING = {"NoSuchKey", "404", "NotFound"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unavailable(what: str, exc: BaseException) -> StoreUnavailable:
    """A 503 that says what failed and the error's code or kind, never its text: boto's
    messages quote the endpoint URL, the bucket and object keys, which are the
    operator's to read (in the log), not a client's."""
    reason = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    log.warning("%s: %s", what, exc)
    return StoreUnavailable(f"{what}: {reason or type(exc).__name__}.")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    if not url.startswith("s3://"):
        raise ValueError(f"expected an s3://bucket/prefix URL, got {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"the store URL {url!r} names no bucket")
    return bucket, prefix.strip("/")


class S3Artifacts:
    """Artifacts and datasets' points in one bucket (boto3)."""

    #: Reads are requests over the network: never on the event loop.
    local_io = False

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        timeout_seconds: float = 10.0,
        points_cache_dir: Path | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        # endpoint_url None: boto3 reads AWS_ENDPOINT_URL itself, then AWS's endpoint.
        # The timeouts bound each attempt: boto's own (60 s) let an endpoint that never
        # answers hold a request for three minutes (GMM_S3_TIMEOUT_SECONDS).
        self._s3 = client or boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                max_pool_connections=64,
                retries={"mode": "standard"},
                connect_timeout=timeout_seconds,
                read_timeout=timeout_seconds,
            ),
        )
        if points_cache_dir is None:
            points_cache_dir = Path(tempfile.mkdtemp(prefix="gmm-s3-points-"))
            weakref.finalize(self, shutil.rmtree, points_cache_dir, True)
        self.points_cache_dir = Path(points_cache_dir)
        self.points_cache_dir.mkdir(parents=True, exist_ok=True)

    # -- keys and raw object access ------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts)) if self.prefix else "/".join(parts)

    def _model_key(self, model_id: str, name: str) -> str:
        return self._key("models", check_id(model_id), name)

    def _dataset_key(self, dataset_id: str, name: str) -> str:
        if not name or "/" in name or name.startswith("."):
            raise ArtifactIntegrityError(f"The data file name {name!r} of a dataset is not valid.")
        return self._key("datasets", check_dataset_id(dataset_id), name)

    @contextlib.contextmanager
    def _unavailable(self, doing: str) -> Iterator[None]:
        """Errors of the bucket or the network become ``StoreUnavailable`` (503)."""
        try:
            yield
        except ClientError as exc:
            raise _unavailable(f"Could not {doing}", exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(f"Could not {doing}", exc) from exc

    def _get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        with self._unavailable("read the store"):
            try:
                got = self._s3.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    return None
                raise
            data: bytes = got["Body"].read()
            return data

    def _put(self, key: str, body: bytes) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=body)

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

    def check_writable(self) -> None:
        key = self._key("probe", secrets.token_hex(8))
        try:
            self._put(key, b"ok")
            self._s3.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("The model store is not writable", exc) from exc

    # -- models --------------------------------------------------------------------------
    def put_model(self, model_id: str, blob: bytes, points: tuple[str, str] | None) -> None:
        parts = [self._model_key(model_id, ARTIFACT)]
        try:
            if points is not None:
                dataset_id, file = points
                parts.append(self._model_key(model_id, DATA))
                try:
                    # Server-side: the model's own copy outlives a delete of the dataset.
                    self._s3.copy_object(
                        Bucket=self.bucket,
                        Key=parts[-1],
                        CopySource={
                            "Bucket": self.bucket,
                            "Key": self._dataset_key(dataset_id, file),
                        },
                    )
                except ClientError as exc:
                    if _code(exc) in _MISSING:
                        raise NotFound(f"No dataset with id {dataset_id!r}.") from None
                    raise
            self._put(parts[0], blob)
        except (ClientError, BotoCoreError) as exc:
            self._discard(parts)
            raise _unavailable("Could not write the model", exc) from exc
        except NotFound:
            self._discard(parts)
            raise

    def _discard(self, keys: list[str]) -> None:
        """Best effort: what a failed put uploaded has no row anyway, and the sweeper
        removes what this cannot."""
        for key in keys:
            with contextlib.suppress(ClientError, BotoCoreError):
                self._s3.delete_object(Bucket=self.bucket, Key=key)

    def read_model(self, model_id: str) -> bytes:
        blob = self._get(self._model_key(model_id, ARTIFACT))
        if blob is None:
            raise NotFound(f"The artifact of model {model_id} is missing.")
        return blob

    def model_points(self, model_id: str, sha256: str, shape: list[int]) -> np.ndarray:
        return self._local_points(
            self._model_key(model_id, DATA),
            sha256,
            shape,
            f"the training points of model {model_id}",
        )

    def delete_model(self, model_id: str) -> None:
        self._delete_keys(
            self._model_key(model_id, ARTIFACT),
            self._model_key(model_id, DATA),
            self._model_key(model_id, META),
        )

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
            except OSError as exc:  # the local disk: full, say, or not writable
                raise StoreUnavailable(
                    f"Could not copy {what} to local disk: {os_error_reason(exc)}."
                ) from exc
            finally:
                part.unlink(missing_ok=True)
        return open_npy(path, shape, what)

    # -- datasets ------------------------------------------------------------------------
    def put_dataset(self, dataset_id: str, X: np.ndarray) -> str:
        name = f"data-{secrets.token_hex(8)}.npy"
        buf = io.BytesIO()
        np.lib.format.write_array(buf, X, version=(1, 0), allow_pickle=False)
        with self._unavailable("write the dataset"):
            self._put(self._dataset_key(dataset_id, name), buf.getvalue())
        return name

    def dataset_points(self, dataset_id: str, file: str, shape: list[int]) -> np.ndarray:
        return self._local_points(
            self._dataset_key(dataset_id, file), dataset_id, shape, f"dataset {dataset_id}"
        )

    def dataset_rows(self, dataset_id: str, file: str, shape: list[int]) -> S3Rows:
        n_samples, n_features = shape
        rows = S3Rows(
            self.bucket,
            self._dataset_key(dataset_id, file),
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
            raise _unavailable("Could not read the dataset", exc) from exc
        rows.offset = npy_data_offset(head, shape, f"dataset {dataset_id}")
        return rows

    def delete_dataset(self, dataset_id: str, file: str) -> None:
        self._delete_keys(self._dataset_key(dataset_id, file))

    # -- what the sweeper and the import read -----------------------------------------
    def _stored(self, kind: str) -> Iterator[tuple[str, str, float]]:
        now = datetime.now(UTC)
        for obj in self._objects(kind):
            folder, _, name = obj["Name"].partition("/")
            yield folder, name, (now - obj["LastModified"]).total_seconds()

    def stored_models(self) -> Iterator[StoredItem]:
        ages: dict[str, float] = {}
        for folder, name, age in self._stored("models"):
            if name != META:  # a legacy meta.json alone is the import's, not an artifact
                ages[folder] = min(age, ages.get(folder, age))
        for folder, age in ages.items():
            with contextlib.suppress(NotFound):
                yield StoredItem(check_id(folder), "", age)

    def stored_datasets(self) -> Iterator[StoredItem]:
        for folder, name, age in self._stored("datasets"):
            if name.endswith(".npy") and "/" not in name:
                with contextlib.suppress(NotFound):
                    yield StoredItem(check_dataset_id(folder), name, age)

    def legacy_records(self) -> Iterator[LegacyRecord]:
        for kind, folder in (("model", "models"), ("dataset", "datasets")):
            for obj in self._objects(folder):
                item_id, _, name = obj["Name"].partition("/")
                if name == META:
                    raw = self._get(obj["Key"])
                    if raw is not None:
                        yield LegacyRecord(kind, item_id, raw, obj["Key"])
        for obj in self._objects("jobs"):
            if obj["Name"].endswith(".json") and "/" not in obj["Name"]:
                raw = self._get(obj["Key"])
                if raw is not None:
                    yield LegacyRecord("job", obj["Name"][: -len(".json")], raw, obj["Key"])

    def forget_legacy(self, record: LegacyRecord) -> None:
        with contextlib.suppress(StoreUnavailable):
            self._delete_keys(record.location)


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
