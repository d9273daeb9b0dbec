"""Start-up stays light (no plotting library until a plot is asked for) and does the
one-time work that must not happen while requests and fits run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import service
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


def test_importing_the_app_module_does_no_work(tmp_path: Path) -> None:
    """``import service.main`` reads no settings, ``.env`` or keys file and builds no
    app: servers call ``create_app`` (``uvicorn --factory``), so a tool that only
    imports the module (export_openapi, a test, a linter plugin) is not broken by the
    environment it happens to run in."""
    (tmp_path / ".env").write_text("GMM_API_KEYS_FILE=/nonexistent/keys\n")
    code = (
        "import gc\n"
        "from fastapi import FastAPI\n"
        "import service.main\n"
        "assert not hasattr(service.main, 'app'), 'service.main.app exists'\n"
        "apps = [o for o in gc.get_objects() if isinstance(o, FastAPI)]\n"
        "assert apps == [], apps\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GMM_")}
    env.update({"GMM_PORT": "notanumber", "GMM_STORE_DIR": str(tmp_path / "store")})
    # This checkout's package, whatever the cwd (a .env is read from there).
    root = str(Path(service.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (tmp_path / "store").exists()


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
