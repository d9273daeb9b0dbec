"""Catalogue at scale: listing, start-up and create with 1,000 to 100,000 models, on
SQLite and on PostgreSQL.

For each database and each size N (grown in place: 1,000, then 9,000 more, ...):

1. **Populate** N models in bulk. Each row is exactly what ``IndexedStore.put`` writes:
   metadata shaped like a real 2-component, 2-feature fit's (templates made by the
   service itself, one fit per algorithm, through an in-process ``TestClient``), with
   its own id (``new_model_id``), name ``sensor-{i}`` (unique), algorithm (a third each
   of ``gaussian_mixture``, ``kmeans``, ``bayesian_gaussian_mixture``), tags
   ``team:t{i % 20}`` and ``site:...`` (one of 7), ``created_at`` five minutes apart
   and jittered means; sealed by ``Signer`` with the store's key, columns from
   ``model_columns`` / ``model_tag_strings``, inserted with executemany. Each model's
   artifact is a real (tiny) joblib dump at ``models/<id>/model.joblib``, signed for
   its id, written without fsync, its folder's mtime set to ``created_at`` (so the
   orphan sweeper sees aged artifacts, as in a store that grew over a year).
   PostgreSQL then gets ``VACUUM ANALYZE`` until the table is all-visible (what
   autovacuum leaves of a table that grew to N); SQLite nothing (the service never
   runs ``ANALYZE``).
2. **List**: ``GET /v1/models`` unfiltered and with ``name=sensor-7``,
   ``tag=team:t3``, ``algorithm=kmeans`` against ``python -m service`` (one worker,
   ``GMM_LOG_JSON=false``) with one keep-alive client: warm-up, then ``--requests`` rounds,
   the four queries interleaved in each. The same queries are timed in-process on
   ``CatalogueDB`` (the page's SELECT, the COUNT, and the store's verification of the
   page), and their plans are recorded (``EXPLAIN QUERY PLAN`` / ``EXPLAIN
   (ANALYZE, BUFFERS)``).
3. **Start-up**: process start to the first 200 of ``/readyz``; and, in a fresh
   process each (Alembic's migration check runs once per process),
   ``build_services(Settings())`` alone, beside the imports before it.
4. **Create**: ``POST /v1/models`` (20 points, ``gaussian_mixture``, 2 components)
   against this version (fresh SQLite store; fresh PostgreSQL database; and the stores
   holding N models) and the version before the database (``git worktree`` of
   ``--old-ref`` run with ``PYTHONPATH``, a file store; removed at the end), in
   ``--rounds`` rounds of ``--creates`` each, the servers taking turns ``--block``
   creates at a time. The goal compares the rounds' medians pairwise.

    .venv/bin/python bench/catalogue.py                        # 1k, 10k, 100k; both databases
    .venv/bin/python bench/catalogue.py --quick                # 200 and 2,000: a smoke run
    .venv/bin/python bench/catalogue.py --sizes 1000,10000 --databases sqlite --no-old
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import joblib  # noqa: E402
import numpy as np  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from service.config import Settings  # noqa: E402
from service.ids import new_model_id  # noqa: E402
from service.store import IndexedStore, open_store  # noqa: E402
from service.store.base import ModelQuery  # noqa: E402
from service.store.db.catalogue import model_columns, model_tag_strings  # noqa: E402
from service.store.db.engine import WRITE  # noqa: E402
from service.store.db.schema import model_tags, models  # noqa: E402
from service.store.signing import ARTIFACT, Signer, canonical_json  # noqa: E402
from tests.helpers_server import free_port  # noqa: E402

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "catalogue.json"
SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (200, 2_000)
DATABASES = ("sqlite", "postgres")
#: The commit before the catalogue moved into a database.
OLD_REF = "b6f666f"
#: Every store of the run is signed with this key (GMM_SECRET_KEY of every server).
SECRET_KEY = "bench-catalogue-0123456789abcdef0123456789abcdef"
HOST = "127.0.0.1"

P99_GOAL_MS = 50.0
GROWTH_GOAL = 2.0
STARTUP_GOAL_S = 2.0
CREATE_GOAL_MS = 5.0
#: The size the absolute goals are stated for.
GOAL_SIZE = 100_000

ALGORITHMS = ("gaussian_mixture", "kmeans", "bayesian_gaussian_mixture")
SITES = ("ams", "fra", "lon", "nyc", "sfo", "sgp", "syd")
#: The queries of ``GET /v1/models``, as query parameters.
QUERIES: dict[str, dict[str, str]] = {
    "unfiltered": {},
    "name": {"name": "sensor-7"},
    "tag": {"tag": "team:t3"},
    "algorithm": {"algorithm": "kmeans"},
}
MODEL_QUERIES = {
    "unfiltered": ModelQuery(),
    "name": ModelQuery(name="sensor-7"),
    "tag": ModelQuery(tags=("team:t3",)),
    "algorithm": ModelQuery(algorithm="kmeans"),
}
PAGE_SIZE = int(Settings.model_fields["default_page_size"].default)
CREATED_STEP = dt.timedelta(minutes=5)
CHUNK = 2_000


# -- the models -------------------------------------------------------------------


def fit_points(seed: int) -> list[list[float]]:
    """20 two-feature points in two clusters, different for every seed."""
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(0.0, 0.5, (10, 2)), rng.normal(5.0, 0.5, (10, 2))])
    return [[round(float(a), 4), round(float(b), 4)] for a, b in X]


def fit_body(seed: int) -> dict[str, Any]:
    return {
        "algorithm": "gaussian_mixture",
        "data": {"points": fit_points(seed)},
        "params": {"n_components": 2, "random_state": 0},
    }


def make_templates() -> dict[str, dict[str, Any]]:
    """The metadata the service stores for a small fit of each algorithm, made by the
    service itself (in-process, on a throwaway store), without the per-model fields."""
    from fastapi.testclient import TestClient

    from service.main import create_app

    params = {
        "gaussian_mixture": {"n_components": 2, "random_state": 0},
        "kmeans": {"n_clusters": 2, "n_init": 1, "random_state": 0},
        "bayesian_gaussian_mixture": {"n_components": 2, "random_state": 0},
    }
    templates: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="gmm-bench-tpl-") as tmp:
        settings = Settings(store_dir=Path(tmp), secret_key=SECRET_KEY, log_json=False)
        app = create_app(settings)
        access = logging.getLogger("gmm.access")
        access.disabled = True  # its access lines would fill the bench's output
        with TestClient(app) as client:
            store = client.app.state.services.store  # type: ignore[attr-defined]
            for algorithm in ALGORITHMS:
                body = {
                    "algorithm": algorithm,
                    "params": params[algorithm],
                    "data": {"points": fit_points(0)},
                    "include": [],
                }
                r = client.post("/v1/models", json=body)
                if r.status_code != 201:
                    raise RuntimeError(f"template fit of {algorithm}: {r.status_code} {r.text}")
                meta = store.get_metadata(r.json()["id"])
                resource = dict(meta["resource"])
                resource["dataset_id"] = None  # no dataset: the bench stores none
                templates[algorithm] = {"resource": resource, "versions": meta["versions"]}
        access.disabled = False
    return templates


def tiny_artifact() -> bytes:
    buf = io.BytesIO()
    joblib.dump({"bench": "catalogue"}, buf)
    return buf.getvalue()


class Populator:
    """Grows one store to N models, the rows and folders ``IndexedStore.put`` makes."""

    def __init__(
        self,
        store: IndexedStore,
        store_dir: Path,
        templates: dict[str, dict[str, Any]],
        first_created: dt.datetime,
    ) -> None:
        self.store = store
        self.models_dir = store_dir / "models"
        self.templates = templates
        self.first_created = first_created
        self.signer = Signer(SECRET_KEY.encode())
        self.blob = tiny_artifact()
        self.count = 0
        self.rng = random.Random(0)
        self.seconds = {"sign": 0.0, "artifacts": 0.0, "insert": 0.0}
        #: PostgreSQL: the share of the table's pages VACUUM marked all-visible.
        self.all_visible: float | None = None

    def _meta(self, i: int, model_id: str, created: dt.datetime) -> dict[str, Any]:
        template = self.templates[ALGORITHMS[i % 3]]
        resource = dict(template["resource"])  # shallow: only top-level fields change
        jitter = self.rng.uniform(-0.5, 0.5)
        resource.update(
            id=model_id,
            name=f"sensor-{i}",  # unique, as the issue's `?name=m7`: the same page at every N
            tags={"team": f"t{i % 20}", "site": SITES[i % len(SITES)]},
            created_at=created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            means=[[v + jitter for v in row] for row in resource["means"]],
            fit_seconds=round(self.rng.uniform(0.002, 0.2), 6),
        )
        # What IndexedStore.put seals: the metadata, its id and its artifact entry.
        meta = {"resource": resource, "versions": template["versions"]}
        meta["id"] = model_id
        meta["artifact"] = self.signer.artifact(model_id, self.blob)
        return self.signer.seal(meta)

    def grow_to(self, n: int) -> None:
        while self.count < n:
            stop = min(n, self.count + CHUNK)
            t0 = time.perf_counter()
            rows: list[dict[str, Any]] = []
            tags: list[dict[str, str]] = []
            stamps: list[tuple[str, float]] = []
            for i in range(self.count, stop):
                model_id = new_model_id()
                created = self.first_created + i * CREATED_STEP
                sealed = self._meta(i, model_id, created)
                rows.append(
                    {
                        "id": model_id,
                        "document": canonical_json(sealed).decode(),
                        **model_columns(sealed),
                    }
                )
                tags += [{"model_id": model_id, "tag": t} for t in model_tag_strings(sealed)]
                stamps.append((model_id, created.timestamp()))
            t1 = time.perf_counter()
            for model_id, stamp in stamps:  # LocalArtifacts.put_model's layout, no fsync
                folder = self.models_dir / model_id
                folder.mkdir()
                with open(folder / ARTIFACT, "wb") as fh:
                    fh.write(self.blob)
                os.utime(folder, (stamp, stamp))
            t2 = time.perf_counter()
            with self.store.db.engine.connect() as conn:  # one transaction per chunk
                conn = conn.execution_options(**WRITE)
                with conn.begin():
                    conn.execute(models.insert(), rows)
                    conn.execute(model_tags.insert(), tags)
            t3 = time.perf_counter()
            self.seconds["sign"] += t1 - t0
            self.seconds["artifacts"] += t2 - t1
            self.seconds["insert"] += t3 - t2
            self.count = stop

    def vacuum(self) -> float:
        """PostgreSQL: ``VACUUM ANALYZE`` until ``models`` is all-visible, as autovacuum
        leaves a table that grew over time. VACUUM cannot mark a page all-visible while
        another backend (an autovacuum's ANALYZE started during the load) holds an older
        snapshot; the index-only scans of the COUNTs would then visit the heap for those
        pages, a share that depends on timing. Tried up to 10 times, 1 s apart."""
        engine = self.store.db.engine
        if engine.dialect.name != "postgresql":
            return 0.0
        t0 = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for _ in range(10):
                conn.exec_driver_sql("VACUUM ANALYZE")
                pages, visible = conn.exec_driver_sql(
                    "SELECT relpages, relallvisible FROM pg_class WHERE oid = 'models'::regclass"
                ).one()
                self.all_visible = visible / max(pages, 1)
                if self.all_visible >= 0.99:
                    break
                time.sleep(1.0)
        return time.perf_counter() - t0

    def database_bytes(self) -> int:
        engine = self.store.db.engine
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                return int(
                    conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()
                )
        path = Path(str(engine.url.database))
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


# -- SQL in-process ----------------------------------------------------------------


@contextlib.contextmanager
def captured_sql(engine: sa.Engine) -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs the block sends to the database, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", grab)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", grab)


def explain(engine: sa.Engine, statement: str, parameters: Any) -> list[str]:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            return [str(row[0]) for row in rows]
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        return [f"{row[0]}/{row[1]} {row[3]}" for row in rows]


def _median_ms(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def sql_profile(store: IndexedStore, repeats: int) -> dict[str, Any]:
    """Each listing's SELECT, COUNT and the verification of its page, timed in-process
    (medians), with the plans the database chose."""
    db = store.db
    out: dict[str, Any] = {}
    for name, query in MODEL_QUERIES.items():
        with captured_sql(db.engine) as seen:
            db.list_models(query, limit=PAGE_SIZE, cursor=None)
            db.count_models(query)
        list_ms = _median_ms(
            lambda q=query: db.list_models(q, limit=PAGE_SIZE, cursor=None), repeats
        )
        count_ms = _median_ms(lambda q=query: db.count_models(q), repeats)
        store_ms = _median_ms(lambda q=query: store.list(q, limit=PAGE_SIZE, cursor=None), repeats)
        out[name] = {
            "list_ms": round(list_ms, 3),
            "count_ms": round(count_ms, 3),
            "verify_ms": round(max(store_ms - list_ms, 0.0), 3),
            "statements": [
                {"sql": " ".join(s.split()), "plan": explain(db.engine, s, p)} for s, p in seen
            ],
        }
    return out


# -- servers -----------------------------------------------------------------------


class ServiceProcess:
    """``python -m service`` on a free loopback port (one worker, plain access lines to
    a log file), in its own process group; ``pythonpath`` chooses the checkout."""

    def __init__(self, env: dict[str, str], *, pythonpath: Path, log_dir: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GMM_")}
        self.env.update(env)
        self.env.update(
            GMM_HOST=HOST,
            GMM_WORKERS="1",
            GMM_LOG_JSON="false",
            GMM_LOG_LEVEL="warning",
            PYTHONPATH=str(pythonpath),
            PYTHONUNBUFFERED="1",
        )
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.startups = 0

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 120.0) -> float:
        """Start it; the seconds from ``Popen`` to the first 200 of ``/readyz``."""
        for attempt in range(3):
            self.port = free_port()
            self.env["GMM_PORT"] = str(self.port)
            self.startups += 1
            log_path = self.log_dir / f"server-{self.startups}.log"
            with open(log_path, "wb") as log:
                t0 = time.perf_counter()
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "service"],
                    cwd=self.log_dir,  # no .env file of the caller's is read
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            with httpx.Client(timeout=2.0) as probe:
                while time.perf_counter() - t0 < timeout:
                    if self.proc.poll() is not None:
                        break
                    with contextlib.suppress(httpx.TransportError):
                        if probe.get(self.base_url + "/readyz").status_code == 200:
                            return time.perf_counter() - t0
                    time.sleep(0.01)
            self.stop()
            text = log_path.read_text(errors="replace")
            if attempt == 2 or "address already in use" not in text.lower():
                raise RuntimeError(f"the service did not become ready:\n{text[-3000:]}")
        raise AssertionError("unreachable")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


#: Run in a fresh process: imports, then the first ``build_services`` (which checks the
#: schema with Alembic, once per process, as a server's start does).
BUILD_PROBE = """
import json, time
t0 = time.perf_counter()
from service.config import Settings
from service.services import build_services
t1 = time.perf_counter()
services = build_services(Settings())
t2 = time.perf_counter()
services.close()
print(json.dumps({"import_seconds": t1 - t0, "build_seconds": t2 - t1}))
"""


def probe_build(server: ServiceProcess) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", BUILD_PROBE],
        cwd=server.log_dir,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"build_services probe failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "max_ms": round(float(ms.max()), 3),
        "count": int(ms.size),
    }


def measure_lists(base_url: str, *, requests: int, warmup: int) -> dict[str, Any]:
    """``requests`` rounds of the four listings, interleaved, after ``warmup`` rounds."""
    seconds: dict[str, list[float]] = {name: [] for name in QUERIES}
    totals: dict[str, int] = {}
    items: dict[str, int] = {}
    with httpx.Client(base_url=base_url, timeout=60.0) as client:
        for round_ in range(warmup + requests):
            for name, params in QUERIES.items():
                t0 = time.perf_counter()
                r = client.get("/v1/models", params=params)
                elapsed = time.perf_counter() - t0
                if r.status_code != 200:
                    raise RuntimeError(f"GET /v1/models {params}: {r.status_code} {r.text[:300]}")
                if round_ >= warmup:
                    seconds[name].append(elapsed)
                if name not in totals:
                    page = r.json()
                    totals[name] = int(page["total"])
                    items[name] = len(page["items"])
                    if items[name] != min(PAGE_SIZE, totals[name]):
                        raise RuntimeError(f"{name}: a short page ({items[name]} items)")
    return {
        name: {"total": totals[name], "items": items[name], **percentiles(seconds[name])}
        for name in QUERIES
    }


# -- PostgreSQL and the old version --------------------------------------------------


def start_postgres() -> tuple[Any, str | None]:
    """A PostgresServer (tests/helpers_postgres.py), or None and why not."""
    try:
        from tests.helpers_postgres import PostgresServer

        return PostgresServer().start(), None
    except (FileNotFoundError, RuntimeError, ImportError) as exc:
        return None, str(exc).splitlines()[0]


def add_worktree(ref: str, path: Path) -> str | None:
    """``git worktree add path ref``; None when done, else why not."""
    git = ["git", "-C", str(ROOT)]
    if path.exists():  # a leftover of an interrupted run
        subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=False)
        if path.exists():
            return f"{path} exists and is not a worktree that could be removed"
    done = subprocess.run(
        [*git, "worktree", "add", str(path), ref], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return f"git worktree add failed: {done.stderr.strip()}"
    return None


def remove_worktree(path: Path) -> None:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
        capture_output=True,
        check=False,
    )


def imported_from(env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", "import service; print(service.__file__)"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def measure_creates(
    servers: dict[str, ServiceProcess], *, creates: int, rounds: int, block: int, warmup: int
) -> dict[str, Any]:
    """``rounds`` rounds of ``creates`` sequential creates on each server. Within a
    round the servers take turns, ``block`` creates at a time, the order rotating per
    round, so that a change in the machine's load falls on all of them alike; every
    server gets the same bodies in the same order."""
    names = list(servers)
    seconds: dict[str, list[list[float]]] = {name: [] for name in names}
    clients = {
        name: httpx.Client(base_url=server.base_url, timeout=120.0)
        for name, server in servers.items()
    }

    def create(name: str, body: dict[str, Any]) -> float:
        t0 = time.perf_counter()
        r = clients[name].post("/v1/models", json=body)
        elapsed = time.perf_counter() - t0
        if r.status_code != 201:
            raise RuntimeError(f"{name}: create answered {r.status_code} {r.text[:300]}")
        return elapsed

    try:
        for name in names:
            for k in range(warmup):
                create(name, fit_body(1_000_000 + k))
        for round_ in range(rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            times: dict[str, list[float]] = {name: [] for name in names}
            for start in range(0, creates, block):
                for name in order:
                    for k in range(start, min(start + block, creates)):
                        times[name].append(create(name, fit_body(round_ * creates + k)))
            for name in names:
                seconds[name].append(times[name])
    finally:
        for client in clients.values():
            client.close()
    out: dict[str, Any] = {}
    for name in names:
        every = [t for times in seconds[name] for t in times]
        out[name] = {
            "median_ms": round(1000.0 * statistics.median(every), 3),
            "round_medians_ms": [round(1000.0 * statistics.median(t), 3) for t in seconds[name]],
            **{k: v for k, v in percentiles(every).items() if k != "p50_ms"},
        }
    return out


# -- the run -------------------------------------------------------------------------


def sources_digest(root: Path) -> str:
    """sha256 of the service's sources as they were when the run started (others may be
    editing them): which code a figure belongs to."""
    digest = hashlib.sha256()
    for path in sorted((root / "service").rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def parse_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", help="Comma-separated model counts (default 1000,10000,100000).")
    p.add_argument(
        "--quick", action="store_true", help="A smoke run: 200 and 2,000 models, few requests."
    )
    p.add_argument(
        "--databases", default=",".join(DATABASES), help="sqlite,postgres or one of them."
    )
    p.add_argument("--requests", type=int, help="Timed rounds of the 4 listings (default 200).")
    p.add_argument("--warmup", type=int, help="Untimed rounds first (default 20).")
    p.add_argument("--startup-repeats", type=int, help="Starts per database and size (default 3).")
    p.add_argument("--creates", type=int, help="Creates per server per round (default 100).")
    p.add_argument("--rounds", type=int, help="Rounds of creates (default 3).")
    p.add_argument("--block", type=int, default=10, help="Creates per turn within a round.")
    p.add_argument("--sql-repeats", type=int, default=15, help="In-process SQL timings per query.")
    p.add_argument("--old-ref", default=OLD_REF, help="The version before the database.")
    p.add_argument(
        "--old-worktree",
        type=Path,
        default=ROOT.parent / "wt-bench-old",
        help="Where it is checked out.",
    )
    p.add_argument(
        "--no-old", action="store_true", help="Do not run the version before the database."
    )
    p.add_argument(
        "--json",
        "--output",
        dest="json",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="JSON results file.",
    )
    args = p.parse_args(argv)
    quick = args.quick
    sizes = [int(s.replace("_", "")) for s in parse_list(args.sizes)] if args.sizes else None
    args.sizes = sorted(set(sizes or (QUICK_SIZES if quick else SIZES)))
    args.databases = parse_list(args.databases)
    for db in args.databases:
        if db not in DATABASES:
            p.error(f"--databases: {db!r} is not one of {', '.join(DATABASES)}")
    defaults = {
        "requests": (30, 200),
        "warmup": (3, 20),
        "startup_repeats": (1, 3),
        "creates": (8, 100),
        "rounds": (2, 3),
    }
    for name, (small, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from bench.run import machine_info

    args = parse_args(argv)
    wall0 = time.perf_counter()
    results: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_info(),
        "service_sources_sha256": sources_digest(ROOT),
        "page_size": PAGE_SIZE,
        "databases": {},
        "skipped": {},
    }
    print(f"templates: fitting {', '.join(ALGORITHMS)} in-process", flush=True)
    templates = make_templates()
    first_created = dt.datetime.now(dt.UTC) - max(args.sizes) * CREATED_STEP
    postgres = None
    stores: dict[str, tuple[IndexedStore, Populator, Path, dict[str, str]]] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gmm-bench-cat-")))
        if "postgres" in args.databases:
            postgres, why = start_postgres()
            if postgres is None:
                print(f"PostgreSQL skipped: {why}", flush=True)
                results["skipped"]["postgres"] = why
            else:
                stack.callback(postgres.stop)
        for db in args.databases:
            if db == "postgres" and postgres is None:
                continue
            store_dir = tmp / f"store-{db}"
            env = {"GMM_STORE_DIR": str(store_dir), "GMM_SECRET_KEY": SECRET_KEY}
            url = None
            if db == "postgres":
                url = postgres.create_database()
                env["GMM_DATABASE_URL"] = url
            store = open_store(store_dir=store_dir, database_url=url, secret_key=SECRET_KEY)
            stack.callback(store.close)
            stores[db] = (
                store,
                Populator(store, store_dir, templates, first_created),
                store_dir,
                env,
            )
            results["databases"][db] = {"sizes": {}}

        for size in args.sizes:
            for db, (store, populator, _store_dir, env) in stores.items():
                print(f"{db}: {size:,} models", flush=True)
                before, had = dict(populator.seconds), populator.count
                t0 = time.perf_counter()
                populator.grow_to(size)
                vacuum_s = populator.vacuum()
                populate = {
                    "seconds": round(time.perf_counter() - t0, 3),
                    "added": size - had,
                    **{k: round(v - before[k], 3) for k, v in populator.seconds.items()},
                    "vacuum_analyze": round(vacuum_s, 3),
                    "all_visible": populator.all_visible,
                    "database_bytes": populator.database_bytes(),
                }
                t0 = time.perf_counter()
                store.sweep_orphans(Settings.model_fields["orphan_grace_seconds"].default)
                sweep_s = time.perf_counter() - t0
                sql = sql_profile(store, args.sql_repeats)
                log_dir = tmp / f"logs-{db}-{size}"
                log_dir.mkdir()
                server = ServiceProcess(env, pythonpath=ROOT, log_dir=log_dir)
                startups = []
                try:
                    startups.append(server.start())
                    # Its first orphan sweep runs on a thread from the start: let it end.
                    wait = min(2.0 * sweep_s, 30.0)
                    time.sleep(wait)
                    lists = measure_lists(
                        server.base_url, requests=args.requests, warmup=args.warmup
                    )
                    server.stop()
                    for _ in range(args.startup_repeats - 1):
                        startups.append(server.start())
                        server.stop()
                finally:
                    server.stop()
                builds = [probe_build(server) for _ in range(args.startup_repeats)]
                results["databases"][db]["sizes"][size] = {
                    "populate": populate,
                    "sweep_seconds": round(sweep_s, 3),
                    "waited_for_sweep_seconds": round(wait, 3),
                    "lists": lists,
                    "sql": sql,
                    "startup": {
                        "readyz_seconds": [round(s, 3) for s in startups],
                        "readyz_median_seconds": round(statistics.median(startups), 3),
                        "import_seconds": [round(b["import_seconds"], 3) for b in builds],
                        "build_services_seconds": [round(b["build_seconds"], 3) for b in builds],
                        "build_services_median_seconds": round(
                            statistics.median(b["build_seconds"] for b in builds), 3
                        ),
                    },
                }

        results["create"] = run_creates(args, tmp, stores, postgres, results)
    results["load_average_end"] = list(os.getloadavg())
    results["wall_seconds"] = round(time.perf_counter() - wall0, 1)
    results["goals"] = check_goals(results, args.sizes)
    print()
    print(format_report(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {args.json}")
    return results


def run_creates(
    args: argparse.Namespace,
    tmp: Path,
    stores: dict[str, tuple[IndexedStore, Populator, Path, dict[str, str]]],
    postgres: Any,
    results: dict[str, Any],
) -> dict[str, Any]:
    print("create: starting the servers", flush=True)
    largest = max(args.sizes)
    servers: dict[str, ServiceProcess] = {}
    startups: dict[str, float] = {}
    envs: dict[str, tuple[dict[str, str], Path]] = {}
    for db in stores:
        env = {"GMM_STORE_DIR": str(tmp / f"create-{db}"), "GMM_SECRET_KEY": SECRET_KEY}
        if db == "postgres":
            env["GMM_DATABASE_URL"] = postgres.create_database()
        envs[f"this, {db}, empty"] = (env, ROOT)
    worktree: Path | None = None
    if args.no_old:
        results["skipped"]["old"] = "--no-old"
    else:
        why = add_worktree(args.old_ref, args.old_worktree)
        if why is None:
            worktree = args.old_worktree
            env = {"GMM_STORE_DIR": str(tmp / "create-old"), "GMM_SECRET_KEY": SECRET_KEY}
            envs[f"before ({args.old_ref}), files"] = (env, worktree)
        else:
            print(f"the version before the database skipped: {why}", flush=True)
            results["skipped"]["old"] = why
    for db, (_, _, _, env) in stores.items():
        envs[f"this, {db}, {largest:,} models"] = (env, ROOT)
    try:
        for name, (env, pythonpath) in envs.items():
            log_dir = tmp / f"logs-create-{len(servers)}"
            log_dir.mkdir()
            servers[name] = ServiceProcess(env, pythonpath=pythonpath, log_dir=log_dir)
            if pythonpath != ROOT:
                where = imported_from(servers[name].env, log_dir)
                if not where.startswith(str(pythonpath)):
                    raise RuntimeError(f"{name} imports the service from {where}")
            startups[name] = round(servers[name].start(), 3)
        figures = measure_creates(
            servers, creates=args.creates, rounds=args.rounds, block=args.block, warmup=5
        )
        for name, seconds in startups.items():
            figures[name]["readyz_seconds"] = seconds
    finally:
        for server in servers.values():
            server.stop()
        if worktree is not None:
            remove_worktree(worktree)
    return {
        "creates_per_round": args.creates,
        "rounds": args.rounds,
        "block": args.block,
        "servers": figures,
    }


# -- goals and the table ----------------------------------------------------------------


def growth_pair(sizes: Sequence[int]) -> tuple[int, int] | None:
    """10,000 -> 100,000 when both ran, else the two largest sizes."""
    if 10_000 in sizes and 100_000 in sizes:
        return 10_000, 100_000
    return (sizes[-2], sizes[-1]) if len(sizes) >= 2 else None


def check_goals(results: dict[str, Any], sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Each goal with its value; ``applies`` is False when the run did not include the
    sizes the goal is stated for (a --quick run): then it is printed as ``info``."""
    goals: list[dict[str, Any]] = []

    def goal(text: str, value: str, passed: bool, applies: bool) -> None:
        goals.append({"goal": text, "value": value, "pass": passed, "applies": applies})

    at_size = GOAL_SIZE if GOAL_SIZE in sizes else max(sizes)
    applies = at_size == GOAL_SIZE
    at = f"{at_size:,}" + ("" if applies else f" (stated for {GOAL_SIZE:,})")
    pair = growth_pair(sizes)
    for db, figures in results["databases"].items():
        by_size = figures["sizes"]
        for name in QUERIES:
            p99 = by_size[at_size]["lists"][name]["p99_ms"]
            goal(
                f"{db} list {name}: p99 at {at} <= {P99_GOAL_MS:g} ms",
                f"{p99:.1f} ms",
                p99 <= P99_GOAL_MS,
                applies,
            )
        if pair is not None:
            small, big = pair
            for name in QUERIES:
                ratio = (
                    by_size[big]["lists"][name]["p50_ms"] / by_size[small]["lists"][name]["p50_ms"]
                )
                goal(
                    f"{db} list {name}: p50 {small:,} -> {big:,} grows <= {GROWTH_GOAL:g}x",
                    f"{ratio:.2f}x",
                    ratio <= GROWTH_GOAL,
                    pair == (10_000, GOAL_SIZE),
                )
        startup = by_size[at_size]["startup"]["readyz_median_seconds"]
        goal(
            f"{db} start-up to /readyz at {at} <= {STARTUP_GOAL_S:g} s",
            f"{startup:.2f} s",
            startup <= STARTUP_GOAL_S,
            applies,
        )
    servers = results.get("create", {}).get("servers", {})
    old = next((v for k, v in servers.items() if k.startswith("before")), None)
    if old is not None:
        for name, figures in servers.items():
            if name.startswith("this") and name.endswith("empty"):
                # Round by round (the same minutes of the machine's load), then the median.
                pairs = zip(figures["round_medians_ms"], old["round_medians_ms"], strict=True)
                diff = statistics.median(a - b for a, b in pairs)
                overall = figures["median_ms"] - old["median_ms"]
                goal(
                    f"create, {name} - before <= +{CREATE_GOAL_MS:g} ms "
                    "(median of the rounds' differences)",
                    f"{diff:+.1f} ms (of all creates' medians: {overall:+.1f} ms)",
                    diff <= CREATE_GOAL_MS,
                    True,
                )
    return goals


#: Lines of PostgreSQL's EXPLAIN (ANALYZE, BUFFERS) the table leaves out (the JSON has them).
_PLAN_DETAIL = ("Buffers:", "Planning", "Heap Blocks", "Sort Method", "Buckets", "Recheck")


def compact_plan(plan: list[str]) -> str:
    """A plan on one line: PostgreSQL's nodes with their actual rows and time (costs,
    buffers and planning left out), SQLite's steps as they are."""
    kept = []
    for line in plan:
        text = re.sub(r"\s*\(cost=[^)]*\)", "", line).replace("->", "").strip()
        if not text.startswith(_PLAN_DETAIL):
            kept.append(
                re.sub(
                    r"\(actual time=[\d.]+\.\.([\d.]+) rows=(\d+) loops=(\d+)\)",
                    r"(rows=\2 loops=\3, \1 ms)",
                    text,
                )
            )
    return " | ".join(kept)


def format_report(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"machine: {m['cpu_count']} CPUs, load average {m['load_average'][0]:.2f} at start, "
        f"{results['load_average_end'][0]:.2f} at end; python {m['python']}",
        f"page size {results['page_size']}; PostgreSQL: tests/helpers_postgres.py's server "
        "(fsync off, shared_buffers 32MB), VACUUM ANALYZE after populating",
    ]
    for what, why in results["skipped"].items():
        lines.append(f"skipped {what}: {why}")
    lines += [
        "",
        "GET /v1/models over HTTP (ms; keep-alive client, queries interleaved); "
        "sql = in-process medians of the page's SELECT, the COUNT, the page's verification",
        f"{'db':<9}{'models':>8}  {'query':<11}{'total':>8}{'items':>6}"
        f"{'p50':>8}{'p99':>8}{'mean':>8}{'max':>8}{'sql list':>10}{'count':>8}{'verify':>8}",
    ]
    for db, figures in results["databases"].items():
        for size, row in figures["sizes"].items():
            for name, v in row["lists"].items():
                sql = row["sql"][name]
                lines.append(
                    f"{db:<9}{size:>8,}  {name:<11}{v['total']:>8,}{v['items']:>6}"
                    f"{v['p50_ms']:>8.2f}{v['p99_ms']:>8.2f}{v['mean_ms']:>8.2f}{v['max_ms']:>8.1f}"
                    f"{sql['list_ms']:>10.2f}{sql['count_ms']:>8.2f}{sql['verify_ms']:>8.2f}"
                )
    lines += [
        "",
        "Start-up (s): python -m service to the first 200 of /readyz; in a fresh process, "
        "imports and build_services(Settings()); populating (sign / artifacts / insert)",
        f"{'db':<9}{'models':>8}{'readyz':>9}{'runs':>20}{'imports':>9}{'build':>8}"
        f"{'sweep':>8}{'populate':>10}  {'sign/artifacts/insert/vacuum':<30}{'db MB':>8}",
    ]
    for db, figures in results["databases"].items():
        for size, row in figures["sizes"].items():
            s, pop = row["startup"], row["populate"]
            runs = " ".join(f"{x:.2f}" for x in s["readyz_seconds"])
            parts = "/".join(
                f"{pop[k]:.1f}" for k in ("sign", "artifacts", "insert", "vacuum_analyze")
            )
            lines.append(
                f"{db:<9}{size:>8,}{s['readyz_median_seconds']:>9.2f}{runs:>20}"
                f"{statistics.median(s['import_seconds']):>9.2f}"
                f"{s['build_services_median_seconds']:>8.3f}{row['sweep_seconds']:>8.2f}"
                f"{pop['seconds']:>10.1f}  {parts:<30}{pop['database_bytes'] / 2**20:>8.0f}"
            )
    create = results.get("create")
    if create and create["servers"]:
        lines += [
            "",
            f"POST /v1/models, 20 points, gaussian_mixture k=2: {create['rounds']} rounds of "
            f"{create['creates_per_round']} per server, taking turns {create['block']} at a "
            "time, order rotating (ms)",
            f"{'server':<34}{'median':>8}{'p99':>8}{'mean':>8}  {'round medians':<20}"
            f"{'start-up s':>10}",
        ]
        for name, v in create["servers"].items():
            rounds = " ".join(f"{x:.1f}" for x in v["round_medians_ms"])
            lines.append(
                f"{name:<34}{v['median_ms']:>8.2f}{v['p99_ms']:>8.2f}{v['mean_ms']:>8.2f}  "
                f"{rounds:<20}{v['readyz_seconds']:>10.2f}"
            )
    largest = (
        max(int(s) for f in results["databases"].values() for s in f["sizes"])
        if results["databases"]
        else None
    )
    if largest is not None:
        lines += ["", f"Plans at {largest:,} models"]
        for db, figures in results["databases"].items():
            for name, sql in figures["sizes"][largest]["sql"].items():
                for statement in sql["statements"]:
                    head = "COUNT" if "count(" in statement["sql"].lower() else "page"
                    lines.append(f"  {db} {name} {head}: " + compact_plan(statement["plan"]))
    lines += ["", "Goals"]
    for goal in results["goals"]:
        verdict = ("PASS" if goal["pass"] else "FAIL") if goal["applies"] else "info"
        lines.append(f"  {verdict}  {goal['goal']}: {goal['value']}")
    lines.append(f"\nwall time {results['wall_seconds']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
