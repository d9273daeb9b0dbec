"""Shared fixtures: every test gets its own app over a real store in ``tmp_path``.

Also ``require`` and ``require_executable``: an optional test dependency (distributed,
moto, tritonclient, playwright, hadolint, Chromium, PostgreSQL) that is missing skips
its tests on a developer's machine, and fails them under CI (``CI`` set), where
``.ci/run`` installs every one of them: a CI run must not go green by skipping them.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app

if TYPE_CHECKING:
    from tests.helpers_postgres import PostgresServer


def in_ci() -> bool:
    """``CI`` is set to something other than empty, ``0``, ``false`` or ``no``."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str) -> NoReturn:
    """Skip the calling test (or module) for a missing dependency; fail under CI."""
    if in_ci():
        pytest.fail(f"{what}: CI must run this test (.ci/run installs it)", pytrace=False)
    pytest.skip(f"{what}; CI runs this test", allow_module_level=True)


def require(module: str, hint: str = "pip install -e '.[dev]'") -> ModuleType:
    """``pytest.importorskip`` that fails under CI: the imported module."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing(f"{module} is not installed ({hint}): {exc}")


def require_executable(program: str | Path, hint: str) -> str:
    """The path of ``program`` (a path, or a name looked up on ``PATH``), which must be
    executable; skips without it, fails under CI."""
    path = Path(program)
    if path.is_absolute() or path.parent != Path():
        found = str(path) if os.access(path, os.X_OK) and path.is_file() else None
    else:
        found = shutil.which(str(program))
    if found is None:
        missing(f"{program} is not installed ({hint})")
    return found


SEED_BLOBS = {
    "kind": "blobs",
    "n_samples": 200,
    "n_features": 2,
    "centers": 4,
    "cluster_std": 1.6,
    "random_state": 10,
}
#: The seed-blobs fit as a ``POST /v1/models`` body.
SEED_FIT = {
    "algorithm": "gaussian_mixture",
    "params": {"n_components": 4, "random_state": 0},
    "data": {"generator": SEED_BLOBS},
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store_dir=tmp_path / "store", secret_key="test-secret-key")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """An S3 server (moto) on loopback for the whole session, with dummy credentials."""
    require("moto", "pip install 'moto[server]'")
    from tests.helpers_s3 import AtomicMotoServer

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    mp = pytest.MonkeyPatch()
    for name, value in env.items():
        mp.setenv(name, value)
    mp.delenv("AWS_ENDPOINT_URL", raising=False)
    mp.delenv("AWS_PROFILE", raising=False)
    server = AtomicMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        mp.undo()


@pytest.fixture
def s3_bucket(moto_url: str) -> str:
    """A new, empty bucket for one test."""
    import secrets

    import boto3

    name = f"gmm-test-{secrets.token_hex(6)}"
    boto3.client("s3", endpoint_url=moto_url).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on loopback for the whole session, one per xdist worker (a
    session fixture runs once per worker process), so workers never share databases.

    Started from the server binaries (``initdb``, ``postgres``), not a container: the
    tests must run where there is no Docker engine, CI included.
    """
    require("psycopg", "pip install -e '.[dev]'")
    from tests.helpers_postgres import PostgresServer, find_pg_bin

    for program in ("initdb", "pg_ctl", "postgres"):
        require_executable(find_pg_bin(program) or program, "apt-get install postgresql")
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty database for one test (``postgresql+psycopg://...``), dropped after
    it: tests see no other test's tables, and a long session does not fill the disk."""
    from sqlalchemy.engine import make_url

    url = postgres_server.create_database()
    try:
        yield url
    finally:
        database = make_url(url).database
        assert database is not None
        postgres_server.drop_database(database)


def wait_job(http: Any, job_id: str, seconds: float = 120) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` (a TestClient or an httpx client) until the job ends."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {seconds} s")
        time.sleep(0.1)
