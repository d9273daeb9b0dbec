"""No synchronous store I/O on the event loop: with the S3 store or the local one,
predictions on a cached model (v1 and v2) never call the store from the loop's thread.

A store's call on the loop blocks every other request for its round trip. The
recording store below notes each call made while an event loop runs in the calling
thread, which is true only on the loop itself (threadpool threads run none).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service import services as services_module
from service.config import Settings
from service.main import create_app
from tests.conftest import SEED_FIT


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class RecordingStore:
    """Passes every call to the real store, and notes those made on the event loop."""

    def __init__(self, store: Any, on_loop: list[str]) -> None:
        self._store = store
        self._on_loop = on_loop

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            if _on_event_loop():
                self._on_loop.append(name)
            return value(*args, **kwargs)

        return call


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    on_loop: list[str] = []
    real = services_module.open_store
    monkeypatch.setattr(
        services_module, "open_store", lambda **kw: RecordingStore(real(**kw), on_loop)
    )
    return on_loop


def _predict_three_ways(c: TestClient, model_id: str) -> None:
    for _ in range(3):  # the first load, then cache hits
        r = c.post(f"/v1/models/{model_id}/predict", json={"points": [[0, 0]]})
        assert r.status_code == 200, r.text
        r = c.post(f"/v1/models/{model_id}/score", json={"points": [[0, 0]]})
        assert r.status_code == 200, r.text
        infer = {"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP64",
                             "data": [0.0, 0.0]}]}  # fmt: skip
        r = c.post(f"/v2/models/{model_id}/infer", json=infer)
        assert r.status_code == 200, r.text


def test_cached_predictions_on_s3_never_call_the_store_on_the_loop(
    recorded: list[str], moto_url: str, s3_bucket: str, tmp_path: Path
) -> None:
    settings = Settings(
        store_dir=tmp_path / "unused",
        store_url=f"s3://{s3_bucket}/gmm",
        s3_endpoint_url=moto_url,
        secret_key="k",
    )
    with TestClient(create_app(settings)) as c:
        model = c.post("/v1/models", json={**SEED_FIT, "wait": True}).json()
        _predict_three_ways(c, model["id"])
    assert recorded == []


@pytest.mark.parametrize("recheck_seconds", [0.5, 0.0])
def test_cached_predictions_on_the_local_store_never_call_it_on_the_loop(
    recorded: list[str], tmp_path: Path, recheck_seconds: float
) -> None:
    """Not even SQLite's 2 us ``exists``: within GMM_MODEL_RECHECK_SECONDS a hit reads
    nothing, and past it (0: at every prediction) the store is asked in the threadpool."""
    settings = Settings(
        store_dir=tmp_path / "store", secret_key="k", model_recheck_seconds=recheck_seconds
    )
    with TestClient(create_app(settings)) as c:
        model = c.post("/v1/models", json={**SEED_FIT, "wait": True}).json()
        _predict_three_ways(c, model["id"])
    assert recorded == []


def test_the_recorder_does_see_calls_on_the_loop(recorded: list[str], tmp_path: Path) -> None:
    """A store call made on the loop is recorded: the tests above can fail."""
    settings = Settings(store_dir=tmp_path / "store", secret_key="k")
    with TestClient(create_app(settings)) as c:
        model = c.post("/v1/models", json={**SEED_FIT, "wait": True}).json()
        store = c.app.state.services.store  # type: ignore[attr-defined]

        async def on_the_loop() -> bool:
            return bool(store.exists(model["id"]))

        assert asyncio.run(on_the_loop())
    assert recorded == ["exists"]
