"""Crash consistency: ``SIGKILL`` the real server while clients create and delete models.

A store test can stop a writer at a chosen line; only a real process killed at a
moment nobody chose shows that every path (fit, write, rename, delete, the answer
on the wire) keeps the promise: what was answered 201 survives whole, what was
answered 204 stays gone, nothing half-written is ever visible, a restart removes
whatever the killed process left in ``tmp/``, and the sweeper removes every artifact
left without a row in the catalogue (a put killed before its commit, a delete killed
after it)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.store.base import array_sha256
from service.store.signing import ARTIFACT, DATA
from tests.helpers_server import ServerProcess, start_servers

pytestmark = pytest.mark.slow

SECRET = "crash-test-key"
#: The kill schedule (6 kills with this seed); another seed gives another schedule.
SEED = int(os.environ.get("CRASH_TEST_SEED", "20240618"))
N_FEATURES = 4
CLIENTS = 4


@dataclass
class Ledger:
    """What the clients were told, shared by their threads (guarded by ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    created: set[str] = field(default_factory=set)  # answered 201
    deleted: set[str] = field(default_factory=set)  # answered 204
    delete_unanswered: set[str] = field(default_factory=set)  # the kill ate the answer
    lost_on_delete: list[str] = field(default_factory=list)  # 201'd, then a delete said 404
    creates_unanswered: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # 5xx bodies

    def note(self, op: str, response: httpx.Response) -> None:
        with self.lock:
            self.statuses[f"{op} {response.status_code}"] += 1
            if response.status_code >= 500:
                self.server_errors.append(f"{op}: {response.status_code} {response.text[:300]}")


class Current:
    """The base URL of the server alive right now (None while it is down)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._url: str | None = None

    def set(self, url: str | None) -> None:
        with self._lock:
            self._url = url

    def get(self) -> str | None:
        with self._lock:
            return self._url


def _fit_body(rng: random.Random) -> dict[str, Any]:
    """A small fit whose stored artifact still takes a few writes and fsyncs to land."""
    data = {
        "generator": {
            "kind": "blobs",
            "n_samples": rng.randint(500, 2000),
            "n_features": N_FEATURES,
            "centers": 3,
            "random_state": rng.randrange(1_000_000),
        }
    }
    if rng.random() < 0.5:
        params: dict[str, Any] = {"n_clusters": 3, "n_init": 1, "random_state": 0}
        return {"algorithm": "kmeans", "params": params, "data": data, "include": []}
    params = {"n_components": 2, "max_iter": 20, "random_state": 0}
    return {"algorithm": "gaussian_mixture", "params": params, "data": data, "include": []}


def _client_loop(seed: int, current: Current, ledger: Ledger, stop: threading.Event) -> None:
    """Create models and delete some of its own, until ``stop``; never retries blindly."""
    rng = random.Random(seed)
    mine: list[str] = []  # 201'd by this client, no delete sent yet
    with httpx.Client(timeout=30.0) as http:
        while not stop.is_set():
            base = current.get()
            if base is None:
                time.sleep(0.02)
                continue
            if mine and rng.random() < 0.4:
                model_id = mine.pop(rng.randrange(len(mine)))
                try:
                    r = http.delete(f"{base}/v1/models/{model_id}")
                except httpx.TransportError:
                    with ledger.lock:
                        ledger.delete_unanswered.add(model_id)
                    time.sleep(0.02)
                    continue
                ledger.note("delete", r)
                with ledger.lock:
                    if r.status_code == 204:
                        ledger.deleted.add(model_id)
                    elif r.status_code == 404:
                        ledger.lost_on_delete.append(model_id)
                continue
            try:
                r = http.post(f"{base}/v1/models", json=_fit_body(rng))
            except httpx.TransportError:
                with ledger.lock:
                    ledger.creates_unanswered += 1
                time.sleep(0.02)
                continue
            ledger.note("create", r)
            if r.status_code == 201:
                model_id = r.json()["id"]
                mine.append(model_id)
                with ledger.lock:
                    ledger.created.add(model_id)


def _start(env: dict[str, str], cwd: Path) -> ServerProcess:
    (server,) = start_servers([env], cwd=cwd)
    return server


def _kill(server: ServerProcess) -> None:
    """SIGKILL the whole process group: no shutdown hook, no finally block runs."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=10)
    server.stop()  # closes its client; the process is already gone


def _all_listed(http: httpx.Client) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        r = http.get("/v1/models", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        ids.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def _rows(store: Path) -> dict[str, dict[str, Any]]:
    """The catalogue's models: ``{id: stored document}``."""
    with contextlib.closing(sqlite3.connect(store / "catalogue.db")) as conn:
        rows = conn.execute("SELECT id, document FROM models").fetchall()
    return {model_id: json.loads(document) for model_id, document in rows}


def _assert_whole_on_disk(folder: Path, meta: dict[str, Any]) -> None:
    """Every file there, the artifact exactly the bytes its row describes, and the
    training points (linked from their dataset) exactly the array it names."""
    expected = [ARTIFACT] + ([DATA] if meta.get("points") else [])
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected), folder
    blob = (folder / ARTIFACT).read_bytes()
    assert meta["id"] == folder.name
    assert meta["artifact"]["bytes"] == len(blob)
    assert meta["artifact"]["sha256"] == hashlib.sha256(blob).hexdigest()
    if meta.get("points"):
        points = np.load(folder / DATA, allow_pickle=False)
        assert array_sha256(points) == meta["points"]["sha256"]


def _assert_serves(http: httpx.Client, model_id: str) -> None:
    """GET reads the signed metadata; predict loads (verifies, unpickles) the artifact."""
    r = http.get(f"/v1/models/{model_id}")
    assert r.status_code == 200, r.text
    width = r.json()["n_features"]
    r = http.post(f"/v1/models/{model_id}/predict", json={"points": [[0.5] * width] * 3})
    assert r.status_code == 200, r.text
    assert len(r.json()["labels"]) == 3


def test_sigkill_at_random_moments_loses_nothing_and_leaves_nothing_half_written(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    env = {"GMM_STORE_DIR": str(store), "GMM_SECRET_KEY": SECRET}
    rng = random.Random(SEED)
    n_kills = rng.randint(5, 8)  # the last one included: it ends the load
    ledger = Ledger()
    current = Current()
    stop = threading.Event()
    leftovers_seen = 0  # tmp/ entries a killed process left for the next start to remove

    server = _start(env, tmp_path)
    current.set(server.base_url)
    threads = [
        threading.Thread(target=_client_loop, args=(SEED + i, current, ledger, stop), daemon=True)
        for i in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    kills = 0
    try:
        for _ in range(n_kills - 1):
            time.sleep(rng.uniform(0.2, 1.5))
            current.set(None)
            _kill(server)
            kills += 1
            left = sorted(p.name for p in (store / "tmp").iterdir())
            leftovers_seen += len(left)
            server = _start(env, tmp_path)
            # The store is opened before the server answers: the dead one's leftovers are gone.
            still_there = [name for name in left if (store / "tmp" / name).exists()]
            assert still_there == [], f"a restart kept a killed process's leftovers: {still_there}"
            current.set(server.base_url)
        # One last kill with the clients still running, then a quiet restart to inspect.
        time.sleep(rng.uniform(0.2, 1.5))
        current.set(None)
        _kill(server)
        kills += 1
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        server.stop()

    left = sorted(p.name for p in (store / "tmp").iterdir())
    leftovers_seen += len(left)
    # Quiet now: the sweeper may take any artifact without a row at once.
    quiet = {**env, "GMM_ORPHAN_GRACE_SECONDS": "1", "GMM_SWEEP_INTERVAL_SECONDS": "0.2"}
    orphans_left = sorted({p.name for p in (store / "models").iterdir()} - set(_rows(store)))
    time.sleep(1.0)  # older than the grace
    server = _start(quiet, tmp_path)
    try:
        assert list((store / "tmp").iterdir()) == [], "a start must remove every leftover"
        http = server.client
        rows = _rows(store)
        folders = sorted(rows)
        for name in folders:  # listed means whole: never a row without its artifact
            _assert_whole_on_disk(store / "models" / name, rows[name])
            _assert_serves(http, name)
        assert sorted(_all_listed(http)) == folders
        deadline = time.monotonic() + 20
        while {p.name for p in (store / "models").iterdir()} != set(folders):
            assert time.monotonic() < deadline, "orphan artifacts linger after the sweep"
            time.sleep(0.1)

        assert ledger.server_errors == []
        assert ledger.lost_on_delete == []
        answered_alive = ledger.created - ledger.deleted - ledger.delete_unanswered
        missing = sorted(answered_alive - set(folders))
        assert missing == [], f"models answered 201 were lost: {missing}"
        back = sorted(ledger.deleted & set(folders))
        assert back == [], f"models answered 204 came back: {back}"
        for model_id in sorted(ledger.deleted)[:20]:
            assert http.get(f"/v1/models/{model_id}").status_code == 404
        # The run must have exercised both writes and deletes to mean anything.
        assert ledger.created, ledger.statuses
        assert ledger.deleted, ledger.statuses
    finally:
        server.stop()

    print(
        f"\ncrash test: kills survived {kills}; 201 {len(ledger.created)}, "
        f"204 {len(ledger.deleted)}, creates unanswered {ledger.creates_unanswered}, "
        f"deletes unanswered {len(ledger.delete_unanswered)}, models at the end "
        f"{len(folders)}, tmp leftovers removed at restarts {leftovers_seen}, orphan "
        f"artifacts swept {len(orphans_left)}; "
        f"statuses {dict(sorted(ledger.statuses.items()))}"
    )
