"""The fit queue: a busy slot means waiting in line, and only a full line means 429."""

from __future__ import annotations

import threading
import time

import pytest

from service.domain.runtime.executor import FitSlots
from service.errors import Busy


def _hold_in_thread(slots: FitSlots, release: threading.Event, out: list[str]) -> threading.Thread:
    def run() -> None:
        try:
            with slots.hold():
                out.append("in")
                release.wait(10)
        except Busy:
            out.append("busy")

    t = threading.Thread(target=run)
    t.start()
    return t


def _until(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.005)
    assert cond(), "condition never held"  # type: ignore[operator]


def test_a_full_slot_queues_and_a_full_queue_answers_429() -> None:
    slots = FitSlots(1, queue_length=2, queue_seconds=10)
    release = threading.Event()
    out: list[str] = []
    holder = _hold_in_thread(slots, release, out)
    _until(lambda: out == ["in"])
    queued = [_hold_in_thread(slots, release, out) for _ in range(2)]
    _until(lambda: slots.waiting == 2)
    with pytest.raises(Busy) as info, slots.hold():
        pass
    assert info.value.headers["Retry-After"] == "2"
    assert "GMM_FIT_QUEUE_LENGTH" in info.value.detail
    release.set()
    for t in (holder, *queued):
        t.join(10)
    assert out == ["in", "in", "in"]  # every queued request got its turn
    assert slots.waiting == 0
    with slots.hold():  # and the slot is free again
        pass


def test_a_wait_past_the_limit_answers_429() -> None:
    slots = FitSlots(1, queue_length=5, queue_seconds=0.2)
    release = threading.Event()
    out: list[str] = []
    holder = _hold_in_thread(slots, release, out)
    _until(lambda: out == ["in"])
    start = time.monotonic()
    with pytest.raises(Busy) as info, slots.hold():
        pass
    assert 0.15 < time.monotonic() - start < 5
    assert "GMM_FIT_QUEUE_SECONDS" in info.value.detail
    assert int(info.value.headers["Retry-After"]) >= 1
    assert slots.waiting == 0
    release.set()
    holder.join(10)


def test_no_queue_answers_429_at_once() -> None:
    slots = FitSlots(1)
    release = threading.Event()
    out: list[str] = []
    holder = _hold_in_thread(slots, release, out)
    _until(lambda: out == ["in"])
    start = time.monotonic()
    with pytest.raises(Busy), slots.hold():
        pass
    assert time.monotonic() - start < 0.5
    release.set()
    holder.join(10)


def test_waiters_are_served_first_come_first_served() -> None:
    slots = FitSlots(1, queue_length=10, queue_seconds=10)
    order: list[int] = []
    gate = threading.Event()
    slots.acquire()

    def run(i: int) -> None:
        with slots.hold():
            order.append(i)
            gate.wait(0.01)

    threads = []
    for i in range(5):
        t = threading.Thread(target=run, args=(i,))
        t.start()
        threads.append(t)
        _until(lambda n=i + 1: slots.waiting == n)
    slots.release()
    for t in threads:
        t.join(10)
    assert order == list(range(5))
