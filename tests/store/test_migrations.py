"""The catalogue's schema is Alembic's: migrations build exactly the tables the code
declares, on SQLite and on PostgreSQL, and replicas starting together on a new
database migrate it once between them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from service.store.db.catalogue import CatalogueDB
from service.store.db.schema import metadata

ROOT = Path(__file__).resolve().parents[2]

_OPEN = """
import sys, time
from service.store.db.catalogue import CatalogueDB
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
CatalogueDB(sys.argv[1]).check()
"""


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'catalogue.db'}"


def test_migrations_build_the_declared_schema(database_url: str) -> None:
    db = CatalogueDB(database_url)
    try:
        with db.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        heads = sorted(p.name.split("_")[0] for p in _versions())
        assert version == heads[-1]
    finally:
        db.close()


def _versions() -> list[Path]:
    folder = ROOT / "service" / "store" / "db" / "migrations" / "versions"
    return [p for p in folder.glob("*.py") if not p.name.startswith("_")]


def test_replicas_starting_together_migrate_a_new_database_once(database_url: str) -> None:
    import time

    start_at = repr(time.time() + 1.5)  # every child past its imports, then all at once
    children = [
        subprocess.Popen([sys.executable, "-c", _OPEN, database_url, start_at], cwd=ROOT)
        for _ in range(3)
    ]
    assert [child.wait(timeout=60) for child in children] == [0, 0, 0]
    db = CatalogueDB(database_url)
    try:
        with db.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        db.close()


def test_the_head_the_service_skips_alembic_for_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from service.store.db.engine import HEAD_REVISION

    config = Config()
    config.set_main_option("script_location", str(ROOT / "service/store/db/migrations"))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]


def test_a_catalogue_of_the_first_revision_is_upgraded_with_its_rows(database_url: str) -> None:
    """0002 adds columns to tables that hold rows (on SQLite by copying the table)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(ROOT / "service/store/db/migrations"))
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            sa.text(
                "INSERT INTO datasets (id, sort_key, n_samples, n_features, file, document) "
                "VALUES ('d', 'k', 3, 2, 'data.npy', '{}')"
            )
        )
        conn.execute(
            sa.text("INSERT INTO jobs (id, status, document) VALUES ('j', 'queued', '{}')")
        )
    engine.dispose()
    db = CatalogueDB(database_url)
    try:
        with db.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
            assert conn.execute(sa.text("SELECT id, inline FROM datasets")).all() == [("d", False)]
            assert conn.execute(sa.text("SELECT id, dataset_id FROM jobs")).all() == [("j", None)]
    finally:
        db.close()
