"""The soak of ``bench/soak.py``, short: 32 clients for ~10 s against a real server.

The 60 s run is a benchmark (``bench/soak.py``); this bounded one keeps its code
working and holds the promises that do not depend on the machine: no 5xx, no
connection error, no lost model, dataset or job, no 4xx to well-formed requests, no
2xx that contradicts the contract, and every kind of request of the mix answered as
it should at least once. The server's model cache holds fewer models than the
clients predict with, so predictions also load models from the store. Memory growth
is bounded loosely here (a 10 s run on a shared machine is noisy); the bench reports
it against the 10 % goal.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench import soak
from tests.helpers_server import running_server

pytestmark = pytest.mark.slow

CACHE_SIZE = 8
POOL_SIZE = 24

#: Each kind of request and the answers that count as its success.
SUCCESS = {
    "predict": (200,),
    "get": (200,),
    "create": (201,),
    "delete": (204,),
    "patch": (200,),
    "upload": (201,),
    "upload-again": (200,),
    "dataset-delete": (204,),
    "fit-dataset": (201,),
    "fit-async": (202,),
    "cancel": (200, 202),
    "job-delete": (204,),
}


def test_32_clients_mixing_every_kind_of_request(tmp_path: Path) -> None:
    env = {
        "GMM_STORE_DIR": str(tmp_path / "store"),
        "GMM_SECRET_KEY": "soak-key",
        "GMM_CACHE_SIZE": str(CACHE_SIZE),
    }
    with running_server(env, cwd=tmp_path) as server:
        result = asyncio.run(
            soak.run_soak(
                server.base_url,
                pid=server.proc.pid,
                duration=10.0,
                clients=32,
                warmup=3.0,
                pool_size=POOL_SIZE,
                cache_size=CACHE_SIZE,
            )
        )
    report = soak.format_report(result)
    print("\n" + report)
    failure = f"{report}\nserver log (tail):\n{server.log()[-6000:]}"

    assert result["errors"] == 0, failure
    assert result["lost_models"] == [], failure
    assert result["lost_datasets"] == [], failure
    assert result["lost_jobs"] == [], failure
    assert result["unexpected_4xx"] == 0, failure
    assert result["wrong_answers"] == 0, failure
    statuses = result["statuses"]
    # Every kind of request really ran, and succeeded at least once.
    for op, ok in SUCCESS.items():
        assert sum(statuses.get(f"{op} {status}", 0) for status in ok) > 0, (op, statuses)
    assert result["predict"]["p99_ms"] >= result["predict"]["p50_ms"] > 0
    # More loads than models predicted with: the cache evicted models and loaded them again.
    cache = result["cache"]
    assert cache["misses"] > 2 * cache["models_predicted"], cache
    assert result["rss_kb"]["growth_percent"] < 50.0, result["rss_kb"]
