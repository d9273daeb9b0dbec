"""Alembic's entry point: migrations run on the connection the service hands over
(``service.store.db.engine.migrate``), never from an ini file's URL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from service.store.db.schema import metadata

#: Any constant: replicas migrating one PostgreSQL database at once take turns on it.
_ADVISORY_LOCK = 0x676D6D_6462


def run() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        # SQLite's DDL is transactional (the engine sends BEGIN IMMEDIATE itself), but
        # Alembic assumes otherwise and would commit each revision on its own: a
        # process starting beside another then read the version between two of them
        # and ran the second again ("duplicate column"). One transaction, which takes
        # the write lock before the version is read, makes replicas take turns.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK}
            )
        context.run_migrations()


run()
