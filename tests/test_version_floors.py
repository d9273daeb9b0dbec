"""pyproject.toml's floors are the versions CI tests as the oldest (``.ci/run``)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINNED = ("scikit-learn", "numpy", "scipy")


def _release(version: str) -> tuple[int, ...]:
    """1.26 and 1.26.0 are the same release."""
    parts = [int(p) for p in version.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def test_oldest_constraints_pin_pyprojects_floors() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    floors = {}
    for requirement in project["project"]["dependencies"]:
        # scikit-learn also has an upper bound (its private names, sklearn_compat.py).
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)(?:,<[0-9.]+)?", requirement)
        if match and match[1] in PINNED:
            floors[match[1]] = _release(match[2])
    pins = {}
    for line in (ROOT / ".ci" / "oldest-constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = _release(version)
    assert set(floors) == set(pins) == set(PINNED)
    assert floors == pins, "pyproject.toml's floors and .ci/oldest-constraints.txt disagree"
    assert "oldest-constraints.txt" in (ROOT / ".ci" / "run").read_text()
