"""``LoadedModels``: a cached model is known to be stored for ``recheck_seconds`` after
the store last said so. Within it a hit reads nothing; past it the store is asked
again; a delete made elsewhere is seen at most that late, one made here at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.cluster import KMeans

from service.domain.catalogue.loaded import LoadedModels
from service.errors import NotFound
from service.ids import new_model_id
from service.store import IndexedStore
from tests.helpers_store import local_store

RECHECK = 0.5


class CountingStore:
    """The real store, counting the calls to ``exists``."""

    def __init__(self, store: IndexedStore) -> None:
        self._store = store
        self.exists_calls = 0

    def exists(self, model_id: str) -> bool:
        self.exists_calls += 1
        return self._store.exists(model_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _stored_model(store: IndexedStore) -> str:
    X = np.random.RandomState(0).normal(size=(30, 2))
    model_id = new_model_id()
    store.put(model_id, {"estimator": KMeans(2, n_init=1, random_state=0).fit(X)}, {})
    return model_id


@pytest.fixture
def make_loaded() -> Iterator[Callable[..., LoadedModels]]:
    """``make_loaded(store, recheck_seconds=RECHECK)``; each one closed at the end."""
    made: list[LoadedModels] = []

    def make(store: Any, recheck_seconds: float = RECHECK) -> LoadedModels:
        loaded = LoadedModels(
            store,
            size=4,
            read_resource=lambda model_id: {"id": model_id},  # type: ignore[arg-type, return-value]
            compile=lambda estimator: estimator,
            recheck_seconds=recheck_seconds,
        )
        made.append(loaded)
        return loaded

    yield make
    for loaded in made:
        loaded.close()


@pytest.fixture
def stores(tmp_path: Path) -> tuple[CountingStore, IndexedStore]:
    """This worker's store (counted) and another replica's, over one store folder."""
    return (
        CountingStore(local_store(tmp_path, secret_key="k")),
        local_store(tmp_path, secret_key="k"),
    )


def test_hits_within_the_recheck_time_read_nothing_then_the_store_is_asked_again(
    stores: tuple[CountingStore, IndexedStore], make_loaded: Callable[..., LoadedModels]
) -> None:
    mine, _ = stores
    model_id = _stored_model(mine._store)
    loaded = make_loaded(mine)
    assert not loaded.ready(model_id)
    first = loaded.get(model_id)  # the load itself counts as the store's answer
    for _ in range(50):
        assert loaded.ready(model_id)
        assert loaded.get(model_id) is first
        assert loaded.cached(model_id) is first
    assert mine.exists_calls == 0
    time.sleep(RECHECK + 0.05)
    assert not loaded.ready(model_id)
    assert loaded.get(model_id) is first
    assert mine.exists_calls == 1
    assert loaded.ready(model_id)


def test_a_delete_elsewhere_is_seen_within_the_recheck_time(
    stores: tuple[CountingStore, IndexedStore], make_loaded: Callable[..., LoadedModels]
) -> None:
    mine, replica = stores
    model_id = _stored_model(replica)
    loaded = make_loaded(mine)
    loaded.get(model_id)
    deleted_at = time.monotonic()
    replica.delete(model_id)
    while time.monotonic() - deleted_at <= RECHECK:  # may still be answered meanwhile
        try:
            loaded.get(model_id)
        except NotFound:
            break
        time.sleep(0.01)
    for _ in range(3):
        with pytest.raises(NotFound):
            loaded.get(model_id)
    assert not loaded.ready(model_id)
    assert loaded.cached(model_id) is None


def test_a_delete_here_is_seen_at_once(
    stores: tuple[CountingStore, IndexedStore], make_loaded: Callable[..., LoadedModels]
) -> None:
    mine, _ = stores
    model_id = _stored_model(mine._store)
    loaded = make_loaded(mine, recheck_seconds=60)
    loaded.get(model_id)
    mine._store.delete(model_id)
    loaded.forget(model_id)  # what Catalogue.delete does after the store's delete
    assert not loaded.ready(model_id)
    with pytest.raises(NotFound):
        loaded.get(model_id)


def test_zero_asks_the_store_at_every_use_and_is_never_ready(
    stores: tuple[CountingStore, IndexedStore], make_loaded: Callable[..., LoadedModels]
) -> None:
    mine, _ = stores
    model_id = _stored_model(mine._store)
    loaded = make_loaded(mine, recheck_seconds=0)
    loaded.get(model_id)
    for n in range(1, 4):
        assert not loaded.ready(model_id)
        loaded.get(model_id)
        assert mine.exists_calls == n


def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_model_in_use_is_confirmed_again_before_its_time_runs_out(
    stores: tuple[CountingStore, IndexedStore], make_loaded: Callable[..., LoadedModels]
) -> None:
    """In the second half of its confirmation, ``ready`` hands one ``exists`` to a
    thread: traffic never finds the confirmation expired, and never waits for it."""
    mine, _ = stores
    model_id = _stored_model(mine._store)
    loaded = make_loaded(mine)
    loaded.get(model_id)
    assert loaded.ready(model_id) and mine.exists_calls == 0  # first half: nothing
    time.sleep(RECHECK * 0.6)
    for _ in range(20):  # many requests, one check
        assert loaded.ready(model_id)
    _until(lambda: mine.exists_calls == 1)
    time.sleep(RECHECK * 0.5)  # past the first confirmation's end
    assert loaded.ready(model_id)
    assert mine.exists_calls == 1


def test_a_recheck_ahead_drops_a_model_deleted_elsewhere(
    stores: tuple[CountingStore, IndexedStore], make_loaded: Callable[..., LoadedModels]
) -> None:
    mine, replica = stores
    model_id = _stored_model(replica)
    loaded = make_loaded(mine)
    loaded.get(model_id)
    replica.delete(model_id)
    time.sleep(RECHECK * 0.6)
    assert loaded.ready(model_id)  # still within the bound; the recheck is under way
    _until(lambda: not loaded.ready(model_id))
    with pytest.raises(NotFound):
        loaded.get(model_id)
