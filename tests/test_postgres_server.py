"""The ``postgres_url`` fixture gives each test a real, empty PostgreSQL database.

The catalogue's PostgreSQL tests rely on it: if the server or its databases were
wrong (shared between tests, not PostgreSQL at all), they would prove nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from tests.conftest import require

if TYPE_CHECKING:
    from tests.helpers_postgres import PostgresServer

require("psycopg", "pip install -e '.[dev]'")


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = sa.create_engine(postgres_url)
    try:
        yield engine
    finally:
        engine.dispose()


def test_a_database_is_real_postgresql_and_keeps_rows(engine: Engine) -> None:
    assert engine.dialect.name == "postgresql"
    assert engine.dialect.driver == "psycopg"
    with engine.begin() as conn:
        version = conn.execute(sa.text("SHOW server_version_num")).scalar_one()
        assert int(version) >= 130000
        conn.execute(sa.text("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)"))
        conn.execute(
            sa.text("INSERT INTO items (name) VALUES (:name)"), [{"name": "a"}, {"name": "b"}]
        )
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, name FROM items ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, "a"), (2, "b")]
        # Only loopback, as the superuser the URL names.
        assert conn.execute(sa.text("SELECT current_user")).scalar_one() == "postgres"
        assert conn.execute(sa.text("SHOW listen_addresses")).scalar_one() == "127.0.0.1"


def test_each_url_is_its_own_empty_database(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    other_url = postgres_server.create_database()
    assert other_url != postgres_url
    first, second = sa.create_engine(postgres_url), sa.create_engine(other_url)
    try:
        with first.begin() as conn:
            conn.execute(sa.text("CREATE TABLE only_here (x int)"))
        names = set()
        for engine in (first, second):
            with engine.connect() as conn:
                names.add(conn.execute(sa.text("SELECT current_database()")).scalar_one())
        assert len(names) == 2, names
        assert sa.inspect(first).has_table("only_here")
        assert not sa.inspect(second).has_table("only_here")
    finally:
        first.dispose()
        second.dispose()
        postgres_server.drop_database(str(make_url(other_url).database))
