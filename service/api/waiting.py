"""How long a request that starts work waits for it: the body's ``wait``, else RFC 7240's
``Prefer`` header, else ``GMM_SYNC_WAIT_SECONDS``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header

from service.domain.jobs.service import Waiting

#: The longest ``Prefer: wait=N`` honoured (the bound of ``GMM_SYNC_WAIT_SECONDS``).
MAX_PREFER_WAIT = 3600.0

PreferHeader = Annotated[
    str | None,
    Header(
        description=(
            "RFC 7240. `respond-async`: answer 202 with the job at once. `wait=N`: wait up "
            "to N seconds for the work (instead of GMM_SYNC_WAIT_SECONDS), then 202. A "
            "`wait` in the body wins over this header."
        ),
        examples=["respond-async", "wait=5"],
    ),
]


def waiting_of(wait: bool | None, prefer: str | None, default_seconds: float) -> Waiting:
    """``wait: true`` waits without bound, ``wait: false`` answers at once; unset, the
    ``Prefer`` preferences decide, and without them the default bound. Preferences a
    server does not know are ignored, as RFC 7240 asks."""
    if wait is True:
        return Waiting.now()
    if wait is False:
        return Waiting.later()
    seconds = default_seconds
    for preference in (prefer or "").split(","):
        token, _, value = preference.split(";")[0].strip().partition("=")
        token = token.strip().lower()
        if token == "respond-async":
            return Waiting.later()
        if token == "wait":
            try:
                seconds = min(float(value.strip().strip('"')), MAX_PREFER_WAIT)
            except ValueError:
                continue
    return Waiting.within(seconds)
