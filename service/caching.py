"""The caches every cache of the service uses: cachetools' ``LRUCache`` behind a lock,
and ``Deadlines``, the keys known to hold until a time of their own.

Hand-written ``OrderedDict`` caches read an entry under the lock, let go of it, and
then ``move_to_end`` it under the lock again: another thread may evict the entry in
between, and ``move_to_end`` raises ``KeyError`` (that was a 500 under load). Here
every read that refreshes recency is one call under one lock, and a load runs outside
the lock so that one slow load (an S3 read, an unpickle) never blocks the hits of
other keys.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from cachetools import LRUCache

K = TypeVar("K")
V = TypeVar("V")


class LockedLRU(Generic[K, V]):
    """At most ``maxsize`` entries, least recently used out first; ``maxsize`` 0 keeps none.

    Thread-safe. ``get_or_load`` may run ``load`` twice for one key when two threads
    miss at once; both get a correct value and the later one stays. That is cheaper
    than a lock per key for the loads this service caches (idempotent reads).
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: LRUCache[K, V] = LRUCache(maxsize=max(maxsize, 1))
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        """The entry (now the most recently used), or None; counts a hit or a miss."""
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
            return value

    def peek(self, key: K) -> V | None:
        """The entry without touching its recency or the counts."""
        with self._lock:
            return self._entries.get(key) if key in self._entries else None

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def put(self, key: K, value: V) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._entries[key] = value

    def get_or_load(self, key: K, load: Callable[[], V]) -> V:
        value = self.get(key)
        if value is None:
            value = load()
            self.put(key, value)
        return value

    def replace(self, key: K, change: Callable[[V], V]) -> None:
        """``change`` the entry if it is cached, atomically; nothing otherwise."""
        with self._lock:
            if key in self._entries:
                self._entries[key] = change(self._entries[key])

    def pop(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)


class Deadlines(Generic[K]):
    """Keys that each hold until a deadline of their own (``time.monotonic`` seconds),
    at most ``maxsize`` of them, those set longest ago out first. Thread-safe: a read
    takes no lock (one dict lookup and one clock read), a write does.

    What lets a fact checked in a thread a moment ago (a model is still stored) stand
    in for asking again, on the event loop, several times a request. A dict rather than
    cachetools' ``TLRUCache``, whose lookup (a timer object, a linked list, a heap,
    behind a lock) took 1.8 us against 0.1 us here, measured on the 2-core machine;
    a one-point predict looks four times, out of about 100 us in all. The bound is
    kept when a set passes it: first the deadlines already passed go, then the
    earliest set.
    """

    def __init__(self, maxsize: int) -> None:
        self._maxsize = max(maxsize, 1)
        self._entries: dict[K, float] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> float | None:
        """``key``'s deadline while it has not passed, else None."""
        deadline = self._entries.get(key)
        return deadline if deadline is not None and time.monotonic() < deadline else None

    def valid(self, key: K) -> bool:
        """Whether ``key`` was set with a deadline that has not passed yet."""
        return self.get(key) is not None

    def set(self, key: K, deadline: float) -> None:
        """Hold ``key`` until ``deadline``; a deadline already past removes it."""
        with self._lock:
            self._entries.pop(key, None)  # insertion order stays the order of sets
            if deadline <= time.monotonic():
                return
            self._entries[key] = deadline
            if len(self._entries) > self._maxsize:
                now = time.monotonic()
                for passed in [k for k, d in self._entries.items() if d <= now]:
                    del self._entries[passed]
                while len(self._entries) > self._maxsize:
                    del self._entries[next(iter(self._entries))]

    def discard(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)
