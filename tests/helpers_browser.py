"""Debian's Chromium for the browser tests, and when a missing one is a failure.

Playwright drives ``/usr/bin/chromium`` (never ``playwright install``, which downloads
a browser). Where either is missing the browser tests skip, except in CI (``CI`` set),
where it is a failure: ``.ci/run`` installs both (tests/conftest.py's ``require``).
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import require, require_executable

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
    """Skip the calling test without Playwright or Chromium; fail instead under CI."""
    require("playwright.sync_api", "pip install playwright, part of the dev extras")
    require_executable(CHROMIUM, "apt-get install chromium")
