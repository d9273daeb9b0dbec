"""One real server per test session (per xdist worker) for the client, the remote
estimators and the ``gmm`` command: they talk HTTP to ``python -m service`` the way a
user's code does, not to an in-process app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gmm_client import Client

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
