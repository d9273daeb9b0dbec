"""Schema fuzzing: every operation of the OpenAPI document against a real
``python -m service`` on loopback, with every one of schemathesis's checks.

Twice: as deployed by default, without API keys, against the committed
``openapi/openapi.json`` (what clients generate code from, and which declares no
security); and with an API key, against the document that configuration serves,
which declares the key on every ``/v1`` operation (``ignored_auth`` then sends
requests without the key, and with a wrong one, and expects 401). A response that
does not match the document, an undocumented status code, content type or header,
or any 5xx is a failure. The servers run with small limits so that the largest
request the schema allows stays cheap.

``positive_data_acceptance`` wants every schema-valid request to succeed; it runs
with the statuses no JSON Schema of this API can rule out added to what it accepts,
and ``schema_valid_requests_pass_validation`` narrows those 422s down to the ones
that really are beyond a schema. Each operation gets the examples and coverage
phases plus a few fuzzed cases; a stateful run then chains operations through the
model ids that creating and importing answer.

Operations that take a model id get a live one most of the time (a model of each
algorithm is created first, and re-created when the fuzzer deletes it), so that
predict, score, sample, plot and export are fuzzed past the 404.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis

from service.config import Settings
from service.main import create_app
from tests.helpers_server import ServerProcess, running_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "openapi" / "openapi.json"
API_KEY = "schemathesis-admin-key"
VALIDATION_ERROR = "urn:gmm-service:problem:validation-error"

#: Small limits: the schema allows any array length, the server refuses past these.
SERVER_ENV = {
    "GMM_SECRET_KEY": "schemathesis-secret",
    "GMM_MAX_POINTS": "2000",
    "GMM_MAX_VALUES": "20000",
    "GMM_MAX_FEATURES": "50",
    "GMM_MAX_COMPONENTS": "8",
    "GMM_MAX_ITER": "300",  # KMeans's default max_iter: defaults always fit
    "GMM_MAX_N_INIT": "3",
    "GMM_MAX_BODY_BYTES": "1000000",
    "GMM_MAX_GRID_CELLS": "8",
    "GMM_LOG_LEVEL": "warning",
}

#: ``.npy`` bodies (uploads, predict, score) are bytes: fuzzed as any binary body, which
#: the service must refuse with a 4xx problem when they are not a numeric 2-D array.
schemathesis.serializer.alias("application/x-npy", "application/octet-stream")

SEED = 20240611
SUPPRESSED_HEALTH_CHECKS = ["too_slow", "filter_too_much", "data_too_large"]
#: Every check on. ``positive_data_acceptance`` also accepts, for a schema-valid
#: request: 404, a well-formed model id that names no model (ids are drawn, and a
#: quarter of them are kept unknown on purpose); 413, a deployment limit
#: (GMM_MAX_POINTS, GMM_MAX_COMPONENTS...) that is configuration, not schema; 422,
#: a rule across fields (points as wide as the model, n_components at most
#: n_samples, a plot's pixel budget), narrowed further by
#: ``schema_valid_requests_pass_validation``.
CHECKS = {
    "positive_data_acceptance": {"expected-statuses": ["2xx", "404", "413", "422"]},
    # Generous: a hung request fails here rather than at the request timeout.
    "max_response_time": 60,
}

#: The Open Inference Protocol answers every request it refuses 400 (``{"error"}``),
#: where /v1 answers a rule across fields 422: a shape that does not match its data or
#: the model's width, binary sizes that do not add up. So for /v2, 400 takes the
#: place of 422, and ``schema_valid_requests_pass_validation`` lets it through.
PROTOCOL_PATHS = r"^/v2(/|$)"
PROTOCOL_OPERATIONS = {
    "include-path-regex": PROTOCOL_PATHS,
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "413"]}},
}


def _config(coverage: bool) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            # Reproducible in CI: the same cases every run (change it to explore further).
            "seed": SEED,
            "suppress-health-check": SUPPRESSED_HEALTH_CHECKS,
            "request-timeout": 60,
            # With keys, the key is sent by the test (call_and_validate(headers=...)),
            # which schemathesis treats as explicit auth; generated X-API-Key /
            # Authorization values would turn nearly every request into a 401 and leave
            # the bodies unfuzzed. The ignored_auth check still probes every operation
            # without and with a wrong key.
            "generation": {
                "max-examples": 10,
                "database": "none",
                "with-security-parameters": False,
            },
            "phases": {"coverage": {"enabled": coverage}},
            "checks": CHECKS,
            "operations": [PROTOCOL_OPERATIONS],
        }
    )


#: Without keys, every phase. With a valid key the server answers every request just
#: as without keys, so the keyed run skips the coverage phase (thousands of
#: boundary-value requests, the same ones again) and keeps what only it can show:
#: auth enforced on every operation, and the keyed document's responses.
CONFIG = _config(coverage=True)
KEYED_CONFIG = _config(coverage=False)

#: The stateful run follows the links schemathesis infers (POST /v1/models and
#: /v1/models/import -> the id in their 201 -> every /v1/models/{model_id} operation).
#: Schema-valid inputs only: a chain only goes on past a 201.
STATEFUL_CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "suppress-health-check": SUPPRESSED_HEALTH_CHECKS,
        "request-timeout": 60,
        "generation": {
            "mode": "positive",
            "database": "none",
            "with-security-parameters": False,
        },
        "checks": CHECKS,
    }
)

#: The default deployment (no keys) serves exactly the committed document
#: (tests/test_openapi.py checks that); with keys, the document built for them.
KEYED_SPEC = create_app(Settings(api_keys=API_KEY)).openapi()
open_schema = schemathesis.openapi.from_path(SPEC, config=CONFIG)
keyed_schema = schemathesis.openapi.from_dict(KEYED_SPEC, config=KEYED_CONFIG)
#: Stored datasets are content-addressed: the same body answers 201 once and 200 ever
#: after, so a sequence replayed against the same server (as hypothesis replays and
#: shrinks) takes other links than the first time. /v2 names models by name too (the
#: newest of a name), so a replay finds a model where the first run found none. Their
#: operations are fuzzed one by one above; the stateful run keeps to /v1 models, whose
#: ids are new on every create.
_DATASET_RESOURCES = r"^/v1/datasets(/\{dataset_id\})?$"
_NOT_STATEFUL = f"{_DATASET_RESOURCES}|{PROTOCOL_PATHS}"
open_stateful = schemathesis.openapi.from_path(SPEC, config=STATEFUL_CONFIG).exclude(
    path_regex=_NOT_STATEFUL
)
keyed_stateful = schemathesis.openapi.from_dict(KEYED_SPEC, config=STATEFUL_CONFIG).exclude(
    path_regex=_NOT_STATEFUL
)

#: One small model per algorithm, so each response shape is checked against the spec.
MODEL_FITS: dict[str, dict[str, Any]] = {
    # Named as the /v2 examples name their model, so those reach a live one.
    "gaussian_mixture": {"params": {"n_components": 2, "random_state": 0}, "name": "seed-blobs"},
    "bayesian_gaussian_mixture": {"params": {"n_components": 3, "random_state": 0}},
    "kmeans": {"params": {"n_clusters": 2, "n_init": 1, "random_state": 0}},
    "minibatch_kmeans": {"params": {"n_clusters": 2, "random_state": 0}},
}
N_FEATURES = 2
SMALL_BLOBS = {
    "kind": "blobs",
    "n_samples": 60,
    "n_features": N_FEATURES,
    "centers": 2,
    "random_state": 0,
}


class LiveModels:
    """Ids of models that exist on the server right now, one per algorithm."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.ids: dict[str, str] = {}
        for algorithm in MODEL_FITS:
            self.create(algorithm)

    def create(self, algorithm: str) -> str:
        body = {
            "algorithm": algorithm,
            **MODEL_FITS[algorithm],
            "data": {"generator": SMALL_BLOBS},
            "include": [],
        }
        response = self.http.post("/v1/models", json=body)
        assert response.status_code == 201, response.text
        self.ids[algorithm] = response.json()["id"]
        return self.ids[algorithm]

    def pick(self, generated: str) -> str | None:
        """A live id for most well-formed generated ids; None keeps the generated one.

        Derived from the generated value, not drawn at random, so that hypothesis
        replays and shrinks the same request.
        """
        if len(generated) != 28 or any(c not in "0123456789abcdef" for c in generated):
            return None
        digit = int(generated[-1], 16)
        if digit % 4 == 0:
            return None  # keep some well-formed ids that name no model: the 404 path
        algorithms = list(self.ids)
        return self.ids[algorithms[digit % len(algorithms)]]

    def replace_if_deleted(self, model_id: str) -> None:
        for algorithm, live in list(self.ids.items()):
            if live == model_id:
                self.create(algorithm)


def schema_valid_requests_pass_validation(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """A request the published schema accepts passes every check the schema can state.

    Stands in for schemathesis's ``positive_data_acceptance``, which wants every
    schema-valid request to succeed. This API has rules a JSON Schema cannot state:
    points as wide as the model, ``n_components`` at most ``n_samples``, an
    ``align_to`` that exists, a plot's width x height x dpi^2, the deployment's size
    limits. Those are answered 413, or 422 naming the place (``invalid-input``,
    ``fit-failed``, ``unsupported-operation``, or a validator's ``value_error``), and
    are fine here. A built-in type or constraint error (``int_type``,
    ``greater_than_equal``, ``string_pattern_mismatch``, ``extra_forbidden``...) on a
    schema-valid request is not: it means the code and the published document
    disagree, and it fails here.
    """
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if case.method.upper() != case.operation.method.upper():
        return None  # a probe with an undeclared method
    body = _problem(response)
    if re.match(PROTOCOL_PATHS, case.operation.path):
        # The protocol's one status for a refused request; the schema-level part of the
        # request is what the document says it is (see PROTOCOL_OPERATIONS).
        if response.status_code == 400 and set(body) != {"error"}:
            raise AssertionError(f"/v2 answered 400 without the protocol's form: {response.text}")
        return None
    if response.status_code == 400 or (
        response.status_code == 422
        and body.get("type") == VALIDATION_ERROR
        and any(item.get("type") != "value_error" for item in body.get("errors", []))
    ):
        raise AssertionError(
            f"Schema-valid request refused by request validation ({response.status_code}): "
            f"{response.text[:500]}"
        )
    return None


def _problem(response: schemathesis.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class Deployment:
    """One server under test, the headers that authenticate to it, its live models."""

    def __init__(self, server: ServerProcess, headers: dict[str, str]) -> None:
        self.server = server
        self.headers = headers
        self.http = httpx.Client(base_url=server.base_url, headers=headers, timeout=60)
        self.models = LiveModels(self.http)


@contextlib.contextmanager
def _deployment(
    tmp_path_factory: pytest.TempPathFactory, env: dict[str, str], headers: dict[str, str]
) -> Iterator[Deployment]:
    cwd = tmp_path_factory.mktemp("schemathesis")
    with running_server({**SERVER_ENV, **env, "GMM_STORE_DIR": str(cwd / "store")}, cwd=cwd) as srv:
        deployment = Deployment(srv, headers)
        try:
            yield deployment
        finally:
            deployment.http.close()


@pytest.fixture(scope="module")
def open_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with _deployment(tmp_path_factory, {}, {}) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def keyed_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with _deployment(
        tmp_path_factory, {"GMM_API_KEYS": API_KEY}, {"X-API-Key": API_KEY}
    ) as deployment:
        yield deployment


#: (operation, status) -> responses seen: printed at the end, so a run shows what it did.
SEEN: Counter[tuple[str, int]] = Counter()
STATEFUL_SEEN: Counter[tuple[str, int]] = Counter()


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not SEEN:
        return
    with capture.global_and_fixture_disabled():
        for title, seen in (("per operation", SEEN), ("stateful", STATEFUL_SEEN)):
            reporter.write_line("")
            reporter.write_line(f"schemathesis {title}: {seen.total()} requests")
            for label in sorted({label for label, _ in seen}):
                statuses = sorted((status, n) for (lab, status), n in seen.items() if lab == label)
                reporter.write_line(f"  {label}: " + ", ".join(f"{s} x{n}" for s, n in statuses))


def as_wide_as_the_models(case: schemathesis.Case) -> None:
    """Fit a schema-valid ``points`` body to the live models: their width, modest values.

    Generated rows have random lengths and values up to 1e308, so predict and score
    would almost never get past the width check or the overflow check. Done for odd
    row counts only, so that wrong widths and huge values stay fuzzed too.
    """
    body = case.body
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not isinstance(body, dict):
        return
    points = body.get("points")
    if not isinstance(points, list) or len(points) % 2 == 0:
        return
    if all(isinstance(row, list) and row for row in points):
        rows = [(row * N_FEATURES)[:N_FEATURES] for row in points]
        modest = [[max(-1e6, min(1e6, value)) for value in row] for row in rows]
        case.body = {**body, "points": modest}


def _conforms(case: schemathesis.Case, deployment: Deployment, mode: str) -> None:
    """No 5xx, documented statuses, content types, headers and bodies, auth enforced."""
    path_parameters = case.path_parameters or {}
    model_id = path_parameters.get("model_id")
    if isinstance(model_id, str) and (live := deployment.models.pick(model_id)) is not None:
        case.path_parameters["model_id"] = live
        as_wide_as_the_models(case)
    response = case.call_and_validate(
        base_url=deployment.server.base_url,
        headers=deployment.headers,
        additional_checks=[schema_valid_requests_pass_validation],
    )
    SEEN[(f"{mode} {case.operation.label}", response.status_code)] += 1
    if case.method.upper() == "DELETE" and response.status_code == 204:
        deployment.models.replace_if_deleted(case.path_parameters["model_id"])


@open_schema.parametrize()
def test_api_without_keys_conforms_to_the_committed_document(
    case: schemathesis.Case, open_deployment: Deployment
) -> None:
    _conforms(case, open_deployment, "open")


@keyed_schema.parametrize()
def test_api_with_keys_conforms_to_its_document(
    case: schemathesis.Case, keyed_deployment: Deployment
) -> None:
    _conforms(case, keyed_deployment, "keyed")


def test_servers_serve_the_fuzzed_documents(
    open_deployment: Deployment, keyed_deployment: Deployment
) -> None:
    """What is fuzzed is what each configuration really publishes."""
    assert open_deployment.http.get("/openapi.json").json() == json.loads(SPEC.read_text())
    assert keyed_deployment.http.get("/openapi.json").json() == KEYED_SPEC


def _run_stateful(stateful: Any, deployment: Deployment, mode: str) -> None:
    """Create or import a model, then use, export and delete it: every step checked."""
    call_kwargs = {"base_url": deployment.server.base_url, "headers": deployment.headers}

    class Workflow(stateful.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return call_kwargs

        def after_call(self, response: schemathesis.Response, case: schemathesis.Case) -> None:
            super().after_call(response, case)
            STATEFUL_SEEN[(f"{mode} {case.operation.label}", response.status_code)] += 1

        def validate_response(
            self,
            response: schemathesis.Response,
            case: schemathesis.Case,
            additional_checks: list[Any] | None = None,
            **kwargs: Any,
        ) -> None:
            # DELETE /v1/jobs/{job_id} removes the job (cancel is its own POST), so
            # reading a deleted job is checked like any other deleted resource.
            case.validate_response(
                response,
                additional_checks=[schema_valid_requests_pass_validation],
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    Workflow.run(
        settings=hypothesis.settings(
            max_examples=15,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[
                hypothesis.HealthCheck.too_slow,
                hypothesis.HealthCheck.filter_too_much,
                hypothesis.HealthCheck.data_too_large,
            ],
        )
    )
    created = sum(
        n
        for (label, status), n in STATEFUL_SEEN.items()
        if status == 201 and label.startswith(mode)
    )
    assert created, "no sequence got past creating a model: the stateful run tested nothing"


def test_stateful_sequences_without_keys_conform(open_deployment: Deployment) -> None:
    _run_stateful(open_stateful, open_deployment, "open")


def test_stateful_sequences_with_keys_conform(keyed_deployment: Deployment) -> None:
    _run_stateful(keyed_stateful, keyed_deployment, "keyed")
