"""The OpenAPI document is product: committed, stable, and honest about errors.

Clients and generated SDKs read ``openapi/openapi.json``; these tests keep it equal
to what the code serves, keep operation ids from churning, and make sure every
``/v1`` route tells Swagger users which problem+json errors it can answer.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sklearn.datasets import make_blobs

import service.api.routes as routes_pkg
from service.config import Settings
from service.main import create_app

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "openapi" / "openapi.json"
SCRIPT = ROOT / "scripts" / "export_openapi.py"
STALE = "openapi/openapi.json is stale: run `make openapi` (python scripts/export_openapi.py)"

#: The notebook's data, written out here so the example cannot drift from it.
NOTEBOOK_BLOBS = {"n_samples": 200, "n_features": 2, "centers": 4, "cluster_std": 1.6}
NOTEBOOK_SEED = 10
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}

#: The spec as the code builds it (settings do not shape it); built at collection
#: time because every request example becomes its own test case.
SPEC: dict[str, Any] = create_app(Settings()).openapi()

#: Examples known to be wrong, with the bug they show; strict, so a fix is noticed.
#: Request-body examples known not to succeed, with why (none today).
KNOWN_BAD_EXAMPLES: dict[tuple[str, str, str], str] = {}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return SPEC


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    assert COMMITTED.exists(), f"openapi/openapi.json is missing: {STALE}"
    loaded: dict[str, Any] = json.loads(COMMITTED.read_text(encoding="utf-8"))
    return loaded


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]


def test_committed_spec_is_current(spec: dict[str, Any], committed: dict[str, Any]) -> None:
    assert committed == spec, STALE


def _load_script() -> ModuleType:
    module_spec = importlib.util.spec_from_file_location("export_openapi", SCRIPT)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_export_script_writes_the_spec(spec: dict[str, Any], tmp_path: Path) -> None:
    """Run as CI and ``make openapi`` run it: a script, from any working directory."""
    out = tmp_path / "openapi.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    text = out.read_text(encoding="utf-8")
    assert json.loads(text) == spec
    assert text.endswith("}\n") and not text.endswith("\n\n")


def test_export_check_fails_only_when_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _load_script()
    out = tmp_path / "openapi.json"
    assert script.main(["--output", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert script.render(SPEC) == text, "the export must be deterministic"
    assert script.main(["--check", "--output", str(out)]) == 0

    out.write_text(text.replace('"gmm-service"', '"renamed"', 1), encoding="utf-8")
    capsys.readouterr()
    assert script.main(["--check", "--output", str(out)]) == 1
    assert "make openapi" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") != text, "--check must not rewrite the file"

    out.unlink()
    assert script.main(["--check", "--output", str(out)]) == 1
    assert "missing" in capsys.readouterr().err


def test_served_spec_equals_committed(client: TestClient, committed: dict[str, Any]) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == committed, STALE


def test_docs_and_root_redirect(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in docs.text.lower()

    root = client.get("/", follow_redirects=False)
    assert root.status_code in (301, 302, 303, 307, 308)
    assert root.headers["location"] == "/docs"


def _route_functions() -> dict[tuple[str, str], str]:
    """``(path, method)`` -> the Python name of the function that serves it.

    Read from the routers in ``service/api/routes/`` (every module there), not from
    ``app.routes``, whose shape for included routers is private to FastAPI.
    """
    found: dict[tuple[str, str], str] = {}
    for info in pkgutil.iter_modules(routes_pkg.__path__):
        module = importlib.import_module(f"{routes_pkg.__name__}.{info.name}")
        for router in vars(module).values():
            if not isinstance(router, APIRouter):
                continue
            for route in router.routes:
                if isinstance(route, APIRoute) and route.include_in_schema:
                    for method in route.methods:
                        found[(route.path, method.lower())] = route.endpoint.__name__
    return found


def test_operation_ids_are_route_function_names(spec: dict[str, Any]) -> None:
    """Ids come from function names, not from paths, so generated clients keep their
    method names when a path or tag changes."""
    by_route = _route_functions()
    operations = _operations(spec)
    assert operations
    ids = [op.get("operationId") for _, _, op in operations]
    assert len(ids) == len(set(ids)), f"duplicate operationIds: {ids}"
    for path, method, op in operations:
        op_id = op.get("operationId")
        assert (path, method) in by_route, f"{method.upper()} {path}: no route function found"
        assert op_id == by_route[(path, method)], f"{method.upper()} {path}: operationId {op_id}"
        assert re.fullmatch(r"[a-z][a-z0-9_]*", op_id), op_id


def test_every_operation_has_a_summary(spec: dict[str, Any]) -> None:
    missing = [f"{m.upper()} {p}" for p, m, op in _operations(spec) if not op.get("summary")]
    assert not missing, f"operations without a summary: {missing}"


def test_v1_operations_document_problem_json_errors(spec: dict[str, Any]) -> None:
    v1 = [(p, m, op) for p, m, op in _operations(spec) if p.startswith("/v1/")]
    assert v1
    for path, method, op in v1:
        client_errors = {
            status: response
            for status, response in op["responses"].items()
            if status.startswith("4")
        }
        assert client_errors, f"{method.upper()} {path} documents no 4xx response"
        for status, response in client_errors.items():
            content = response.get("content", {})
            assert list(content) == ["application/problem+json"], (
                f"{method.upper()} {path} {status}: {list(content)}"
            )
            ref = content["application/problem+json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/Problem"


def test_every_error_response_is_problem_json(spec: dict[str, Any]) -> None:
    """No route may advertise a plain-JSON error: the handlers never answer one."""
    for path, method, op in _operations(spec):
        for status, response in op["responses"].items():
            if status[0] in "45":
                assert "application/json" not in response.get("content", {}), (
                    f"{method.upper()} {path} {status}"
                )


def _seed_example(spec: dict[str, Any]) -> dict[str, Any]:
    body = spec["paths"]["/v1/models"]["post"]["requestBody"]["content"]["application/json"]
    examples = body.get("examples", {})
    for example in examples.values():
        generator = example["value"].get("data", {}).get("generator")
        if generator is not None and generator.get("kind") == "blobs":
            value: dict[str, Any] = example["value"]
            return value
    raise AssertionError(f"create_model has no blobs example: {list(examples)}")


def test_create_model_example_is_the_notebook_seed_blobs(spec: dict[str, Any]) -> None:
    example = _seed_example(spec)
    generator = example["data"]["generator"]
    assert generator == {"kind": "blobs", **NOTEBOOK_BLOBS, "random_state": NOTEBOOK_SEED}
    assert example["algorithm"] == "gaussian_mixture"
    assert example["params"]["n_components"] == NOTEBOOK_BLOBS["centers"]


def test_seed_example_generates_make_blobs_points(spec: dict[str, Any], client: TestClient) -> None:
    """The example is not just text: it stands for exactly the notebook's points."""
    generator = _seed_example(spec)["data"]["generator"]
    response = client.post("/v1/datasets/generate", json=generator)
    assert response.status_code == 200, response.text
    X, y = make_blobs(**NOTEBOOK_BLOBS, random_state=NOTEBOOK_SEED)
    np.testing.assert_allclose(np.asarray(response.json()["points"]), X, rtol=1e-10, atol=0)
    assert response.json()["labels"] == y.tolist()


def _request_examples() -> list[Any]:
    cases = []
    for path, method, op in _operations(SPEC):
        content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        for name, example in content.get("examples", {}).items():
            reason = KNOWN_BAD_EXAMPLES.get((method, path, name))
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            cases.append(
                pytest.param(
                    method, path, example["value"], id=f"{method} {path} {name}", marks=marks
                )
            )
    return cases


def test_there_are_request_examples() -> None:
    assert len(_request_examples()) >= 2


@pytest.mark.parametrize(("method", "path", "body"), _request_examples())
def test_request_example_is_accepted(
    method: str, path: str, body: Any, spec: dict[str, Any], client: TestClient
) -> None:
    """Swagger's "Try it out" starts from these; each one must succeed as written.

    Paths under a model use a mixture fitted on the seed example, which every
    per-model operation (predict, score, sample) accepts.
    """
    url = path
    if "{model_id}" in path:
        fitted = client.post("/v1/models", json=_seed_example(spec))
        assert fitted.status_code == 201, fitted.text
        url = path.replace("{model_id}", fitted.json()["id"])
    assert "{" not in url, f"{method.upper()} {path}: no value for its path parameter"
    response = client.request(method.upper(), url, json=body)
    assert response.status_code < 300, f"{method.upper()} {path}: {response.text}"
