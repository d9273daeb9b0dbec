"""The cache of loaded models under load: more models than it holds, and threads that
predict, rename and delete at once against a real server. Zero 5xx.

A hand-written ``OrderedDict`` LRU once answered 500 here (``KeyError`` from
``move_to_end`` after another thread evicted the entry): ``service.caching`` is the
one cache now, and this keeps it honest.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers_server import running_server

pytestmark = pytest.mark.slow

N_MODELS = 40
N_THREADS = 16
SECONDS = 10.0
#: Deletes pick among the first models only: the others answer 200 to the end, however
#: many requests the server gets through (a fast one deleted every model in seconds,
#: and the run was then mostly 404s).
DOOMED = N_MODELS // 4


def test_predict_rename_delete_at_random_never_answers_5xx(tmp_path: Path) -> None:
    env = {
        "GMM_STORE_DIR": str(tmp_path / "store"),
        "GMM_SECRET_KEY": "stress",
        "GMM_CACHE_SIZE": "2",
        "GMM_LOG_JSON": "false",
    }
    with running_server(env, cwd=tmp_path) as server:
        ids = []
        for i in range(N_MODELS):
            r = server.client.post(
                "/v1/models",
                json={
                    "algorithm": "kmeans",
                    "params": {"n_clusters": 2, "n_init": 1, "random_state": i},
                    "data": {"points": [[0, 0], [0, 1], [5, 5], [5, 6], [float(i), 2.0]]},
                    "include": [],
                    "wait": True,
                },
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        statuses: list[int] = []
        failures: list[str] = []
        lock = threading.Lock()
        deadline = time.monotonic() + SECONDS

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(base_url=server.base_url, timeout=30.0) as http:
                while time.monotonic() < deadline:
                    model_id = rng.choice(ids)
                    roll = rng.random()
                    try:
                        if roll < 0.8:
                            r = http.post(
                                f"/v1/models/{model_id}/predict", json={"points": [[1.0, 2.0]]}
                            )
                        elif roll < 0.97:
                            r = http.patch(
                                f"/v1/models/{model_id}", json={"name": f"n{rng.random()}"}
                            )
                        else:
                            r = http.delete(f"/v1/models/{rng.choice(ids[:DOOMED])}")
                    except httpx.HTTPError as exc:  # a reset connection counts as a failure
                        with lock:
                            failures.append(repr(exc))
                        continue
                    with lock:
                        statuses.append(r.status_code)
                        if r.status_code >= 500:
                            failures.append(r.text)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(N_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures[:5]
        assert len(statuses) > 500, "the load generator barely ran"
        assert set(statuses) <= {200, 204, 404}, sorted(set(statuses))
        # Deletes empty the pool as the run goes on; the models left are still served.
        assert statuses.count(200) > 200
