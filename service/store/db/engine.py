"""Connections to the catalogue's database: SQLite in the store directory by default,
PostgreSQL (psycopg 3) when replicas share one.

SQLite is opened in WAL mode, so readers never wait for the writer, with
``synchronous=NORMAL``: a process killed mid-commit loses nothing committed, and a
power cut may lose the last commits but never corrupts the file (their artifacts are
then orphans, which the sweeper removes). Write transactions start with ``BEGIN
IMMEDIATE``: SQLite has one writer, and a transaction that read first and then
writes would otherwise fail with "database is locked" instead of waiting its turn.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

#: How long a writer waits for SQLite's one write lock before the store answers 503.
SQLITE_BUSY_MS = 30_000
#: The execution option that makes a SQLite transaction take the write lock at BEGIN.
WRITE = {"gmm_write": True}


def sqlite_url(store_dir: Path) -> str:
    """The default database: ``catalogue.db`` beside the artifacts it describes."""
    return f"sqlite:///{Path(store_dir).resolve() / 'catalogue.db'}"


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine for ``url`` with this service's settings for its dialect."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,  # a replica outlives a database restart
            pool_recycle=1800,
        )
    raise ValueError(
        f"GMM_DATABASE_URL names a {parsed.get_backend_name()!r} database; "
        "sqlite:///... and postgresql+psycopg://... are supported."
    )


def _sqlite_engine(url: str) -> Engine:
    engine = sa.create_engine(url, pool_size=8, max_overflow=24, pool_timeout=30)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling off: BEGIN is ours (below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get("gmm_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


#: The newest revision in ``migrations/versions``: a database already at it is not
#: handed to Alembic at all (importing it and reading the scripts costs 0.15 s of every
#: start). ``tests/store/test_migrations.py`` checks that this is Alembic's head.
HEAD_REVISION = "0002"

_MIGRATED: set[str] = set()
_MIGRATE_LOCK = threading.Lock()


def migrate(engine: Engine) -> None:
    """Bring the schema to Alembic's head, once per database and process.

    Replicas starting together on a new database take turns: PostgreSQL through an
    advisory lock taken in ``migrations/env.py``, SQLite through its write lock."""
    key = engine.url.render_as_string(hide_password=True)
    with _MIGRATE_LOCK:
        if key in _MIGRATED:
            return
        if _revision(engine) == HEAD_REVISION:
            _MIGRATED.add(key)
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with engine.connect() as connection:
            config.attributes["connection"] = connection.execution_options(**WRITE)
            command.upgrade(config, "head")
        _MIGRATED.add(key)


def _revision(engine: Engine) -> str | None:
    """The schema's Alembic revision, or None for a database Alembic never touched."""
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except sa.exc.DBAPIError:  # no such table yet
        return None
    return None if version is None else str(version)
