"""Start ``python -m service`` as a real process on a free loopback port, and stop it.

Tests about processes (several workers, several replicas over one store, the
command users run) need the real uvicorn, not a TestClient: this is the one place
that knows how to start one, wait until it answers and clean up after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HOST = "127.0.0.1"
START_TIMEOUT = 60.0  # generous: CI machines are shared and --workers 2 boots twice


def free_port() -> int:
    """A port nobody listens on right now; the caller retries if it is taken meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """One running ``python -m service`` (with its uvicorn workers, if any)."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base_url, timeout=30.0)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> bool:
        """Poll ``/healthz``; False as soon as the process dies (a port clash, a crash)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if self.client.get("/healthz", timeout=1.0).status_code == 200:
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """SIGTERM the process group (uvicorn and its workers), SIGKILL if it lingers."""
        self.client.close()
        if self.proc.poll() is None:
            # start_new_session made the server a group leader: its pid is the group id.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        # Workers may outlive a parent that exited; never leave any of them behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def _spawn(env: Mapping[str, str], cwd: Path, port: int, log_path: Path) -> ServerProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GMM_")}
    full_env.update(env)
    full_env.update({"GMM_HOST": HOST, "GMM_PORT": str(port), "PYTHONUNBUFFERED": "1"})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServerProcess(proc=proc, port=port, log_path=log_path)


def start_servers(
    envs: list[Mapping[str, str]], *, cwd: Path, attempts: int = 3
) -> list[ServerProcess]:
    """Start one server per env at once (they boot in parallel) and wait for all of them.

    ``GMM_HOST`` and ``GMM_PORT`` are chosen here; every other ``GMM_*`` variable of
    the test runner's own environment is dropped so that only ``env`` configures the
    server. ``cwd`` should be a temporary folder: the default store lands there.
    """
    started: list[ServerProcess] = []
    try:
        for i, env in enumerate(envs):
            started.append(_spawn(env, cwd, free_port(), cwd / f"server-{i}-0.log"))
        for i, env in enumerate(envs):
            for attempt in range(1, attempts + 1):
                if started[i].wait_healthy():
                    break
                log = started[i].log()
                started[i].stop()
                if attempt == attempts or "address already in use" not in log.lower():
                    raise RuntimeError(f"server {i} did not become healthy:\n{log[-4000:]}")
                started[i] = _spawn(env, cwd, free_port(), cwd / f"server-{i}-{attempt}.log")
    except BaseException:
        for server in started:
            server.stop()
        raise
    return started


@contextlib.contextmanager
def running_server(env: Mapping[str, str], *, cwd: Path) -> Iterator[ServerProcess]:
    """``with running_server({...}, cwd=tmp_path) as srv: srv.client.get(...)``."""
    (server,) = start_servers([env], cwd=cwd)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_servers(envs: list[Mapping[str, str]], *, cwd: Path) -> Iterator[list[ServerProcess]]:
    servers = start_servers(envs, cwd=cwd)
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()
