"""Start-up stays light (no plotting library until a plot is asked for) and does the
one-time work that must not happen while requests and fits run."""

from __future__ import annotations

import re
import subprocess
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app


def test_building_the_app_does_not_import_matplotlib() -> None:
    code = (
        "import sys\n"
        "from service.main import create_app\n"
        "create_app()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_no_request_swaps_the_warning_filters_once_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fit captures its warnings while requests are served on other threads. FastAPI
    builds its routing state inside ``warnings.catch_warnings()`` on a router's first
    request, which swaps the process-wide filters under the fit (a ConvergenceWarning
    then became an exception in a job). Start-up builds it, so requests never do."""
    entered: list[str] = []
    enter = warnings.catch_warnings.__enter__

    def counting_enter(self: warnings.catch_warnings) -> Any:
        entered.append("".join(traceback.format_stack(limit=4)))
        return enter(self)

    paths = create_app().openapi()["paths"]
    assert len(paths) > 10
    app = create_app(Settings(store_dir=tmp_path / "store", secret_key="k"))
    with TestClient(app) as c:
        monkeypatch.setattr(warnings.catch_warnings, "__enter__", counting_enter)
        for path, operations in sorted(paths.items()):
            for method in operations:
                c.request(method, re.sub(r"\{[a-z_]+\}", "0" * 32, path), json={})
            c.get("/nowhere")
            c.put(path)  # a 405
    assert entered == []
