"""A throwaway PostgreSQL server for the tests, started from the server binaries.

The catalogue's PostgreSQL backend must be tested against the real server (its
locking, its isolation, its errors), not SQLite pretending: this starts one from
``initdb`` and ``postgres`` (Debian's ``postgresql`` package, or any build on
``PATH``) in a fresh temporary directory, on a free loopback port, tuned for speed
rather than durability, and removes it all again on ``stop()``.

``initdb``, ``pg_ctl`` and ``postgres`` refuse to run as root; as root (a CI
container) they run as the ``postgres`` user, which owns the temporary directory.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from glob import glob
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.helpers_server import free_port

HOST = "127.0.0.1"
ADMIN_USER = "postgres"
ADMIN_DATABASE = "postgres"
START_TIMEOUT = 30.0
#: Where the server binaries live when they are not on PATH (Debian, Ubuntu).
PG_LIB_GLOB = "/usr/lib/postgresql/*/bin"
#: Settings for a test server: nothing it writes needs to survive a crash.
SERVER_SETTINGS = {
    "listen_addresses": HOST,
    "max_connections": "200",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    # Parallel queries map segments in /dev/shm, which containers keep small.
    "max_parallel_workers_per_gather": "0",
    "log_min_messages": "warning",
}


def _version_key(directory: str) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> ``(15,)``, for picking the newest."""
    match = re.search(r"/postgresql/([\d.]+)/bin$", directory)
    return tuple(int(p) for p in match[1].split(".") if p) if match else ()


def find_pg_bin(name: str) -> str | None:
    """The path of the PostgreSQL program ``name``: on ``PATH``, else in the newest
    ``/usr/lib/postgresql/<version>/bin`` (Debian keeps the server programs there,
    off ``PATH``); None when there is none."""
    found = shutil.which(name)
    if found:
        return found
    for directory in sorted(glob(PG_LIB_GLOB), key=_version_key, reverse=True):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _pg_bin_dir() -> Path:
    """One directory holding initdb, pg_ctl and postgres, so all three are one version
    (a ``PATH`` entry is followed to its real location, as for Debian's symlinks)."""
    initdb = find_pg_bin("initdb")
    if initdb is None:
        raise FileNotFoundError(
            f"initdb is not on PATH nor in {PG_LIB_GLOB} (apt-get install postgresql)"
        )
    directory = Path(initdb).resolve().parent
    for program in ("pg_ctl", "postgres"):
        if not (directory / program).is_file():
            raise FileNotFoundError(f"{program} is not beside {initdb} in {directory}")
    return directory


def _database_url(port: int, database: str) -> str:
    return f"postgresql+psycopg://{ADMIN_USER}@{HOST}:{port}/{quote(database, safe='')}"


class PostgresServer:
    """One PostgreSQL server in its own temporary directory, on ``127.0.0.1:port``.

    Local connections are trusted (``initdb -A trust -U postgres``): no password, the
    superuser ``postgres``. Nothing listens beyond loopback.
    """

    def __init__(self, start_timeout: float = START_TIMEOUT) -> None:
        self.start_timeout = start_timeout
        self.port = 0
        self.base: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._bin = _pg_bin_dir()
        self._run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, and initdb refuses root: there is no `postgres` user "
                    "to run the server as (apt-get install postgresql creates one)"
                ) from None

    # -- paths and processes ------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        assert self.base is not None, "the server was not started"
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        assert self.base is not None, "the server was not started"
        return self.base / "server.log"

    @property
    def url(self) -> str:
        """The admin database's URL (superuser ``postgres``, database ``postgres``)."""
        return _database_url(self.port, ADMIN_DATABASE)

    def url_of(self, database: str) -> str:
        return _database_url(self.port, database)

    def _env(self) -> dict[str, str]:
        """The caller's environment without libpq's PG* variables (a developer's
        PGDATA or PGPORT must not redirect initdb or pg_ctl), in the C locale."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"LC_ALL": "C", "LANG": "C", "TZ": "UTC"})
        if self._run_as is not None:
            env.update({"HOME": str(self.base), "USER": "postgres", "LOGNAME": "postgres"})
        return env

    def _as_owner(self) -> dict[str, Any]:
        """Popen arguments that drop root for the ``postgres`` user, when root."""
        if self._run_as is None:
            return {}
        return {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}

    def _run(self, program: str, *args: str, timeout: float = 60.0) -> None:
        done = subprocess.run(
            [str(self._bin / program), *args],
            cwd=self.base,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **self._as_owner(),
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> PostgresServer:
        """initdb, then start ``postgres`` and wait until it accepts connections."""
        if self.proc is not None:
            raise RuntimeError("the server is already running")
        # /tmp rather than $TMPDIR: the socket path must stay under ~100 bytes, and as
        # root every parent must be traversable by the postgres user (/tmp is 1777).
        parent = "/tmp" if os.path.isdir("/tmp") else None
        self.base = Path(tempfile.mkdtemp(prefix="gmm-pg-", dir=parent))
        try:
            os.chmod(self.base, 0o700)
            if self._run_as is not None:
                os.chown(self.base, self._run_as.pw_uid, self._run_as.pw_gid)
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-A",
                "trust",
                "-U",
                ADMIN_USER,
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            )
            # A free port can be taken between free_port() and bind(): retry on that.
            for attempt in range(3):
                self.port = free_port()
                failure = self._launch()
                if failure is None:
                    break
                if attempt == 2 or "could not bind" not in self.log_tail(200):
                    raise RuntimeError(
                        f"PostgreSQL ({self._bin / 'postgres'}) on {HOST}:{self.port} "
                        f"{failure}; the end of its log:\n{self.log_tail()}"
                    )
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)  # a session that dies mid-way leaves no server behind
        return self

    def _launch(self) -> str | None:
        """Start ``postgres``: None once it accepts connections, else what went wrong
        (it exited, or did not answer within the timeout and was stopped)."""
        args = ["-D", str(self.data_dir), "-p", str(self.port), "-k", str(self.base)]
        for name, value in SERVER_SETTINGS.items():
            args += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            if self._run_as is not None:
                os.chown(self.log_path, self._run_as.pw_uid, self._run_as.pw_gid)
            self.proc = subprocess.Popen(
                [str(self._bin / "postgres"), *args],
                cwd=self.base,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in pytest must not hit the server first
                **self._as_owner(),
            )
        failure = self._wait_ready()
        if failure is not None:
            self._stop_process()
        return failure

    def _wait_ready(self) -> str | None:
        """What ``pg_isready`` does: try to connect until it works (None), the server
        exits or the timeout passes (what happened)."""
        import psycopg

        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        error = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with status {self.proc.returncode} while starting"
            try:
                with psycopg.connect(self._conninfo(ADMIN_DATABASE), connect_timeout=2):
                    return None
            except psycopg.OperationalError as exc:
                error = str(exc).strip()
                time.sleep(0.1)
        return f"did not accept connections within {self.start_timeout:.0f} s ({error})"

    def _conninfo(self, database: str) -> str:
        return f"host={HOST} port={self.port} user={ADMIN_USER} dbname={database}"

    def _stop_process(self) -> None:
        """``pg_ctl stop -m immediate`` (SIGQUIT, no checkpoint: the data is thrown away
        anyway), then SIGKILL for whatever is left of the process group."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired, OSError):
                self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        # The postmaster was a session leader: its pid is its backends' group id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server and delete its directory; safe to call twice."""
        atexit.unregister(self.stop)
        self._stop_process()
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    # -- databases ----------------------------------------------------------------

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(self._conninfo(ADMIN_DATABASE), autocommit=True)

    def create_database(self, name: str | None = None) -> str:
        """``CREATE DATABASE`` (named ``gmm_<hex>`` unless given): its URL."""
        from psycopg import sql

        name = name or f"gmm_{secrets.token_hex(6)}"
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_of(name)

    def drop_database(self, name: str) -> None:
        """``DROP DATABASE ... WITH (FORCE)``: closes the connections a test's engine
        may still pool, so that a long session does not fill the disk with databases."""
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
