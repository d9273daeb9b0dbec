"""The benchmarks at toy sizes, so their code paths cannot rot between real runs.

Starts the real service and the minimal reference app (two uvicorn processes), so
it is slow; the figures themselves are not checked, only that every measurement
ran, compared equal work, and was written down.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import run

pytestmark = pytest.mark.slow


def test_bench_runs_end_to_end_at_toy_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "latest.json"
    argv = [
        *("--n-samples", "400", "--n-features", "3", "--n-components", "2"),
        *("--repeats", "1", "--concurrency", "2", "--duration", "0.4"),
        *("--warmup", "0", "--rounds", "1", "--output", str(output)),
    ]

    run.main(argv)

    results = json.loads(output.read_text())
    fit = results["fit"]
    # The ratio is only meaningful when the service fitted exactly what sklearn fitted.
    assert fit["matches_sklearn"] is True
    assert fit["sklearn_seconds"]["median"] > 0
    assert fit["validation_probe_seconds"]["median"] > 0
    for variant in ("include=[]", "default include"):
        median = fit["service"][variant]["median"]
        assert median["total"] >= median["request"] >= median["fit_seconds"] > 0
        assert math.isfinite(fit["service"][variant]["ratio_to_sklearn"])
    pred = results["predict"]
    assert pred["same_answers"] is True
    for server in ("minimal", "service"):
        assert pred[server]["errors"] == 0
        assert pred[server]["requests"] > 0
        assert pred[server]["p99_ms"] >= pred[server]["p50_ms"] > 0
    assert pred["ratio_service_to_minimal"] > 0
    assert results["machine"]["threadpools"], "the BLAS in use must be on record"
    table = capsys.readouterr().out
    assert "ratio service/minimal" in table
    assert "kernel=" in table
