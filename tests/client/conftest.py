"""One real server per test session (per xdist worker) for the client, the remote
estimators and the ``gmm`` command: they talk HTTP to ``python -m service`` the way a
user's code does, not to an in-process app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gmm_client import Client

from tests.client.jobs_202 import HAS_SYNC_WAIT, needs_sync_wait
from tests.helpers_server import ServerProcess, running_server

SECRET = "client-tests-key"


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cwd = tmp_path_factory.mktemp("client-server")
    env = {
        "GMM_STORE_DIR": str(cwd / "store"),
        "GMM_SECRET_KEY": SECRET,
        "GMM_JOB_WORKERS": "2",
        "GMM_MAX_CONCURRENT_FITS": "2",
        "GMM_LOG_LEVEL": "warning",
    }
    with running_server(env, cwd=cwd) as server:
        yield server


@pytest.fixture(scope="session")
def job_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with ``Settings(sync_wait_seconds=0)``: every fit, model selection and
    comparison answers 202 with a job, however small."""
    if not HAS_SYNC_WAIT:  # pragma: no cover - the tests using it are skipped then
        pytest.skip("needs GMM_SYNC_WAIT_SECONDS")
    cwd = tmp_path_factory.mktemp("job-server")
    env = {
        "GMM_STORE_DIR": str(cwd / "store"),
        "GMM_SECRET_KEY": SECRET,
        "GMM_JOB_WORKERS": "2",
        "GMM_MAX_CONCURRENT_FITS": "2",
        "GMM_LOG_LEVEL": "warning",
        "GMM_SYNC_WAIT_SECONDS": "0",
    }
    with running_server(env, cwd=cwd) as server:
        yield server


@pytest.fixture(params=["sync-wait-default", pytest.param("sync-wait-0", marks=needs_sync_wait)])
def fit_server(request: pytest.FixtureRequest) -> ServerProcess:
    """Each test that fits, selects or compares runs twice: against the default server,
    which answers such small work 201/200 at once, and against ``job_server``, which
    answers 202; the client's return value must be the same."""
    name = "live_server" if request.param == "sync-wait-default" else "job_server"
    server: ServerProcess = request.getfixturevalue(name)
    return server


@pytest.fixture
def fit_gmm(fit_server: ServerProcess) -> Iterator[Client]:
    with Client(fit_server.base_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that needs an API key (``right-key``)."""
    cwd = tmp_path_factory.mktemp("keyed-server")
    env = {
        "GMM_STORE_DIR": str(cwd / "store"),
        "GMM_SECRET_KEY": SECRET,
        "GMM_API_KEYS": "right-key",
    }
    with running_server(env, cwd=cwd) as server:
        yield server


@pytest.fixture
def gmm(live_server: ServerProcess) -> Iterator[Client]:
    with Client(live_server.base_url, timeout=120) as client:
        yield client
