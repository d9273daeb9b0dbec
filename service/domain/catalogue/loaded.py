"""Stored models held in memory, ready to answer: this worker's cache of loaded models.

A hit costs no read, no signature check and no unpickling. Whether the model is still
stored (it may have been deleted through another worker or replica) is asked of the
store at most once every ``recheck_seconds`` per model: a hit within that time of the
last answer reads nothing at all, so ``ready`` lets a small request be answered on
the event loop whatever the store (local disk, S3, PostgreSQL), and a hit past it
asks the store again, off the loop.

How late a delete made elsewhere is seen: a request that starts more than
``recheck_seconds`` after the delete committed is answered 404. Each confirmation
counts from the moment its ``exists`` (or load) started, which came before the
delete, so the bound holds whatever the store's latency. A delete through this
worker is seen at once (``forget``).

A model in use is asked about again before its confirmation runs out: the first
``ready`` in the second half of it hands one ``exists`` to a thread of its own. So
under steady traffic no request waits for the store, and none is sent the slow way
because sixteen requests in flight all found the confirmation expired at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from service.caching import Deadlines, LockedLRU
from service.domain.records import Bundle, ModelResource
from service.errors import NotFound
from service.ids import check_id
from service.store.base import ModelStore

log = logging.getLogger("service.models")


@dataclass(frozen=True)
class LoadedModel:
    """A stored model ready to answer: its resource, its bundle, its compiled form.

    ``resource`` is as it was when loaded, kept current by renames made through this
    worker; another worker's rename is seen by whatever reads the metadata afresh.
    The fitted fields, which prediction uses, never change.
    """

    resource: ModelResource
    bundle: Bundle
    compiled: Any


class LoadedModels:
    """The ``size`` most recently used models of ``store``, compiled by ``compile``,
    each known to be stored for ``recheck_seconds`` after the store last said so
    (0: the store is asked at every use)."""

    def __init__(
        self,
        store: ModelStore,
        *,
        size: int,
        read_resource: Callable[[str], ModelResource],
        compile: Callable[[Any], Any],
        recheck_seconds: float,
    ) -> None:
        self._store = store
        self._cache: LockedLRU[str, LoadedModel] = LockedLRU(size)
        self._read_resource = read_resource
        self._compile = compile
        self._recheck = recheck_seconds
        #: Until when each cached model is known to be stored.
        self._confirmed: Deadlines[str] = Deadlines(size)
        #: Asks the store ahead of a confirmation's end (``ready``), one model at a time.
        self._rechecker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gmm-recheck")
        self._rechecking: set[str] = set()
        self._rechecking_lock = threading.Lock()

    @property
    def hits(self) -> int:
        return self._cache.hits

    @property
    def misses(self) -> int:
        return self._cache.misses

    def get(self, model_id: str) -> LoadedModel:
        """From memory when it can be (the store asked at most once per
        ``recheck_seconds``), else read and verified."""
        check_id(model_id)
        hit = self._cache.get(model_id)
        if hit is not None:
            if self._still_stored(model_id):
                return hit
            raise NotFound(f"No model with id {model_id!r}.")
        started = time.monotonic()
        resource = self._read_resource(model_id)
        bundle = self._store.load(model_id)
        loaded = LoadedModel(resource, bundle, self._compile(bundle["estimator"]))
        self._cache.put(model_id, loaded)
        self._confirmed.set(model_id, started + self._recheck)
        return loaded

    def cached(self, model_id: str) -> LoadedModel | None:
        """The cached copy if it is still stored, else None (no load)."""
        hit = self._cache.peek(model_id)
        if hit is None or not self._still_stored(model_id):
            return None
        return hit

    def _still_stored(self, model_id: str) -> bool:
        """Whether a cached model is still stored: known within ``recheck_seconds`` of
        the store's last answer, else asked again. A model gone is dropped from memory."""
        if self._confirmed.valid(model_id):
            return True
        started = time.monotonic()
        if self._store.exists(model_id):
            self._confirmed.set(model_id, started + self._recheck)
            return True
        self.forget(model_id)
        return False

    def ready(self, model_id: str) -> LoadedModel | None:
        """The model when ``get(model_id)`` would read nothing at all (it is in memory
        and known to be stored), else None: what lets a small request be answered on
        the event loop, with any store. Never waits: in the second half of the
        confirmation it hands the next ``exists`` to the rechecking thread."""
        deadline = self._confirmed.get(model_id)
        if deadline is None:
            return None
        hit = self._cache.peek(model_id)
        if hit is None:
            return None
        if deadline - time.monotonic() < self._recheck / 2:
            self._recheck_soon(model_id)
        return hit

    def _recheck_soon(self, model_id: str) -> None:
        with self._rechecking_lock:
            if model_id in self._rechecking:
                return
            self._rechecking.add(model_id)
        try:
            self._rechecker.submit(self._recheck_now, model_id)
        except RuntimeError:  # shut down: the confirmation runs out, requests ask inline
            with self._rechecking_lock:
                self._rechecking.discard(model_id)

    def _recheck_now(self, model_id: str) -> None:
        """In the rechecking thread: confirm the model again, or drop it if it is gone.
        A store that fails is left to the next request's own check to report."""
        try:
            started = time.monotonic()
            if self._store.exists(model_id):
                self._confirmed.set(model_id, started + self._recheck)
            else:
                self.forget(model_id)
        except Exception:
            log.warning("could not confirm that model %s is still stored", model_id, exc_info=True)
        finally:
            with self._rechecking_lock:
                self._rechecking.discard(model_id)

    def close(self) -> None:
        """Stop the rechecking thread (a check under way ends on its own)."""
        self._rechecker.shutdown(wait=False, cancel_futures=True)

    def renamed(self, model_id: str, resource: ModelResource) -> None:
        self._cache.replace(model_id, lambda hit: replace(hit, resource=resource))

    def forget(self, model_id: str) -> None:
        self._cache.pop(model_id)
        self._confirmed.discard(model_id)
