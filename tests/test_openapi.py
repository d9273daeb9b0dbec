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
from service.api.v2 import routes as v2_routes
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
    """``(path, method)`` -> the name of the operation that serves it: the Python name
    of its function, or for a ``/v2`` versioned path, ``model_version_*`` after the
    ``model_*`` function that serves both it and the unversioned path.

    Read from the routers in ``service/api/routes/`` (every module there) and in
    ``service/api/v2/routes.py``, not from ``app.routes``, whose shape for included
    routers is private to FastAPI.
    """
    found: dict[tuple[str, str], str] = {}
    modules = [
        importlib.import_module(f"{routes_pkg.__name__}.{info.name}")
        for info in pkgutil.iter_modules(routes_pkg.__path__)
    ]
    for module in [*modules, v2_routes]:
        for router in vars(module).values():
            if not isinstance(router, APIRouter):
                continue
            for route in router.routes:
                if isinstance(route, APIRoute) and route.include_in_schema:
                    name = route.endpoint.__name__
                    if "/versions/{version}" in route.path:
                        name = name.replace("model_", "model_version_", 1)
                    for method in route.methods:
                        found[(route.path, method.lower())] = name
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


def _protocol(path: str) -> bool:
    """Open Inference Protocol routes, whose errors are the protocol's ``{"error"}``."""
    return path == "/v2" or path.startswith("/v2/")


def test_every_error_response_is_problem_json(spec: dict[str, Any]) -> None:
    """No route may advertise a plain-JSON error: the handlers never answer one, except
    under /v2, where they answer the Open Inference Protocol's ``{"error": ...}`` and
    only that."""
    for path, method, op in _operations(spec):
        for status, response in op["responses"].items():
            if status[0] not in "45":
                continue
            where = f"{method.upper()} {path} {status}"
            content = response.get("content", {})
            if _protocol(path):
                assert list(content) == ["application/json"], where
                ref = content["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ProtocolError", where
            else:
                assert "application/json" not in content, where


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


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _body_example(spec: dict[str, Any], op: dict[str, Any]) -> Any:
    """The body Swagger UI starts from: the first named example, else the schema's."""
    media = op["requestBody"]["content"]["application/json"]
    if media.get("examples"):
        return next(iter(media["examples"].values()))["value"]
    examples = _resolve(spec, media["schema"]).get("examples")
    return examples[0] if examples else None


def test_every_request_body_has_an_example(spec: dict[str, Any]) -> None:
    """Without one Swagger UI pre-fills a body built from the types, such as
    ``{"points": [[0]]}``, which the seed model refuses."""
    missing = [
        f"{m.upper()} {p}"
        for p, m, op in _operations(spec)
        if "requestBody" in op and _body_example(spec, op) is None
    ]
    assert not missing, f"request bodies without an example: {missing}"


@pytest.mark.parametrize("path", ["predict", "score", "sample"])
def test_per_model_body_examples_work_on_the_seed_model(
    path: str, spec: dict[str, Any], client: TestClient
) -> None:
    fitted = client.post("/v1/models", json=_seed_example(spec))
    assert fitted.status_code == 201, fitted.text
    template = f"/v1/models/{{model_id}}/{path}"
    body = _body_example(spec, spec["paths"][template]["post"])
    response = client.post(template.replace("{model_id}", fitted.json()["id"]), json=body)
    assert response.status_code == 200, response.text


def test_every_tag_is_described(spec: dict[str, Any]) -> None:
    described = {tag["name"]: tag.get("description") for tag in spec.get("tags", [])}
    used = {tag for _, _, op in _operations(spec) for tag in op.get("tags", [])}
    assert used and used <= set(described), f"tags without a description: {used - set(described)}"
    assert all(described[tag] for tag in used)


def _auth_documented(spec: dict[str, Any]) -> list[str]:
    return [
        f"{m.upper()} {p}"
        for p, m, op in _operations(spec)
        if "security" in op or "401" in op["responses"] or "403" in op["responses"]
    ]


def test_security_is_declared_only_when_keys_are_configured(tmp_path: Path) -> None:
    """Without keys nothing is refused for want of one, so the document must not say
    that a key is needed (fuzzers then report "accepts requests without
    authentication", and Swagger UI shows an Authorize button that does nothing)."""
    assert "securitySchemes" not in SPEC["components"]
    assert not _auth_documented(SPEC)

    keys_file = tmp_path / "keys"
    keys_file.write_text("sha256:" + "ab" * 32 + "\n")
    for settings in (Settings(api_keys="admin-key"), Settings(api_keys_file=keys_file)):
        keyed = create_app(settings).openapi()
        assert set(keyed["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}
        for path, method, op in _operations(keyed):
            if path.startswith(("/v1/", "/v2/models/")):
                assert op["security"] == [{"ApiKey": []}, {"Bearer": []}], f"{method} {path}"
                assert {"401", "403"} <= set(op["responses"]), f"{method} {path}"
            else:
                assert "security" not in op and "401" not in op["responses"], f"{method} {path}"
        assert keyed["paths"]["/v1/models"]["get"]["responses"]["401"]["headers"]


def _known_problem_types() -> dict[str, int]:
    """Every problem ``type`` the service answers, with its status."""
    from service.api.security import Forbidden, Unauthorized
    from service.errors import PROBLEM_BASE, ServiceError

    found = {PROBLEM_BASE + "malformed-json": 400, PROBLEM_BASE + "validation-error": 422}
    pending = [ServiceError, Forbidden, Unauthorized]
    while pending:
        cls = pending.pop()
        found[PROBLEM_BASE + cls.slug] = cls.status
        pending.extend(cls.__subclasses__())
    return found


def test_error_examples_show_their_own_type(spec: dict[str, Any]) -> None:
    """A 400 for malformed JSON is not ``invalid-input``: each documented error shows
    examples of the problem types really answered with that status."""
    known = _known_problem_types()
    checked = set()
    for path, method, op in _operations(spec):
        for status, response in op["responses"].items():
            if status[0] not in "45" or _protocol(path):
                continue  # /v2 errors are {"error"}: test_every_error_response_is_problem_json
            examples = response["content"]["application/problem+json"].get("examples")
            assert examples, f"{method.upper()} {path} {status}: no example"
            for name, example in examples.items():
                value = example["value"]
                where = f"{method.upper()} {path} {status} {name}"
                assert value["status"] == int(status), where
                assert known.get(value["type"]) == int(status), f"{where}: {value['type']}"
                checked.add(status)
    assert {"400", "404", "413", "415", "422", "429"} <= checked


def test_every_operation_that_can_answer_429_documents_it(tmp_path: Path) -> None:
    """Fill every fit slot, call every operation with its example, and require a
    documented 429 (with ``Retry-After``) exactly where 429 came back."""
    # No queue: a fit that finds the one slot taken answers 429 at once instead of waiting.
    settings = Settings(
        store_dir=tmp_path / "store", secret_key="k", max_concurrent_fits=1, fit_queue_length=0
    )
    busy: set[str] = set()
    with TestClient(create_app(settings)) as client:
        seed = client.post("/v1/models", json=_seed_example(SPEC))
        assert seed.status_code == 201, seed.text
        model_id = seed.json()["id"]
        jobs = client.app.state.services.jobs  # type: ignore[attr-defined]
        with jobs.fitting():
            for path, method, op in _operations(SPEC):
                if method == "delete":
                    continue  # answers before any fit; and would remove the model
                body = _body_example(SPEC, op) if "requestBody" in op else None
                url = path.replace("{model_id}", model_id)
                response = client.request(method.upper(), url, json=body)
                if response.status_code == 429:
                    assert response.headers["retry-after"].isdigit()
                    busy.add(op["operationId"])
    documented = {op["operationId"] for _, _, op in _operations(SPEC) if "429" in op["responses"]}
    assert busy, "no operation answered 429 with every fit slot taken"
    assert busy == documented
    for _, _, op in _operations(SPEC):
        if "429" in op["responses"]:
            assert "Retry-After" in op["responses"]["429"]["headers"], op["operationId"]


#: Fields of a model resource that differ between two identical fits.
_PER_FIT = ("id", "model_id", "created_at", "fit_seconds")


def _agree(example: Any, real: Any, where: str = "") -> None:
    """``example`` is ``real`` rounded to 4 decimals, lists cut short allowed."""
    if isinstance(example, dict):
        assert isinstance(real, dict) and set(example) == set(real), where
        for key, value in example.items():
            if key not in _PER_FIT:
                _agree(value, real[key], f"{where}.{key}")
    elif isinstance(example, list):
        assert isinstance(real, list) and len(example) <= len(real), where
        assert bool(example) == bool(real), where
        for i, value in enumerate(example):
            _agree(value, real[i], f"{where}[{i}]")
    elif isinstance(example, float):
        assert real == pytest.approx(example, abs=1e-4), where
    else:
        assert example == real, where


def test_response_examples_are_what_the_seed_model_answers(client: TestClient) -> None:
    """The committed examples were computed from real fits; refit and compare, so they
    stay true as the code changes."""
    from service.schemas import examples
    from service.schemas.comparisons import COMPARISON_EXAMPLES
    from service.schemas.examples import SEED_BLOBS

    fitted = client.post("/v1/models", json=_seed_example(SPEC))
    assert fitted.status_code == 201, fitted.text
    _agree(examples.SEED_FITTED, fitted.json(), "fitted")
    model = f"/v1/models/{fitted.json()['id']}"
    points = {"points": examples.SEED_POINTS}
    answers = {
        "model": (examples.SEED_MODEL, client.get(model)),
        "list": (examples.SEED_SUMMARY, client.get("/v1/models")),
        "predict": (examples.SEED_PREDICTION, client.post(f"{model}/predict", json=points)),
        "score": (examples.SEED_SCORE, client.post(f"{model}/score", json=points)),
        "sample": (
            examples.SEED_SAMPLE,
            client.post(f"{model}/sample", json=examples.SEED_SAMPLE_REQUEST),
        ),
        "ellipses": (examples.SEED_ELLIPSES, client.get(f"{model}/ellipses")),
        "generate": (
            examples.SEED_GENERATED,
            client.post("/v1/datasets/generate", json=SEED_BLOBS),
        ),
        "selection": (
            examples.SEED_SELECTION,
            client.post(
                "/v1/model-selection",
                json={
                    "data": {"generator": SEED_BLOBS},
                    "grid": {"n_components": [3, 4, 5]},
                    "params": {"random_state": 0},
                },
            ),
        ),
        "comparison": (
            examples.ELLIPSES_COMPARISON,
            client.post("/v1/comparisons", json=COMPARISON_EXAMPLES["kmeans-vs-mixture"]["value"]),
        ),
    }
    for name, (example, response) in answers.items():
        assert response.status_code == 200, f"{name}: {response.text}"
        real = response.json()
        if name == "list":
            real = real["items"][0]
        _agree(example, real, name)


def test_the_document_depends_on_keys_only(tmp_path: Path) -> None:
    """``service.api.openapi`` builds the document once per process for keyed and once
    for open apps, and copies it for every other app: so nothing else may shape it.
    Built afresh under settings that differ in every limit, it must be the same."""
    from service.api import openapi

    different = Settings(
        store_dir=tmp_path / "store",
        secret_key="k",
        max_body_bytes=2048,
        max_upload_bytes=4096,
        max_points=7,
        max_features=3,
        max_values=11,
        max_components=5,
        max_iter=9,
        max_n_init=2,
        max_grid_cells=3,
        max_parallel_fits=1,
        max_default_per_point_values=0,
        default_page_size=3,
        max_concurrent_fits=1,
        fit_queue_length=0,
        fit_queue_seconds=0.5,
        job_workers=1,
        async_fit_seconds=0.1,
        fit_timeout_seconds=5,
        cors_origins="*",
        cache_size=0,
        dask_scheduler="tcp://127.0.0.1:1",
        sync_wait_seconds=5,
    )
    assert openapi.build(create_app(different), keyed=False) == SPEC
    keyed = create_app(Settings(api_keys="admin-key")).openapi()
    assert openapi.build(create_app(different), keyed=True) == keyed


def test_each_app_has_its_own_copy_of_the_document() -> None:
    first, second = create_app(Settings()), create_app(Settings())
    first.openapi()["info"]["title"] = "changed"
    assert second.openapi()["info"]["title"] == "gmm-service"
    assert first.openapi()["info"]["title"] == "changed"  # the app's copy is kept
