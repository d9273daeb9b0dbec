#!/usr/bin/env python3
"""Write the app's OpenAPI document to ``openapi/openapi.json``, or check it is current.

The committed copy lets reviewers see an API change in a diff and lets client
generators work without a running server; ``--check`` is what CI runs so the copy
cannot silently drift from the code.

Usage::

    python scripts/export_openapi.py           # rewrite openapi/openapi.json
    python scripts/export_openapi.py --check   # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "openapi" / "openapi.json"
_HOW_TO_FIX = "Run `make openapi` (or `python scripts/export_openapi.py`) and commit the result."


def build_spec() -> dict[str, Any]:
    """The spec exactly as the running service serves it at ``/openapi.json``.

    The routes and schemas do not depend on settings values, so the environment
    this runs in cannot change the document.
    """
    from service.config import Settings
    from service.main import create_app

    spec: dict[str, Any] = create_app(Settings()).openapi()
    return spec


def render(spec: dict[str, Any]) -> str:
    """Deterministic text: stable key order (as FastAPI builds it), 2-space indent, LF."""
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the committed file differs from the app's spec",
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="default: openapi/openapi.json"
    )
    args = parser.parse_args(argv)
    output: Path = args.output
    if args.check:
        if not output.exists():
            print(f"{output} is missing. {_HOW_TO_FIX}", file=sys.stderr)
            return 1
        if output.read_text(encoding="utf-8") != render(build_spec()):
            print(
                f"{output} is stale: the app's OpenAPI spec changed. {_HOW_TO_FIX}", file=sys.stderr
            )
            return 1
        print(f"{output} is up to date.")
        return 0
    text = render(build_spec())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
