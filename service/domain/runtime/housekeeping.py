"""Chores that keep the store tidy, run on one daemon thread per worker process.

A chore is a callable answering how many things it removed; one that fails is
logged and tried again at the next round, never the end of the thread. Rounds start
at once (a store left untidy by a crash is tidied without waiting a whole interval)
and then every ``interval`` seconds; ``close`` stops the thread between chores.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger("service.housekeeping")


class Housekeeping:
    def __init__(self, interval: float, chores: Sequence[tuple[str, Callable[[], int]]]) -> None:
        self.interval = interval
        self.chores = list(chores)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gmm-housekeeping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run_once(self) -> dict[str, int]:
        """One round of every chore: what each removed (-1 where it failed)."""
        done: dict[str, int] = {}
        for name, chore in self.chores:
            if self._stop.is_set():
                break
            try:
                done[name] = chore()
            except Exception:
                log.warning(
                    "housekeeping chore %s failed; it runs again next round", name, exc_info=True
                )
                done[name] = -1
            else:
                if done[name]:
                    log.info("housekeeping: %s removed %d", name, done[name])
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
