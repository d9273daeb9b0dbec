"""Start-up stays light: the app imports no plotting library until a plot is asked for."""

from __future__ import annotations

import subprocess
import sys


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
