"""One real server per test session (per xdist worker) for the client, the remote
estimators and the ``gmm`` command: they talk HTTP to ``python -m service`` the way a
user's code does, not to an in-process app."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from gmm_client import Client

from tests.client.jobs_202 import HAS_SYNC_WAIT, needs_sync_wait
from tests.helpers_server import ServerProcess, running_server

SECRET = "client-tests-key"

#: The servers this worker started for the client tests, and how far each one's log
#: had got when the running test began: a failed test shows what its servers logged.
_LOGS: dict[str, tuple[ServerProcess, int]] = {}
_SHOWN_LINES = 80


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """A client test talks to a server in another process: when it fails, its report
    carries the lines that server logged meanwhile (requests included: cancels, deletes,
    errors), or the failure could not be told from the test's side alone."""
    outcome = yield
    report = outcome.get_result()
    if call.when == "setup":
        for name, (server, _) in list(_LOGS.items()):
            _LOGS[name] = (server, server.log_path.stat().st_size)
    if report.failed:
        for name, (server, start) in _LOGS.items():
            with open(server.log_path, "rb") as log:
                log.seek(start)
                text = log.read().decode(errors="replace")
            lines = text.splitlines()[-_SHOWN_LINES:]
            report.sections.append((f"{name} log (last {len(lines)} lines)", "\n".join(lines)))


def _server(name: str, env: dict[str, str], cwd: Any) -> Iterator[ServerProcess]:
    with running_server(env, cwd=cwd) as server:
        _LOGS[name] = (server, 0)
        try:
            yield server
        finally:
            _LOGS.pop(name, None)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cwd = tmp_path_factory.mktemp("client-server")
    env = {
        "GMM_STORE_DIR": str(cwd / "store"),
        "GMM_SECRET_KEY": SECRET,
        "GMM_JOB_WORKERS": "2",
        "GMM_MAX_CONCURRENT_FITS": "2",
        "GMM_LOG_LEVEL": "info",
    }
    yield from _server("live_server", env, cwd)


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
        "GMM_LOG_LEVEL": "info",
        "GMM_SYNC_WAIT_SECONDS": "0",
    }
    yield from _server("job_server", env, cwd)


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
