"""Stored models held in memory, ready to answer: this worker's cache of loaded models.

A hit costs no read, no signature check and no unpickling: only the store's cheap
``exists`` (so that a model deleted through another worker or replica is never
served). On a store whose ``exists`` is a network call (S3), that check must not run
on the event loop, so ``ready`` tells the caller whether a request may be answered
inline: only for a store that answers ``exists`` from local disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from service.caching import LockedLRU
from service.domain.records import Bundle, ModelResource
from service.errors import NotFound
from service.ids import check_id
from service.store.base import ModelStore


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
    """The ``size`` most recently used models of ``store``, compiled by ``compile``."""

    def __init__(
        self,
        store: ModelStore,
        *,
        size: int,
        read_resource: Callable[[str], ModelResource],
        compile: Callable[[Any], Any],
    ) -> None:
        self._store = store
        self._cache: LockedLRU[str, LoadedModel] = LockedLRU(size)
        self._read_resource = read_resource
        self._compile = compile
        #: Whether ``exists`` is a local file check, cheap enough for the event loop.
        self._local = store.local_io

    @property
    def hits(self) -> int:
        return self._cache.hits

    @property
    def misses(self) -> int:
        return self._cache.misses

    def get(self, model_id: str) -> LoadedModel:
        """From memory when it can be (after one ``exists``), else read and verified."""
        check_id(model_id)
        hit = self._cache.get(model_id)
        if hit is not None:
            if self._store.exists(model_id):
                return hit
            self._cache.pop(model_id)
            raise NotFound(f"No model with id {model_id!r}.")
        resource = self._read_resource(model_id)
        bundle = self._store.load(model_id)
        loaded = LoadedModel(resource, bundle, self._compile(bundle["estimator"]))
        self._cache.put(model_id, loaded)
        return loaded

    def cached(self, model_id: str) -> LoadedModel | None:
        """The cached copy if it is still stored, else None (no load)."""
        hit = self._cache.peek(model_id)
        if hit is None:
            return None
        if self._store.exists(model_id):
            return hit
        self._cache.pop(model_id)
        return None

    def ready(self, model_id: str) -> bool:
        """Whether ``get(model_id)`` would do no network or disk read beyond a local
        ``exists``: what lets a small request be answered on the event loop."""
        return self._local and model_id in self._cache

    def renamed(self, model_id: str, resource: ModelResource) -> None:
        self._cache.replace(model_id, lambda hit: replace(hit, resource=resource))

    def forget(self, model_id: str) -> None:
        self._cache.pop(model_id)
