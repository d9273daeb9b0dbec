"""``service.caching``: ``LockedLRU`` and ``Deadlines``, on their own."""

from __future__ import annotations

import threading
import time

from service.caching import Deadlines, LockedLRU


def test_least_recently_used_goes_first_and_reads_refresh() -> None:
    cache: LockedLRU[str, int] = LockedLRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # now "b" is the oldest
    cache.put("c", 3)
    assert "b" not in cache
    assert (cache.peek("a"), cache.peek("c")) == (1, 3)
    assert (cache.hits, cache.misses) == (1, 0)
    assert cache.get("b") is None
    assert cache.misses == 1


def test_size_zero_keeps_nothing_and_load_still_answers() -> None:
    cache: LockedLRU[str, int] = LockedLRU(0)
    assert cache.get_or_load("a", lambda: 7) == 7
    assert len(cache) == 0


def test_replace_changes_only_a_cached_entry_and_pop_is_forgiving() -> None:
    cache: LockedLRU[str, int] = LockedLRU(2)
    cache.replace("a", lambda v: v + 1)
    assert "a" not in cache
    cache.put("a", 1)
    cache.replace("a", lambda v: v + 1)
    assert cache.peek("a") == 2
    cache.pop("a")
    cache.pop("a")
    assert len(cache) == 0


def test_threads_reading_loading_and_popping_never_raise() -> None:
    cache: LockedLRU[int, int] = LockedLRU(3)
    errors: list[BaseException] = []

    def churn(seed: int) -> None:
        try:
            for i in range(5_000):
                key = (i * 7 + seed) % 11
                assert cache.get_or_load(key, lambda k=key: k * 2) == key * 2
                if i % 5 == 0:
                    cache.pop((key + 1) % 11)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache) <= 3


def test_a_deadline_holds_until_it_passes_and_one_already_past_is_not_kept() -> None:
    deadlines: Deadlines[str] = Deadlines(2)
    now = time.monotonic()
    deadlines.set("a", now + 0.2)
    deadlines.set("b", now - 1)
    assert deadlines.valid("a") and not deadlines.valid("b")
    deadlines.set("a", now - 1)  # set again with a past deadline: no longer valid
    assert not deadlines.valid("a")
    deadlines.set("a", now + 0.2)
    time.sleep(0.25)
    assert not deadlines.valid("a")


def test_deadlines_keep_at_most_maxsize_keys_and_discard_is_forgiving() -> None:
    deadlines: Deadlines[int] = Deadlines(2)
    later = time.monotonic() + 60
    for key in range(3):
        deadlines.set(key, later)
    assert [deadlines.valid(k) for k in range(3)] == [False, True, True]
    deadlines.discard(1)
    deadlines.discard(1)
    assert not deadlines.valid(1)
