"""Debian's Chromium for the browser tests, and when a missing one is a failure.

Playwright drives ``/usr/bin/chromium`` (never ``playwright install``, which downloads
a browser). Where it is missing the browser tests skip, except in CI (``CI`` set),
where a missing browser is a failure: ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> None:
    """Skip the calling test without Chromium; fail instead under CI."""
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: CI must run the browser test (.ci/run installs it)")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); CI runs this test")
