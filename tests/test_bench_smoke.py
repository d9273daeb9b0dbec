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

from bench import catalogue, run

pytestmark = pytest.mark.slow


def test_bench_runs_end_to_end_at_toy_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _shared_reference()
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


def test_catalogue_bench_runs_at_toy_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench/catalogue.py at 60 and 300 models: SQLite, and PostgreSQL when its server
    programs are installed; the version before the database in a worktree of its own."""
    output = tmp_path / "catalogue.json"
    worktree = tmp_path / "old"
    argv = [
        *("--quick", "--sizes", "60,300", "--requests", "5", "--warmup", "1"),
        *("--creates", "4", "--block", "2", "--rounds", "1", "--sql-repeats", "2"),
        *("--old-worktree", str(worktree), "--json", str(output)),
    ]

    catalogue.main(argv)

    results = json.loads(output.read_text())
    assert "sqlite" in results["databases"]
    for figures in results["databases"].values():
        for size in (60, 300):
            row = figures["sizes"][str(size)]
            # The filters find exactly the models the bench made for them.
            expected = {
                "unfiltered": size,
                "name": 1 if size > 7 else 0,  # unique names: sensor-7 is one model
                "tag": sum(1 for i in range(size) if i % 20 == 3),
                "algorithm": sum(1 for i in range(size) if i % 3 == 1),
            }
            for name, total in expected.items():
                lists = row["lists"][name]
                assert lists["total"] == total
                assert lists["p99_ms"] >= lists["p50_ms"] > 0
                assert row["sql"][name]["statements"], "the plans must be on record"
            assert row["startup"]["readyz_median_seconds"] > 0
    servers = results["create"]["servers"]
    assert servers["this, sqlite, empty"]["median_ms"] > 0
    if "old" not in results["skipped"]:  # a checkout without git history has no old version
        assert any(name.startswith("before") for name in servers)
    assert not worktree.exists(), "the old version's worktree must be removed"
    assert results["goals"]
    assert "Goals" in capsys.readouterr().out


def _shared_reference() -> None:
    from bench.run import SHARED_REFERENCE
    from tests.conftest import missing

    if not SHARED_REFERENCE.is_file():
        missing(f"the shared reference app {SHARED_REFERENCE} is not there")


def test_predict_wrk_runs_at_toy_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    """The five servers, every case measured, every answer sklearn's, the goals printed."""
    from bench import predict_wrk
    from tests.conftest import require_executable

    require_executable("wrk", "apt-get install wrk")
    _shared_reference()
    results = predict_wrk.main(["--duration", "1", "--rounds", "1", "--points", "1", "2"])
    assert results["same_answers"] is True
    for case in results["cases"]:
        for name in (
            "reference",
            "service",
            "service, API keys",
            "service, unpinned",
            "service, 2 workers",
        ):
            assert case[name]["rps"] > 0 and case[name]["non_2xx"] == 0
    table = capsys.readouterr().out
    assert "the reference (goal >= 2.0x)" in table
    assert "one worker unpinned (goal >= 1.5x)" in table


def test_v2_infer_runs_at_toy_sizes() -> None:
    from bench import v2_infer
    from tests.conftest import require_executable

    require_executable("wrk", "apt-get install wrk")
    results = v2_infer.main(["--duration", "1", "--rounds", "1", "--points", "1"])
    assert results["same_answers"] is True
    for name in ("v1", "v2 binary", "v2 JSON"):
        assert results["cases"][0][name]["rps"] > 0
        assert results["cases"][0][name]["non_2xx"] == 0


def test_predict_large_runs_at_toy_sizes() -> None:
    from bench import predict_large

    results = predict_large.main(["--samples", "20000", "--repeats", "1"])
    assert results["same_model"] is True
    assert results["labels_mismatches"] == 0
    assert results["memory"]["npy_growth_bytes"] >= 0
    assert all(seconds > 0 for seconds in results["medians_s"].values())


def test_asgi_cost_runs_at_toy_sizes() -> None:
    from bench import asgi_cost

    _shared_reference()
    results = asgi_cost.main(["--requests", "200", "--batch", "100", "--points", "1"])
    assert all(us > 0 for us in results["cases"][0]["us_per_request"].values())
