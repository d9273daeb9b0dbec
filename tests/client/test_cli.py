"""The ``gmm`` command against a real server: every command, its output, its exit codes.

Commands run in-process through typer's ``CliRunner`` (with ``GMM_URL`` set, as a
user's shell would), and once as the installed console script in a subprocess.
Numbers are compared with scikit-learn fitted in-process on the same data.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from click.testing import Result
from gmm_client import Client
from gmm_client.cli import EXIT_CODES, app, exit_code_for, parse_k
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture
from typer.testing import CliRunner

from tests.client.test_client import assert_onnx_answers_as
from tests.conftest import require
from tests.helpers_server import ServerProcess

UNKNOWN_ID = "0" * 28


def blobs(seed: int = 10, n: int = 200) -> np.ndarray:
    X, _ = make_blobs(n_samples=n, n_features=2, centers=4, cluster_std=1.6, random_state=seed)
    return X


def write_csv(path: Path, X: np.ndarray, *, header: bool = True) -> Path:
    """Every digit, so the service fits exactly the array sklearn fits here."""
    np.savetxt(path, X, fmt="%.17g", delimiter=",", header="x,y" if header else "", comments="")
    if not header:  # savetxt writes an empty first line for header=""
        path.write_text(path.read_text().lstrip("\n"))
    return path


@pytest.fixture
def gmm_cli(live_server: ServerProcess):  # type: ignore[no-untyped-def]
    """``gmm_cli("fit", ...)`` runs the command in-process against the live server."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(
            app,
            list(args),
            input=input,
            env={"GMM_URL": live_server.base_url, "GMM_API_KEY": "", **(env or {})},
        )

    return run


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result


# -- fit -------------------------------------------------------------------------------


def test_fit_csv_with_header_equals_sklearn_and_shows_progress(gmm_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    X = blobs()
    csv = write_csv(tmp_path / "blobs.csv", X)
    result = ok(gmm_cli("--json", "fit", str(csv), "--k", "4", "--random-state", "0"))
    model = json.loads(result.stdout)
    ref = GaussianMixture(4, random_state=0).fit(X)
    np.testing.assert_array_equal(model["means"], ref.means_)
    np.testing.assert_array_equal(model["weights"], ref.weights_)
    assert model["n_samples"] == 200 and model["n_features"] == 2
    # the job's bar went to stderr, not into the JSON on stdout
    assert "fit succeeded" in result.stderr and "iterations" in result.stderr


def test_fit_npy_kmeans_and_its_table(gmm_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    X = blobs(seed=3)
    np.save(tmp_path / "X.npy", X)
    args = ["fit", str(tmp_path / "X.npy"), "--algorithm", "kmeans", "--k", "4"]
    args += ["--random-state", "0", "--n-init", "1", "--no-progress"]
    result = ok(gmm_cli("--json", *args))
    model = json.loads(result.stdout)
    ref = KMeans(4, random_state=0, n_init=1).fit(X)
    np.testing.assert_array_equal(model["means"], ref.cluster_centers_)
    assert model["inertia"] == pytest.approx(ref.inertia_, rel=1e-12)
    assert result.stderr == ""  # --no-progress

    table = ok(gmm_cli(*args, "--name", "km-table")).stdout
    for word in ("model id", "kmeans", "inertia", "n_iter", "fit seconds", "mean"):
        assert word in table
    assert "BIC" not in table


def test_fit_mixture_table_has_bic_aic_and_components(gmm_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    np.save(tmp_path / "X.npy", blobs())
    result = ok(gmm_cli("fit", str(tmp_path / "X.npy"), "--k", "4", "--random-state", "0"))
    for word in ("BIC", "AIC", "converged", "lower bound", "weight", "components"):
        assert word in result.stdout
    ref = GaussianMixture(4, random_state=0).fit(blobs())
    assert f"{ref.weights_[0]:.4f}" in result.stdout


def test_fit_csv_on_stdin_without_header_and_params(gmm_cli) -> None:  # type: ignore[no-untyped-def]
    X = blobs(seed=5)
    text = "\n".join(",".join(f"{v:.17g}" for v in row) for row in X)
    args = ["--json", "fit", "-", "--no-header", "--k", "3", "--covariance-type", "diag"]
    args += ["--max-iter", "50", "--param", "tol=1e-4", "--param", "init_params=random"]
    args += ["--random-state", "1", "--no-progress"]
    model = json.loads(ok(gmm_cli(*args, input=text)).stdout)
    ref = GaussianMixture(
        3, covariance_type="diag", max_iter=50, tol=1e-4, init_params="random", random_state=1
    ).fit(X)
    np.testing.assert_array_equal(model["means"], ref.means_)
    assert model["params"]["init_params"] == "random"


def test_csv_header_rule_is_the_services(gmm_cli, gmm: Client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The CLI sends the CSV as it is (text/csv); the service's header rule decides."""

    def fitted(text: str, *flags: str) -> dict[str, Any]:
        (tmp_path / "h.csv").write_text(text)
        args = ["--json", "fit", str(tmp_path / "h.csv"), "--algorithm", "kmeans", "--k", "1"]
        return json.loads(ok(gmm_cli(*args, "--n-init", "1", "--no-progress", *flags)).stdout)

    assert fitted("a,b\n1,2\n3,4\n")["n_samples"] == 2  # detected
    assert fitted("1,2\n3,4\n")["n_samples"] == 2
    assert fitted("\n1,2\n", "--no-header")["n_samples"] == 1
    told = fitted("1,2\n3,4\n", "--header")
    assert told["n_samples"] == 1 and told["means"] == [[3.0, 4.0]]
    # stored by the service under the file's name; the first two files hold the same
    # points, which are one dataset
    named = [d for d in gmm.list_datasets(limit=1000)["items"] if d.get("name") == "h.csv"]
    assert sorted(d["n_samples"] for d in named) == [1, 1, 2]


def test_a_bad_csv_row_is_reported_as_the_service_numbers_it(
    gmm_cli, live_server: ServerProcess, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # line 6 of the file; the service counts rows from 0 after the header, skipping
    # the blank line: row 3, column 1
    text = "x,y\n1,2\n3,4\n\n5,6\n7,oops\n8,9\n"
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    server = live_server.client.post(
        "/v1/datasets", content=text.encode(), headers={"Content-Type": "text/csv"}
    )
    assert server.status_code == 422
    detail = server.json()["detail"]
    assert detail.startswith("row 3, column 1: 'oops' is not a number")
    assert server.json()["errors"][0]["loc"] == ["body", 3, 1]

    for args, source, stdin in (
        (["fit", str(csv), "--k", "2"], str(csv), None),
        (["select", str(csv), "--k", "1..2"], str(csv), None),
        (["fit", "-", "--k", "2"], "stdin", text),
    ):
        result = gmm_cli(*args, input=stdin)
        assert result.exit_code == 2, (args, result.stderr)
        assert f"Invalid input: {source}: {detail}" in result.stderr
        # The field error (body.3.1) says what the detail says: it is not repeated.
        assert result.stderr.count("row 3, column 1") == 1, result.stderr

    np.save(tmp_path / "X.npy", blobs())
    args = ["--json", "fit", str(tmp_path / "X.npy"), "--k", "2", "--no-progress"]
    model_id = json.loads(ok(gmm_cli(*args)).stdout)["id"]
    predicted = gmm_cli("predict", model_id, str(csv))
    assert predicted.exit_code == 2
    assert f"Invalid input: {csv}: {detail}" in predicted.stderr
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2\n\n3,4,5\n")
    for command in (["fit", str(ragged), "--k", "1"], ["predict", model_id, str(ragged)]):
        result = gmm_cli(*command)
        assert result.exit_code == 2
        assert "row 1 has 3 values, expected 2" in result.stderr


def test_predict_on_csv_leaves_no_dataset_behind(gmm_cli, gmm: Client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    X = blobs(seed=21) - 300.0  # points no other test stores
    np.save(tmp_path / "X.npy", X)
    args = ["--json", "fit", str(tmp_path / "X.npy"), "--k", "3", "--random-state", "0"]
    model_id = json.loads(ok(gmm_cli(*args, "--no-progress")).stdout)["id"]
    ref = GaussianMixture(3, random_state=0).fit(X)
    before = gmm.list_datasets(limit=1000)["total"]
    new = write_csv(tmp_path / "new.csv", X[::-1])  # not stored yet: stored, then deleted
    labels = ok(gmm_cli("predict", model_id, str(new))).stdout
    np.testing.assert_array_equal(np.loadtxt(labels.splitlines(), dtype=int), ref.predict(X[::-1]))
    assert gmm.list_datasets(limit=1000)["total"] == before
    stored = write_csv(tmp_path / "stored.csv", X)  # the training points: stored already
    ok(gmm_cli("predict", model_id, str(stored), "-o", str(tmp_path / "l.npy")))
    np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), ref.predict(X))
    assert gmm.list_datasets(limit=1000)["total"] == before  # and still there


# -- predict -----------------------------------------------------------------------------


def test_predict_to_csv_npy_and_json_equals_sklearn(gmm_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    X = blobs()
    np.save(tmp_path / "X.npy", X)
    csv = write_csv(tmp_path / "X.csv", X)
    name = "predict-by-name"
    fitted = ok(gmm_cli("--json", "fit", str(csv), "--k", "4", "--random-state", "0"))
    model_id = json.loads(fitted.stdout)["id"]
    ok(gmm_cli("fit", str(csv), "--k", "4", "--random-state", "0", "--name", name))
    ref = GaussianMixture(4, random_state=0).fit(X)

    stdout = ok(gmm_cli("predict", model_id, str(csv))).stdout  # stdout CSV
    np.testing.assert_array_equal(np.loadtxt(stdout.splitlines(), dtype=int), ref.predict(X))

    out = tmp_path / "labels.npy"
    ok(gmm_cli("predict", name, str(tmp_path / "X.npy"), "-o", str(out)))  # by name
    np.testing.assert_array_equal(np.load(out), ref.predict(X))

    out_csv = tmp_path / "proba.csv"
    ok(gmm_cli("predict", model_id, str(csv), "-o", str(out_csv), "--output", "probabilities"))
    proba = np.loadtxt(out_csv, delimiter=",")
    np.testing.assert_allclose(proba, ref.predict_proba(X), rtol=1e-12, atol=0)

    as_json = json.loads(ok(gmm_cli("--json", "predict", model_id, str(csv))).stdout)
    assert as_json["labels"] == ref.predict(X).tolist()

    bad = gmm_cli("predict", model_id, str(csv), "-o", str(tmp_path / "labels.txt"))
    assert bad.exit_code == 2 and ".npy" in bad.stderr


def test_predict_distances_of_kmeans(gmm_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    X = blobs(seed=7)
    np.save(tmp_path / "X.npy", X)
    args = ["fit", str(tmp_path / "X.npy"), "--algorithm", "kmeans", "--k", "4"]
    model = json.loads(ok(gmm_cli("--json", *args, "--random-state", "0")).stdout)
    out = tmp_path / "d.npy"
    ok(
        gmm_cli(
            "predict", model["id"], str(tmp_path / "X.npy"), "-o", str(out), "--output", "distances"
        )
    )
    ref = KMeans(4, random_state=0).fit(X)
    np.testing.assert_allclose(np.load(out), ref.transform(X), rtol=1e-12)


# -- models --------------------------------------------------------------------------------


def test_models_ls_show_rm(gmm_cli, gmm: Client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    np.save(tmp_path / "X.npy", blobs())
    name = "ls-show-rm"
    args = ["fit", str(tmp_path / "X.npy"), "--k", "2", "--name", name, "--no-progress"]
    first = json.loads(ok(gmm_cli("--json", *args)).stdout)["id"]
    newest = json.loads(ok(gmm_cli("--json", *args)).stdout)["id"]

    listed = json.loads(ok(gmm_cli("--json", "models", "ls", "--limit", "2")).stdout)
    assert [m["id"] for m in listed] == [newest, first]
    table = ok(gmm_cli("models", "ls")).stdout
    for word in ("id", "name", "algorithm", "n_samples", "created", newest, name):
        assert word in table

    shown = json.loads(ok(gmm_cli("--json", "models", "show", name)).stdout)
    assert shown["id"] == newest  # a name means the newest model with it
    assert newest in ok(gmm_cli("models", "show", newest)).stdout

    refused = gmm_cli("models", "rm", newest, input="n\n")
    assert refused.exit_code == 1 and gmm.get_model(newest)["id"] == newest
    ok(gmm_cli("models", "rm", newest, input="y\n"))
    ok(gmm_cli("models", "rm", name, "--yes"))  # the other one, now the newest of that name
    for model_id in (first, newest):
        gone = gmm_cli("models", "show", model_id)
        assert gone.exit_code == 3


def test_datasets_ls_rm(gmm_cli, gmm: Client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    X = blobs() + 500.0  # content no other test uploads
    dataset = gmm.create_dataset(X, name="cli-datasets")
    listed = json.loads(ok(gmm_cli("--json", "datasets", "ls", "--limit", "100")).stdout)
    assert dataset["id"] in [d["id"] for d in listed]
    assert "cli-datasets" in ok(gmm_cli("datasets", "ls", "--limit", "100")).stdout
    ok(gmm_cli("datasets", "rm", dataset["id"], "--yes"))
    assert gmm_cli("datasets", "rm", dataset["id"], "--yes").exit_code == 3


# -- select ---------------------------------------------------------------------------------


def test_select_marks_the_best_k_by_sklearn_bic(gmm_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    X = blobs()
    np.save(tmp_path / "X.npy", X)
    bics = {k: GaussianMixture(k, random_state=0).fit(X).bic(X) for k in range(1, 7)}
    best_k = min(bics, key=bics.__getitem__)

    result = ok(
        gmm_cli("--json", "select", str(tmp_path / "X.npy"), "--k", "1..6", "--random-state", "0")
    )
    body = json.loads(result.stdout)
    assert body["best"]["n_components"] == best_k
    for cell in body["scores"]:
        assert cell["bic"] == pytest.approx(bics[cell["n_components"]], rel=1e-9)
    assert "cells" in result.stderr  # the job's bar

    ks = ",".join(str(k) for k in range(1, 7))
    table = ok(gmm_cli("select", str(tmp_path / "X.npy"), "--k", ks, "--random-state", "0"))
    marked = [line for line in table.stdout.splitlines() if "*" in line]
    assert len(marked) == 1 and f" {best_k} " in marked[0]
    assert f"best: k={best_k} covariance_type=full" in table.stdout


def test_select_over_covariance_types_by_aic(gmm_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    X = blobs()
    np.save(tmp_path / "X.npy", X)
    args = ["--json", "select", str(tmp_path / "X.npy"), "--k", "2,4", "--criterion", "aic"]
    args += ["--covariance-type", "full,diag", "--random-state", "0", "--no-progress"]
    body = json.loads(ok(gmm_cli(*args)).stdout)
    aics = {
        (k, t): GaussianMixture(k, covariance_type=t, random_state=0).fit(X).aic(X)
        for k in (2, 4)
        for t in ("full", "diag")
    }
    best = min(aics, key=aics.__getitem__)
    assert (body["best"]["n_components"], body["best"]["covariance_type"]) == best


def test_k_ranges_and_lists() -> None:
    assert parse_k("1..10") == {"min": 1, "max": 10}
    assert parse_k("2,4,8") == [2, 4, 8]
    assert parse_k("3") == [3]


# -- plot, export, import ---------------------------------------------------------------------


def test_plot_png_and_svg(gmm_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    np.save(tmp_path / "X.npy", blobs())
    args = ["fit", str(tmp_path / "X.npy"), "--k", "3", "--no-progress"]
    model_id = json.loads(ok(gmm_cli("--json", *args)).stdout)["id"]
    png, svg = tmp_path / "m.png", tmp_path / "m.svg"
    ok(gmm_cli("plot", model_id, "-o", str(png)))
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    ok(gmm_cli("plot", model_id, "-o", str(svg), "--kind", "convergence"))
    assert b"<svg" in svg.read_bytes()[:2000]
    wrong = gmm_cli("plot", model_id, "-o", str(tmp_path / "m.gif"))
    assert wrong.exit_code == 2 and ".svg" in wrong.stderr


def test_export_then_import_round_trip(gmm_cli, gmm: Client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    np.save(tmp_path / "X.npy", blobs())
    args = ["fit", str(tmp_path / "X.npy"), "--k", "4", "--random-state", "0", "--no-progress"]
    model = json.loads(ok(gmm_cli("--json", *args)).stdout)
    document = tmp_path / "model.json"
    ok(gmm_cli("export", model["id"], "-o", str(document)))
    assert json.loads(document.read_text())
    new_id = ok(gmm_cli("import", str(document))).stdout.strip()
    assert new_id != model["id"]
    imported = gmm.get_model(new_id)
    np.testing.assert_array_equal(imported["means"], model["means"])
    np.testing.assert_array_equal(imported["covariances"], model["covariances"])
    X = blobs()
    np.testing.assert_array_equal(gmm.predict_npy(new_id, X), gmm.predict_npy(model["id"], X))
    stdout_doc = json.loads(ok(gmm_cli("export", model["id"])).stdout)
    assert stdout_doc == json.loads(document.read_text())


def test_models_export_onnx_to_a_file_or_stdout_and_json_as_gmm_export(  # type: ignore[no-untyped-def]
    gmm_cli, tmp_path: Path
) -> None:
    ort = require("onnxruntime", "pip install -e '.[dev]', which has the onnx extra")
    X = blobs()
    np.save(tmp_path / "X.npy", X)
    fit = ["fit", str(tmp_path / "X.npy"), "--k", "4", "--random-state", "0", "--no-progress"]
    model_id = json.loads(ok(gmm_cli("--json", *fit, "--name", "onnx-cli")).stdout)["id"]
    ref = GaussianMixture(4, random_state=0).fit(X)

    def check(content: bytes) -> None:
        assert_onnx_answers_as(ref, ort, content, X)

    path = tmp_path / "model.onnx"
    written = ok(gmm_cli("models", "export", model_id, "--format", "onnx", "-o", str(path)))
    assert written.stdout == f"wrote {path} ({path.stat().st_size} bytes)\n"
    check(path.read_bytes())
    # By name, to stdout (not a terminal here, as when redirected to a file).
    check(ok(gmm_cli("models", "export", "onnx-cli", "--format", "onnx")).stdout_bytes)
    described = ok(
        gmm_cli("--json", "models", "export", model_id, "--format", "onnx", "-o", str(path))
    )
    assert json.loads(described.stdout) == {
        "model_id": model_id,
        "format": "onnx",
        "path": str(path),
        "bytes": path.stat().st_size,
    }
    # --format json (the default) writes what `gmm export` writes.
    document = ok(gmm_cli("models", "export", model_id)).stdout
    assert document == ok(gmm_cli("export", model_id)).stdout
    assert json.loads(document)["format"] == "gmm-service.model"
    wrong = gmm_cli("models", "export", model_id, "--format", "pickle")
    assert wrong.exit_code == 2 and "json or onnx" in wrong.stderr
    missing = gmm_cli("models", "export", UNKNOWN_ID, "--format", "onnx", "-o", str(path))
    assert missing.exit_code == 3, missing.stderr


# -- errors ------------------------------------------------------------------------------------


def test_unknown_model_exits_3_with_the_problem_detail(gmm_cli) -> None:  # type: ignore[no-untyped-def]
    result = gmm_cli("models", "show", UNKNOWN_ID)
    assert result.exit_code == 3
    assert f"Not found: No model with id '{UNKNOWN_ID}'" in result.stderr
    by_name = gmm_cli("predict", "no-model-has-this-name", "-", input="1,2\n")
    assert by_name.exit_code == 3 and "no-model-has-this-name" in by_name.stderr


def test_bad_params_exit_2_naming_the_field(gmm_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    np.save(tmp_path / "X.npy", blobs())
    result = gmm_cli("fit", str(tmp_path / "X.npy"), "--k", "2", "--covariance-type", "round")
    assert result.exit_code == 2
    assert "body.params.covariance_type: Input should be" in result.stderr
    kmeans = gmm_cli("fit", str(tmp_path / "X.npy"), "--algorithm", "kmeans", "--param", "bogus=1")
    assert kmeans.exit_code == 2 and "params.bogus" in kmeans.stderr
    too_many = gmm_cli("fit", str(tmp_path / "X.npy"), "--k", "250", "--no-progress")
    assert too_many.exit_code == 2 and "n_components=250 needs at least" in too_many.stderr
    over_limit = gmm_cli("fit", str(tmp_path / "X.npy"), "--k", "500", "--no-progress")
    # A limit on the work asked for: a 422 naming the setting (a 413 is for sizes).
    assert over_limit.exit_code == 2 and "GMM_MAX_COMPONENTS" in over_limit.stderr


def test_bad_files_say_what_is_wrong(gmm_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = gmm_cli("fit", str(tmp_path / "nope.csv"), "--k", "2")
    assert missing.exit_code == 2 and "nope.csv: no such file" in missing.stderr

    (tmp_path / "cells.csv").write_text("1,2\n3,oops\n")
    cells = gmm_cli("fit", str(tmp_path / "cells.csv"), "--k", "2")
    assert cells.exit_code == 2
    assert "cells.csv: row 1, column 1: 'oops' is not a number" in cells.stderr

    (tmp_path / "ragged.csv").write_text("x,y\n1,2\n\n3,4,5\n")
    ragged = gmm_cli("fit", str(tmp_path / "ragged.csv"), "--k", "2")
    assert ragged.exit_code == 2
    assert "ragged.csv: row 1 has 3 values, expected 2" in ragged.stderr

    (tmp_path / "fake.npy").write_bytes(b"\x00\x01 not an npy file at all")
    fake = gmm_cli("fit", str(tmp_path / "fake.npy"), "--k", "2")
    assert fake.exit_code == 2 and "fake.npy: not a .npy file" in fake.stderr

    (tmp_path / "object.npy").write_bytes(b"")
    np.save(tmp_path / "object.npy", np.array([[object()]]), allow_pickle=True)
    objects = gmm_cli("fit", str(tmp_path / "object.npy"), "--k", "2")
    assert objects.exit_code == 2 and "allow_pickle=False" in objects.stderr

    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x01")
    binary = gmm_cli("fit", str(tmp_path / "binary.csv"), "--k", "2")
    assert binary.exit_code == 2 and "binary.csv: the CSV body is not UTF-8 text" in binary.stderr

    (tmp_path / "header-only.csv").write_text("x,y\n")
    empty = gmm_cli("fit", str(tmp_path / "header-only.csv"), "--k", "2")
    assert empty.exit_code == 2 and "no rows of numbers" in empty.stderr

    (tmp_path / "doc.json").write_text("{not json")
    document = gmm_cli("import", str(tmp_path / "doc.json"))
    assert document.exit_code == 2 and "not JSON" in document.stderr


def test_a_text_file_named_npy_is_called_text_not_a_pickle(gmm_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """numpy's load calls any file without its magic "pickled (object) data"."""
    write_csv(tmp_path / "points.npy", blobs())
    model = ok(gmm_cli("--json", "fit", str(write_csv(tmp_path / "X.csv", blobs())), "--k", "2"))
    model_id = json.loads(model.stdout)["id"]
    for args in (["fit", "points.npy", "--k", "2"], ["predict", model_id, "points.npy"]):
        args = [str(tmp_path / a) if a == "points.npy" else a for a in args]
        result = gmm_cli(*args)
        assert result.exit_code == 2, result.stderr
        assert "points.npy: not a .npy file but text" in result.stderr
        assert "name it .csv" in result.stderr and "pickle" not in result.stderr


def test_a_problem_is_printed_once(gmm_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The service's detail restates its first field error: the title and detail line
    says it, and the field errors print only what it does not."""
    np.save(tmp_path / "X.npy", blobs())
    fit = ["fit", str(tmp_path / "X.npy"), "--no-progress"]
    one = gmm_cli(*fit, "--param", "bogus=1")
    assert one.exit_code == 2
    assert one.stderr.count("Unknown field 'bogus'") == 1, one.stderr
    assert one.stderr.count("body.params.bogus") == 1, one.stderr
    # Two fields with one message: each named once, the second not taken for the first.
    two = gmm_cli(*fit, "--param", "n_init=a", "--param", "max_iter=b")
    assert two.exit_code == 2
    assert two.stderr.count("Input should be a valid integer") == 2, two.stderr
    assert two.stderr.count("body.params.n_init") == 1, two.stderr
    assert two.stderr.count("body.params.max_iter") == 1, two.stderr
    # A problem of the fit itself (no loc in its detail) is one line too.
    np.save(tmp_path / "few.npy", blobs()[:3])
    fitted = gmm_cli("fit", str(tmp_path / "few.npy"), "--k", "5", "--no-progress")
    assert fitted.exit_code == 2
    assert fitted.stderr.count("needs at least 5 samples") == 1, fitted.stderr
    assert len(fitted.stderr.strip().splitlines()) == 1, fitted.stderr


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of the ``gmm`` tree with its path (the root's is empty)."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


def _words(text: str) -> str:
    """``text`` as words: rich's panel borders gone, every run of spaces one space."""
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", text).split())


def test_help_shows_every_word_of_every_help_text() -> None:
    """rich markup ate ``[default: ...]`` ("a header ." for "a header [default: the
    service detects it]."), and typer gave flags a ``<bool>`` placeholder as if they
    took a value. Every option's and argument's help, as written, is in its command's
    help, and no flag has a placeholder."""
    runner = CliRunner()
    root = typer.main.get_command(app)
    checked = 0
    for path, command in _commands(root):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "400"})
        assert result.exit_code == 0, (path, result.output)
        shown = _words(result.stdout)
        # The help as its author wrote it: rich's escape of "[" undone.
        for param in command.params:
            written = _words((param.help or "").replace("\\[", "["))
            assert written in shown, (path, param.name, written, shown)
            checked += bool(written)
        assert "Show this message and exit." in shown
        assert "<bool>" not in shown, (path, result.stdout)
        for param in command.params:
            if getattr(param, "is_flag", False):
                flags = " ".join(param.opts + param.secondary_opts)
                assert not re.search(rf"{re.escape(flags)}\s+<", shown), (path, flags)
    assert checked > 30
    fit_help = _words(runner.invoke(app, ["fit", "--help"], env={"COLUMNS": "400"}).stdout)
    assert "Whether the CSV's first row is a header [default: the service detects it]." in fit_help
    predict_help = _words(runner.invoke(app, ["predict", "--help"], env={"COLUMNS": "400"}).stdout)
    assert "Write .csv or .npy here [default: stdout CSV]." in predict_help
    export_help = _words(runner.invoke(app, ["export", "--help"], env={"COLUMNS": "400"}).stdout)
    assert "[default: stdout]" in export_help


def test_usage_errors_keep_exit_2(gmm_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    np.save(tmp_path / "X.npy", blobs())
    assert gmm_cli("select", str(tmp_path / "X.npy"), "--k", "a..b").exit_code == 2
    assert gmm_cli("fit", str(tmp_path / "X.npy"), "--k", "zero").exit_code == 2
    assert gmm_cli("fit", str(tmp_path / "X.npy"), "--algorithm", "dbscan").exit_code == 2
    assert gmm_cli("frobnicate").exit_code == 2


def test_wrong_api_key_exits_4(keyed_server: ServerProcess) -> None:
    runner = CliRunner()
    env = {"GMM_URL": keyed_server.base_url}
    wrong = runner.invoke(app, ["models", "ls"], env={**env, "GMM_API_KEY": "wrong-key"})
    assert wrong.exit_code == 4, wrong.stderr
    assert wrong.stderr.strip()
    missing = runner.invoke(app, ["models", "ls"], env={**env, "GMM_API_KEY": ""})
    assert missing.exit_code == 4
    right = runner.invoke(app, ["--api-key", "right-key", "--json", "models", "ls"], env=env)
    assert right.exit_code == 0 and json.loads(right.stdout) == []


def test_connection_failure_names_the_url(gmm_cli) -> None:  # type: ignore[no-untyped-def]
    result = gmm_cli("--url", "http://127.0.0.1:9", "models", "ls")
    assert result.exit_code == 1
    assert "http://127.0.0.1:9" in result.stderr and "GMM_URL" in result.stderr


def test_exit_code_mapping() -> None:
    assert [exit_code_for(s) for s in (400, 404, 401, 403, 413, 415, 422, 429, 500, 502)] == [
        2, 3, 4, 4, 5, 2, 2, 5, 1, 1,
    ]  # fmt: skip
    assert set(EXIT_CODES.values()) == {2, 3, 4, 5}
    help_text = CliRunner().invoke(app, ["--help"]).stdout
    assert "Exit codes" in help_text and "404" in help_text


# -- the installed command, as a process ----------------------------------------------------------


def gmm_command() -> list[str]:
    script = Path(sys.executable).parent / "gmm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gmm_client.cli"]


def run_gmm(args: Sequence[str], url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GMM_URL": url}
    env.pop("GMM_API_KEY", None)
    return subprocess.run(
        [*gmm_command(), *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_console_script_fits_and_fails_like_in_process(
    live_server: ServerProcess, tmp_path: Path
) -> None:
    X = blobs(seed=11)
    np.save(tmp_path / "X.npy", X)
    args = ["--json", "fit", str(tmp_path / "X.npy"), "--k", "4", "--random-state", "0"]
    done = run_gmm(args, live_server.base_url)
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout)
    np.testing.assert_array_equal(model["means"], GaussianMixture(4, random_state=0).fit(X).means_)
    assert "fit succeeded" in done.stderr

    missing = run_gmm(["models", "show", UNKNOWN_ID], live_server.base_url)
    assert missing.returncode == 3 and UNKNOWN_ID in missing.stderr
    module = subprocess.run(
        [sys.executable, "-m", "gmm_client.cli", "--help"], capture_output=True, text=True
    )
    assert module.returncode == 0 and "Exit codes" in module.stdout


def _sigint_as_at_a_prompt() -> None:
    """In the child before it runs: SIGINT at its default, as for a command typed at
    a shell's prompt. A test run started in the background by a script (``pytest &``,
    as CI and load loops do) has SIGINT ignored, every child inherits that, and
    Python then never turns the test's SIGINT into a KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def long_fit_args(tmp_path: Path) -> list[str]:
    """``gmm fit`` of minutes (50 inits of up to 1,000 EM steps): it is cancelled."""
    X, _ = make_blobs(n_samples=40_000, n_features=8, centers=30, random_state=0)
    np.save(tmp_path / "X.npy", X)
    args = ["fit", str(tmp_path / "X.npy"), "--k", "30", "--n-init", "50", "--max-iter", "1000"]
    return [*args, "--param", "tol=0", "--random-state", "0"]


def new_fit_job(gmm: Client, before: set[str]) -> dict[str, Any] | None:
    jobs = gmm.list_jobs(limit=100)["items"]
    return next((j for j in jobs if j["id"] not in before and j["kind"] == "fit"), None)


def assert_cancelled(gmm: Client, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while gmm.get_job(job_id)["status"] not in ("cancelled", "failed", "succeeded"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert gmm.get_job(job_id)["status"] == "cancelled"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_ctrl_c_cancels_the_running_job(
    live_server: ServerProcess, gmm: Client, tmp_path: Path
) -> None:
    before = {job["id"] for job in gmm.list_jobs(limit=100)["items"]}
    env = {**os.environ, "GMM_URL": live_server.base_url}
    proc = subprocess.Popen(
        [*gmm_command(), *long_fit_args(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_sigint_as_at_a_prompt,
    )
    job = None
    try:
        deadline = time.monotonic() + 60
        while job is None and time.monotonic() < deadline:
            time.sleep(0.2)
            job = new_fit_job(gmm, before)
        assert job is not None, "the fit never started"
        # The job may be made while its answer is still on the way: Ctrl-C waits for it.
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()  # reaped, and its pipes closed: no ResourceWarning later
            if job is not None:  # nor minutes of fitting under the tests that follow
                gmm.cancel_job(job["id"])
    assert proc.returncode == 130, stderr
    assert f"cancelled job {job['id']}" in stderr
    assert_cancelled(gmm, job["id"])


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_ctrl_c_before_the_answer_names_the_job_still_cancels_it(
    gmm_cli, gmm: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """The service has made the job, the answer with its id is on the way, and Ctrl-C
    comes: the command waits for the answer and cancels the job, never leaves it."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set in the main thread only")
    before = {job["id"] for job in gmm.list_jobs(limit=100)["items"]}
    send = Client._send

    def ctrl_c_once_the_job_exists(self: Client, call: Any) -> Any:
        response = send(self, call)
        if call.operation == "create_model":
            assert new_fit_job(gmm, before) is not None  # made, and not yet known here
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, handled before this returns
        return response

    monkeypatch.setattr(Client, "_send", ctrl_c_once_the_job_exists)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a prompt
    try:
        result = gmm_cli(*long_fit_args(tmp_path), "--no-progress")
    finally:
        signal.signal(signal.SIGINT, previous)
    job = new_fit_job(gmm, before)
    assert job is not None
    assert result.exit_code == 130, (result.stdout, result.stderr)
    assert f"cancelled job {job['id']}" in result.stderr
    assert_cancelled(gmm, job["id"])
