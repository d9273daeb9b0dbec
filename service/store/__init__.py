"""Where models live: an abstract store, its embedded local implementation, and a
shared S3 one for several replicas; ``open_store`` picks one from plain values."""

from __future__ import annotations

from pathlib import Path

from service.store.base import ModelStore
from service.store.local import LocalModelStore


def open_store(
    *,
    store_dir: Path,
    store_url: str | None = None,
    secret_key: str | None = None,
    cache_size: int = 64,
    s3_endpoint_url: str | None = None,
) -> ModelStore:
    """The local store under ``store_dir`` unless ``store_url`` (``s3://bucket/prefix``)
    names a bucket. boto3 is imported only then: it is an optional extra (``s3``)."""
    if store_url is None:
        return LocalModelStore(store_dir, secret_key=secret_key, cache_size=cache_size)
    from service.store.s3 import S3ModelStore, parse_s3_url

    bucket, prefix = parse_s3_url(store_url)
    return S3ModelStore(
        bucket,
        prefix,
        secret_key=secret_key,
        endpoint_url=s3_endpoint_url,
        cache_size=cache_size,
    )
