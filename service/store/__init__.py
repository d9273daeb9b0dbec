"""Where models live: an abstract store, its embedded local implementation, and a
shared S3 one for several replicas; ``open_store`` picks one from plain values."""

from __future__ import annotations

import logging
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
    store = S3ModelStore(
        bucket,
        prefix,
        secret_key=secret_key,
        endpoint_url=s3_endpoint_url,
        cache_size=cache_size,
    )
    # As the local store does when it opens: objects of puts whose writer died (an hour
    # old, so never a put another replica has in flight) go. A bucket that cannot be
    # listed yet is /readyz's to report, not a reason not to start.
    try:
        removed = store.cleanup()
    except Exception:
        logging.getLogger("service.store").exception("could not clean up %s", store_url)
    else:
        if removed:
            logging.getLogger("service.store").warning(
                "removed %d object(s) of unpublished puts from %s", removed, store_url
            )
    return store
