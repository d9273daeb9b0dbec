"""Chores that keep the store tidy, run on one daemon thread per worker process.

A chore is a callable answering how many things it removed, run every so many
seconds of its own; one that fails is logged and tried again at its next turn, never
the end of the thread. Each first runs after a delay of its own: expiries at once (a
store left untidy by a restart is tidied without waiting a whole interval), a chore
that walks the whole store after the start is over (it would hold the GIL while the
service opens); ``close`` stops the thread between chores.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger("service.housekeeping")


class Housekeeping:
    def __init__(
        self,
        chores: Sequence[tuple[str, Callable[[], int], float]],
        *,
        first_delays: dict[str, float] | None = None,
    ) -> None:
        self.chores = list(chores)
        start = time.monotonic()
        self._due = {name: start + (first_delays or {}).get(name, 0.0) for name, _, _ in chores}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gmm-housekeeping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run_once(self) -> dict[str, int]:
        """Every chore once, now: what each removed (-1 where it failed)."""
        return {name: self._run_chore(name, chore) for name, chore, _ in self.chores}

    def _run_chore(self, name: str, chore: Callable[[], int]) -> int:
        try:
            removed = chore()
        except Exception:
            log.warning(
                "housekeeping chore %s failed; it runs again next turn", name, exc_info=True
            )
            return -1
        if removed:
            log.info("housekeeping: %s removed %d", name, removed)
        return removed

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            due = [c for c in self.chores if self._due[c[0]] <= now]
            for name, chore, every in due:
                if self._stop.is_set():
                    return
                self._run_chore(name, chore)
                self._due[name] = time.monotonic() + every
            self._stop.wait(max(0.05, min(self._due.values()) - time.monotonic()))

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
