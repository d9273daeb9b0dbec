"""Where models live: artifacts in an object store (local disk, or an S3 bucket shared
by replicas) and metadata in a database (SQLite in the store directory, or a shared
PostgreSQL); ``open_store`` builds one from plain values."""

from __future__ import annotations

import logging
from pathlib import Path

from service.errors import StoreUnavailable
from service.store.base import Artifacts, Store
from service.store.db.catalogue import CatalogueDB
from service.store.db.engine import sqlite_url
from service.store.indexed import IndexedStore
from service.store.local import LocalArtifacts, load_or_create_key
from service.store.signing import Signer


def open_store(
    *,
    store_dir: Path,
    store_url: str | None = None,
    database_url: str | None = None,
    secret_key: str | None = None,
    s3_endpoint_url: str | None = None,
    s3_timeout_seconds: float = 10.0,
    database_pool_size: int = 5,
    min_free_bytes: int = 0,
    max_bytes: int | None = None,
) -> IndexedStore:
    """The store: artifacts under ``store_dir`` unless ``store_url``
    (``s3://bucket/prefix``) names a bucket, and metadata in ``database_url`` or else
    ``catalogue.db`` (SQLite) under ``store_dir``. boto3 is imported only for a
    bucket: it is an optional extra (``s3``), as psycopg is (``postgres``).

    A store written before the metadata moved into the database has its records
    imported here, once."""
    artifacts: Artifacts
    if store_url is None:
        artifacts = LocalArtifacts(store_dir)
        key = load_or_create_key(Path(store_dir), secret_key)
    else:
        from service.store.s3 import S3Artifacts, parse_s3_url

        if not secret_key:
            raise ValueError(
                "The S3 store needs a signing key shared by every replica: set GMM_SECRET_KEY."
            )
        bucket, prefix = parse_s3_url(store_url)
        artifacts = S3Artifacts(
            bucket, prefix, endpoint_url=s3_endpoint_url, timeout_seconds=s3_timeout_seconds
        )
        key = secret_key.encode()
        Path(store_dir).mkdir(parents=True, exist_ok=True)
    db = CatalogueDB(database_url or sqlite_url(store_dir), pool_size=database_pool_size)
    on_local_disk = store_url is None or database_url is None
    store = IndexedStore(
        artifacts,
        db,
        Signer(key),
        local_dir=Path(store_dir) if on_local_disk else None,
        min_free_bytes=min_free_bytes,
        max_bytes=max_bytes,
    )
    try:
        store.import_legacy()
    except StoreUnavailable:  # a bucket not reachable yet is /readyz's to report
        logging.getLogger("service.store").exception(
            "could not import the records of an older store; the next start tries again"
        )
    return store


__all__ = ["IndexedStore", "Store", "open_store"]
