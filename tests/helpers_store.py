"""A local store as the service opens it, and raw access to its catalogue's rows, for
tests that damage metadata behind the service's back (as an attacker with write
access to the database would)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from service.store import IndexedStore, open_store

_TABLES = {"model": "models", "dataset": "datasets", "job": "jobs"}


def local_store(root: Path, secret_key: str | None = None) -> IndexedStore:
    """The store ``build_services`` opens for ``GMM_STORE_DIR=root``: artifacts under
    ``root``, metadata in ``root/catalogue.db``."""
    return open_store(store_dir=Path(root), secret_key=secret_key)


def _connect(store_dir: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(Path(store_dir) / "catalogue.db", timeout=30, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def read_row(store_dir: Path, kind: str, item_id: str) -> bytes:
    """The stored document of a model, dataset or job (``KeyError`` when no row)."""
    with _connect(store_dir) as conn:
        got = conn.execute(
            f"SELECT document FROM {_TABLES[kind]} WHERE id = ?", (item_id,)
        ).fetchone()
    if got is None:
        raise KeyError(item_id)
    return str(got[0]).encode()


def write_row(store_dir: Path, kind: str, item_id: str, document: bytes) -> None:
    with _connect(store_dir) as conn:
        conn.execute(
            f"UPDATE {_TABLES[kind]} SET document = ? WHERE id = ?",
            (document.decode(), item_id),
        )


def delete_row(store_dir: Path, kind: str, item_id: str) -> None:
    with _connect(store_dir) as conn:
        conn.execute(f"DELETE FROM {_TABLES[kind]} WHERE id = ?", (item_id,))


def insert_model_row(store_dir: Path, model_id: str, document: bytes) -> None:
    """A row for a model that the service never wrote (a forged or damaged document)."""
    with _connect(store_dir) as conn:
        conn.execute(
            "INSERT INTO models (id, algorithm, created_at, artifact_bytes, artifact_sha256,"
            " artifact_signature, document) VALUES (?, 'kmeans', '2026-01-01 00:00:00', 0,"
            " '', '', ?)",
            (model_id, document.decode()),
        )
