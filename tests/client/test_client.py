"""The Python client against a real server: every operation, jobs, errors.

Numbers are compared with scikit-learn fitted in-process on the same data, as every
other test of the service does; the client must add nothing and lose nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gmm_client import (
    OPERATIONS,
    AsyncClient,
    BadRequest,
    Busy,
    Client,
    Dataset,
    GMMError,
    InvalidInput,
    JobFailed,
    NotFound,
    ProblemError,
    Unauthorized,
)
from gmm_client.client import _Base, _verify
from gmm_client.errors import problem_from
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from tests.client.jobs_202 import JOB_ID, MODEL_ID, JobService
from tests.conftest import SEED_BLOBS, require
from tests.helpers_server import ServerProcess

SPEC = json.loads((Path(__file__).parents[2] / "openapi" / "openapi.json").read_text())
#: The v2 protocol is for clients written for KServe/Triton (tritonclient), not this one.
OTHER_PROTOCOLS = ("/v2",)


def seed() -> np.ndarray:
    X, _ = make_blobs(n_samples=200, n_features=2, centers=4, cluster_std=1.6, random_state=10)
    return X


def _document_operations() -> dict[str, tuple[str, str, dict[str, Any]]]:
    out = {}
    for path, operations in SPEC["paths"].items():
        if path.startswith(OTHER_PROTOCOLS):
            continue
        for method, op in operations.items():
            out[op["operationId"]] = (method.upper(), path, op)
    return out


#: Operations the client calls before the document has them: the server that answers
#: them is being built (GET /v1/jobs/{id}/result comes with GMM_SYNC_WAIT_SECONDS).
#: Once the document lists one, it must list it as here.
PENDING = {"get_job_result"}


def test_every_operation_of_the_document_is_a_method_and_no_other() -> None:
    documented = _document_operations()
    expected = {k: v for k, v in OPERATIONS.items() if k not in PENDING or k in documented}
    assert {k: v[:2] for k, v in documented.items()} == expected
    for name, (_, _, op) in documented.items():
        for cls in (Client, AsyncClient):
            assert callable(getattr(cls(base_url="http://x"), name)), (cls, name)
        signature = inspect.signature(getattr(_Base, name).func)
        names = set(signature.parameters)
        for parameter in op.get("parameters", []):
            if parameter["in"] == "path":
                assert parameter["name"] in names, (name, parameter["name"])
            elif parameter["in"] == "query" and parameter["name"] not in ("format", "output"):
                # format/output have their own spelling (plot format, predict_npy output)
                assert parameter["name"] in names or "options" in names, (name, parameter)


def test_fit_predict_score_sample_equal_sklearn(fit_gmm: Client) -> None:
    gmm = fit_gmm
    X = seed()
    model = gmm.create_model("gaussian_mixture", X, {"n_components": 4, "random_state": 0})
    ref = GaussianMixture(4, random_state=0).fit(X)
    np.testing.assert_array_equal(model["means"], ref.means_)
    np.testing.assert_array_equal(model["weights"], ref.weights_)
    assert "labels" not in model  # include=[] by default: the model resource alone

    out = gmm.predict(model["id"], X)
    np.testing.assert_array_equal(out["labels"], ref.predict(X))
    np.testing.assert_allclose(out["probabilities"], ref.predict_proba(X), rtol=1e-12, atol=0)
    scored = gmm.score_points(model["id"], X)
    np.testing.assert_allclose(scored["log_likelihood"], ref.score_samples(X), rtol=1e-12)
    assert scored["score"] == pytest.approx(ref.score(X), rel=1e-12)
    points, labels = gmm.sample_points(model["id"], 5, random_state=0)
    assert points.shape == (5, 2) and labels.shape == (5,)
    labels_npy = gmm.predict_npy(model["id"], X)
    np.testing.assert_array_equal(labels_npy, ref.predict(X))


def test_large_arrays_travel_as_npy_datasets(fit_server: ServerProcess) -> None:
    X, _ = make_blobs(n_samples=6000, n_features=4, centers=3, random_state=1)
    with Client(fit_server.base_url, npy_threshold=1000) as gmm:
        before = gmm.list_datasets()["total"]
        model = gmm.create_model("kmeans", X, {"n_clusters": 3, "random_state": 0, "n_init": 1})
        datasets = gmm.list_datasets()
        assert datasets["total"] == before + 1  # uploaded, then fitted by dataset_id
        ref = KMeans(3, random_state=0, n_init=1).fit(X)
        np.testing.assert_array_equal(model["means"], ref.cluster_centers_)
        out = gmm.predict(model["id"], X)  # a .npy body
        np.testing.assert_array_equal(out["labels"], ref.predict(X))
        distances = gmm.predict_npy(model["id"], X, "distances")
        np.testing.assert_allclose(distances, ref.transform(X), rtol=1e-12)
        mixture = gmm.create_model("gaussian_mixture", X, {"n_components": 3, "random_state": 0})
        ll = gmm.predict_npy(mixture["id"], X, "log_likelihood", operation="score_points")
        ref_gm = GaussianMixture(3, random_state=0).fit(X)
        np.testing.assert_allclose(ll, ref_gm.score_samples(X), rtol=1e-12)


@pytest.mark.parametrize("algorithm", ["gaussian_mixture", "kmeans"])
def test_include_answers_the_per_point_arrays_201_or_202(fit_gmm: Client, algorithm: str) -> None:
    X = seed()
    if algorithm == "kmeans":
        km = KMeans(4, random_state=0, n_init=1).fit(X)
        params: dict[str, Any] = {"n_clusters": 4, "n_init": 1}
        expected = {
            "means": km.cluster_centers_,
            "labels": km.labels_,
            "distances": km.transform(X),
        }
    else:
        gm = GaussianMixture(4, random_state=0)
        params = {"n_components": 4}
        labels = gm.fit_predict(X)
        expected = {"means": gm.means_, "labels": labels, "probabilities": gm.predict_proba(X)}
    include = [key for key in expected if key != "means"]
    model = fit_gmm.create_model(algorithm, X, {**params, "random_state": 0}, include=include)
    np.testing.assert_array_equal(model["means"], expected["means"])
    np.testing.assert_array_equal(model["labels"], expected["labels"])
    np.testing.assert_allclose(model[include[1]], expected[include[1]], rtol=1e-12, atol=0)
    # the stored model, plus the arrays asked for
    assert model == {**fit_gmm.get_model(model["id"]), **{key: model[key] for key in include}}


def test_datasets_by_every_route(gmm: Client) -> None:
    X = seed() + 1000.0  # an array no other test stores, so its name is this test's
    created = gmm.create_dataset(X, name="seed")
    assert created["n_samples"] == 200 and created["name"] == "seed"
    again = gmm.create_dataset(X)
    assert again["id"] == created["id"]  # by content
    csv = "\n".join(",".join(repr(float(v)) for v in row) for row in X).encode()
    assert gmm.create_dataset(csv, content_type="text/csv")["id"] == created["id"]
    generated = gmm.create_dataset({"generator": SEED_BLOBS})
    assert generated["n_samples"] == 200
    assert gmm.get_dataset(created["id"])["sha256"] == created["sha256"]
    model = gmm.create_model("gaussian_mixture", Dataset(created["id"]), {"n_components": 4})
    assert model["n_samples"] == 200
    points, true_labels = gmm.generate_dataset(SEED_BLOBS)
    assert true_labels.shape == (200,)
    np.testing.assert_array_equal(points, seed())
    assert gmm.get_dataset(generated["id"])["sha256"] == generated["sha256"]
    other = gmm.create_dataset(X[:50])
    gmm.delete_dataset(other["id"])
    with pytest.raises(NotFound):
        gmm.get_dataset(other["id"])


def test_models_list_get_delete_export_import_plots(gmm: Client) -> None:
    X = seed()
    model = gmm.create_model("gaussian_mixture", X, {"n_components": 4}, name="tour")
    assert gmm.get_model(model["id"])["name"] == "tour"
    assert any(m["id"] == model["id"] for m in gmm.iter_models(page_size=2))
    document = gmm.export_model(model["id"])
    imported = gmm.import_model(document)
    assert imported["id"] != model["id"]
    assert imported["means"] == model["means"]
    assert gmm.plot_model(model["id"]).startswith(b"\x89PNG")
    assert gmm.plot_model(model["id"], kind="convergence", format="svg").lstrip().startswith(b"<")
    assert gmm.plot_dataset(SEED_BLOBS, format="png").startswith(b"\x89PNG")
    assert len(gmm.get_model_ellipses(model["id"])["components"]) == 4
    assert gmm.get_model_points(model["id"], limit=50)["step"] == 4  # 200 points
    gmm.delete_model(imported["id"])
    with pytest.raises(NotFound) as info:
        gmm.get_model(imported["id"])
    assert info.value.problem["status"] == 404


def assert_onnx_answers_as(ref: Any, ort: Any, content: bytes, X: np.ndarray) -> None:
    """An exported ONNX model, run in onnxruntime on ``X``, answers what the mixture
    ``ref`` fitted in-process does: its labels, and probabilities and log-likelihoods
    within 1e-9."""
    session = ort.InferenceSession(content, providers=["CPUExecutionProvider"])
    labels, probabilities, log_likelihood = session.run(None, {"points": X})
    np.testing.assert_array_equal(labels, ref.predict(X))
    np.testing.assert_allclose(probabilities, ref.predict_proba(X), rtol=0, atol=1e-9)
    np.testing.assert_allclose(log_likelihood, ref.score_samples(X), rtol=0, atol=1e-9)


def test_export_onnx_runs_in_onnxruntime(gmm: Client, live_server: ServerProcess) -> None:
    """``export_onnx`` hands back the bytes onnxruntime loads; its answers are sklearn's."""
    ort = require("onnxruntime", "pip install -e '.[dev]', which has the onnx extra")
    X = seed()
    model = gmm.create_model("gaussian_mixture", X, {"n_components": 4, "random_state": 0})
    ref = GaussianMixture(4, random_state=0).fit(X)

    def check(content: bytes) -> None:
        assert_onnx_answers_as(ref, ort, content, X)

    check(gmm.export_onnx(model["id"]))

    async def exported() -> bytes:
        async with AsyncClient(live_server.base_url) as agmm:
            return await agmm.export_onnx(model["id"])

    check(asyncio.run(exported()))
    with pytest.raises(NotFound):
        gmm.export_onnx("0" * 28)


def test_model_selection_and_comparison(fit_gmm: Client) -> None:
    gmm = fit_gmm
    X = seed()
    result = gmm.select_model(X, [1, 2, 3, 4, 5], params={"random_state": 0})
    bics = {}
    for k in range(1, 6):
        bics[k] = GaussianMixture(k, random_state=0).fit(X).bic(X)
    scores = {cell["n_components"]: cell["bic"] for cell in result["scores"]}
    for k, bic in bics.items():
        assert scores[k] == pytest.approx(bic, rel=1e-10)
    assert result["best"]["n_components"] == min(bics, key=bics.__getitem__)
    picture = gmm.plot_model_selection(
        {"data": {"points": X.tolist()}, "grid": {"n_components": [1, 2, 3]}}
    )
    assert picture.startswith(b"\x89PNG")
    comparison = gmm.compare_algorithms(
        X,
        [
            {"algorithm": "gaussian_mixture", "params": {"n_components": 4}},
            {"algorithm": "kmeans", "params": {"n_clusters": 4}},
        ],
    )
    assert len(comparison["results"]) == 2


def test_jobs_followed_with_progress_then_listed(gmm: Client) -> None:
    X = seed()
    seen: list[dict[str, Any]] = []
    model = gmm.create_model(
        "gaussian_mixture",
        X,
        {"n_components": 4, "random_state": 0, "n_init": 3},
        progress=seen.append,
    )
    assert seen[-1]["status"] == "succeeded"
    assert seen[-1]["model_id"] == model["id"]
    done = [s["progress"]["done"] for s in seen]
    assert done == sorted(done)  # never goes backwards
    ref = GaussianMixture(4, random_state=0, n_init=3).fit(X)
    np.testing.assert_array_equal(model["means"], ref.means_)
    jobs = gmm.list_jobs()
    assert any(j["id"] == seen[-1]["id"] for j in jobs["items"])
    assert gmm.wait_job(seen[-1]["id"])["status"] == "succeeded"
    # the rich bar: it needs no terminal and leaves no thread behind
    again = gmm.create_model("kmeans", X, {"n_clusters": 4, "n_init": 1}, progress=True)
    assert again["algorithm"] == "kmeans"


def test_cancel_a_job(gmm: Client) -> None:
    long_fit = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": 4, "tol": 0, "max_iter": 10_000, "random_state": 0},
        "data": {"generator": {**SEED_BLOBS, "n_samples": 3000}},
        "wait": False,
    }
    r = gmm._http.post("/v1/models", json=long_fit)
    assert r.status_code == 202, r.text
    job = r.json()
    gmm.cancel_job(job["id"])
    with pytest.raises(JobFailed) as info:
        gmm.wait_job(job["id"])
    assert info.value.job["status"] == "cancelled"


def test_problems_become_exceptions_with_the_problem(gmm: Client) -> None:
    with pytest.raises(NotFound) as not_found:
        gmm.get_model("0" * 32)
    assert not_found.value.problem["type"].endswith("not-found")
    with pytest.raises(InvalidInput) as invalid:
        gmm.create_model("gaussian_mixture", seed(), {"n_components": 4, "bogus": 1})
    assert ["body", "params", "bogus"] in [e["loc"] for e in invalid.value.errors]
    assert "params.bogus" in str(invalid.value)
    model = gmm.create_model("kmeans", seed(), {"n_clusters": 2, "n_init": 1})
    with pytest.raises(InvalidInput) as width:
        gmm.predict(model["id"], [[0.0, 1.0, 2.0]])
    assert width.value.errors[0]["type"] == "wrong_width"
    with pytest.raises(TypeError):
        gmm.predict(model["id"], [["a", "b"]])


def test_a_failed_job_raises_the_fits_own_problem(gmm: Client) -> None:
    with pytest.raises(InvalidInput) as info:
        gmm.create_model(
            "gaussian_mixture",
            [[1.0, 1.0]] * 10,
            {"n_components": 2, "reg_covar": 0, "random_state": 0},
            wait=False,
        )
    assert "scikit-learn could not fit" in info.value.detail
    assert isinstance(info.value.__cause__, JobFailed)


def test_api_keys_from_argument_or_environment(
    keyed_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Client(keyed_server.base_url) as anonymous, pytest.raises(Unauthorized) as info:
        anonymous.list_models()
    assert info.value.status == 401
    with Client(keyed_server.base_url, api_key="right-key") as keyed:
        assert keyed.list_models()["total"] == 0
    monkeypatch.setenv("GMM_URL", keyed_server.base_url)
    monkeypatch.setenv("GMM_API_KEY", "right-key")
    with Client() as from_env:
        assert from_env.base_url == keyed_server.base_url
        assert from_env.healthz()["status"] == "ok"
        assert from_env.list_models()["total"] == 0


def test_async_client_has_the_same_operations(live_server: ServerProcess) -> None:
    X = seed()

    async def run() -> None:
        async with AsyncClient(live_server.base_url) as gmm:
            model = await gmm.create_model(
                "gaussian_mixture", X, {"n_components": 4, "random_state": 0}, wait=False
            )
            out = await gmm.predict(model["id"], X)
            ref = GaussianMixture(4, random_state=0).fit(X)
            np.testing.assert_array_equal(out["labels"], ref.predict(X))
            ids = [m["id"] async for m in gmm.iter_models()]
            assert model["id"] in ids
            with pytest.raises(NotFound):
                await gmm.get_model("0" * 32)

    asyncio.run(run())


def test_busy_is_retried_after_retry_after() -> None:
    import httpx

    answers = iter([429, 429, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        if status == 429:
            return httpx.Response(
                429,
                headers={"Retry-After": "0", "Content-Type": "application/problem+json"},
                json={"type": "x/busy", "title": "Busy", "status": 429},
            )
        return httpx.Response(200, json={"status": "ok"})

    with Client("http://test", transport=httpx.MockTransport(handler)) as gmm:
        assert gmm.healthz() == {"status": "ok"}
    with (
        Client(
            "http://test",
            transport=httpx.MockTransport(lambda r: httpx.Response(429, json={"status": 429})),
            retries_on_busy=0,
        ) as gmm,
        pytest.raises(Busy),
    ):
        gmm.healthz()


def test_an_answer_that_is_not_a_problem_still_raises_a_problem_error() -> None:
    import httpx

    response = httpx.Response(
        400, text="<html>bad gateway</html>", request=httpx.Request("GET", "http://x")
    )
    error = problem_from(response)
    assert isinstance(error, BadRequest) and isinstance(error, ProblemError)
    assert "bad gateway" in error.detail


def test_find_rename_and_tag_models(gmm: Client) -> None:
    X = seed()
    first = gmm.create_model("kmeans", X, {"n_clusters": 2, "n_init": 1}, name="find-me")
    second = gmm.create_model(
        "gaussian_mixture", X, {"n_components": 2}, name="find-me", tags={"stage": "dev"}
    )
    named = gmm.list_models(name="find-me")
    assert [m["id"] for m in named["items"]] == [second["id"], first["id"]]  # newest first
    assert [m["id"] for m in gmm.list_models(name="find-me", algorithm="kmeans")["items"]] == [
        first["id"]
    ]
    assert [m["id"] for m in gmm.list_models(tag={"stage": "dev"})["items"]] == [second["id"]]
    changed = gmm.update_model(first["id"], name="found", tags={"stage": "prod", "team": "a"})
    assert changed["name"] == "found" and changed["tags"] == {"stage": "prod", "team": "a"}
    kept = gmm.update_model(first["id"], tags={"team": None})  # merge: the name stays
    assert kept["name"] == "found" and kept["tags"] == {"stage": "prod"}
    assert gmm.update_model(first["id"], name=None)["name"] is None
    assert gmm.get_model(first["id"])["tags"] == {"stage": "prod"}
    with pytest.raises(InvalidInput) as info:
        gmm.update_model(first["id"], tags={"bad key!": "x"})
    assert info.value.errors[0]["loc"][:2] == ["body", "tags"]


def test_a_file_is_streamed_to_create_dataset_and_sent_whole_again_after_429(
    tmp_path: Path,
) -> None:
    import httpx

    text = b"x,y\n" + b"".join(b"%d,%d\n" % (i, 2 * i) for i in range(50_000))
    (tmp_path / "X.csv").write_bytes(text)
    seen: list[tuple[httpx.Request, bool, bytes]] = []

    def answer(request: httpx.Request, body: bytes, in_memory: bool) -> httpx.Response:
        seen.append((request, in_memory, body))
        if len(seen) % 2:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"status": 429})
        return httpx.Response(201, json={"id": "d", "n_samples": 50_000})

    class Streams(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            in_memory = isinstance(request.stream, httpx.ByteStream)
            return answer(request, b"".join(request.stream), in_memory)  # type: ignore[arg-type]

    class AsyncStreams(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            in_memory = isinstance(request.stream, httpx.ByteStream)
            body = b"".join([chunk async for chunk in request.stream])  # type: ignore[union-attr]
            return answer(request, body, in_memory)

    with Client("http://test", transport=Streams()) as gmm:
        with open(tmp_path / "X.csv", "rb") as file:
            resource, created = gmm.upload_dataset(file, "text/csv", name="X.csv")
        assert (resource["id"], created) == ("d", True)

    async def run() -> None:
        async with AsyncClient("http://test", transport=AsyncStreams()) as agmm:
            with open(tmp_path / "X.csv", "rb") as file:
                assert (await agmm.create_dataset(file, content_type="text/csv"))["id"] == "d"

    asyncio.run(run())
    assert len(seen) == 4
    for request, in_memory, body in seen:  # read from the file as it is sent, whole each time
        assert not in_memory and body == text
        assert request.headers["content-type"] == "text/csv"
    assert seen[0][0].url.params["name"] == "X.csv"


# -- long work answered 202: followed, then its result read ---------------------------

FIT_RESULT = {
    "id": MODEL_ID,
    "algorithm": "kmeans",
    "means": [[0.0, 0.0], [5.0, 5.0]],
    "inertia": 1.5,
    "n_iter": 2,
    "labels": [0, 1, 1],
}


def test_a_202_fit_is_followed_then_answers_what_a_201_would() -> None:
    import httpx

    fake = JobService(FIT_RESULT)
    seen: list[str] = []
    with Client("http://test", transport=httpx.MockTransport(fake)) as gmm:
        model = gmm.create_model(
            "kmeans", [[0.0, 0.0], [5.0, 5.0], [5.0, 6.0]], {"n_clusters": 2},
            include=["labels"], progress=lambda job: seen.append(job["status"]),
        )  # fmt: skip
    assert model == FIT_RESULT  # the labels included, as a 201 has them
    assert seen == ["queued", "running", "succeeded"]
    assert fake.calls[-1] == f"GET /v1/jobs/{JOB_ID}/result"
    assert f"GET /v1/models/{MODEL_ID}" not in fake.calls
    assert fake.bodies[0]["include"] == ["labels"]


@pytest.mark.parametrize("operation", ["select_model", "compare_algorithms"])
def test_a_202_selection_or_comparison_answers_its_result(operation: str) -> None:
    import httpx

    result = {"scores": [{"n_components": 1, "bic": 3.0}], "best": {"n_components": 1}}
    X = [[0.0, 0.0], [1.0, 1.0]]
    args: dict[str, Any] = {
        "select_model": {"n_components": [1]},
        "compare_algorithms": {"algorithms": [{"algorithm": "kmeans"}]},
    }[operation]

    async def run_async() -> Any:
        fake = JobService(result)
        async with AsyncClient("http://test", transport=httpx.MockTransport(fake)) as agmm:
            return await getattr(agmm, operation)(X, **args), fake.calls

    fake = JobService(result)
    with Client("http://test", transport=httpx.MockTransport(fake)) as gmm:
        assert getattr(gmm, operation)(X, **args) == result
    assert fake.calls[-1] == f"GET /v1/jobs/{JOB_ID}/result"
    answer, calls = asyncio.run(run_async())
    assert answer == result and calls == fake.calls


def test_a_service_without_the_result_route_answers_as_before_or_says_why_not() -> None:
    import httpx

    fake = JobService(FIT_RESULT, result_route=False)
    with Client("http://test", transport=httpx.MockTransport(fake)) as gmm:
        X = [[0.0, 0.0], [5.0, 5.0], [5.0, 6.0]]
        model = gmm.create_model("kmeans", X, {"n_clusters": 2}, wait=False)
        assert model == {k: v for k, v in FIT_RESULT.items() if k != "labels"}
        assert fake.calls[-1] == f"GET /v1/models/{MODEL_ID}"
        fake.polls = 0
        # never a model without the arrays asked for
        with pytest.raises(GMMError, match=f"stored model {MODEL_ID}.*labels"):
            gmm.create_model("kmeans", X, {"n_clusters": 2}, include=["labels"], wait=False)
        fake.polls = 0
        result = {"scores": [], "best": None}
        fake.result = result
        assert gmm.select_model(X, [1], wait=False) == result  # the job's own result


def test_an_unknown_job_at_the_result_route_is_not_found() -> None:
    import httpx

    fake = JobService(FIT_RESULT)
    with Client("http://test", transport=httpx.MockTransport(fake)) as gmm:
        assert gmm.get_job_result(JOB_ID) == FIT_RESULT
        with pytest.raises(NotFound) as info:
            gmm.get_job_result("0" * 28)
        assert info.value.type == "urn:gmm-service:problem:not-found"


def test_clients_share_the_tls_context_of_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Made once (it reads the CA bundle): remote estimators each open a client."""
    import certifi

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    default = _verify()
    assert _verify() is default
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())  # read as httpx reads it
    own = _verify()
    assert own is not default and _verify() is own
    Client("https://127.0.0.1:1").close()
    asyncio.run(AsyncClient("https://127.0.0.1:1").aclose())


def test_list_models_by_creation_time(gmm: Any) -> None:
    import datetime as dt

    client = gmm
    made = client.create_model("kmeans", _POINTS_FOR_TIME, {"n_clusters": 2, "n_init": 1})
    created = dt.datetime.fromisoformat(made["created_at"].replace("Z", "+00:00"))
    before = client.list_models(created_before=created - dt.timedelta(seconds=1))
    after = client.list_models(created_after=created - dt.timedelta(seconds=1))
    assert made["id"] not in [m["id"] for m in before["items"]]
    assert made["id"] in [m["id"] for m in after["items"]]
    assert client.list_models(created_before="2000-01-01T00:00:00Z")["total"] == 0


_POINTS_FOR_TIME = [[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]]


def test_a_model_fitted_with_a_ttl_says_when_it_goes(gmm: Any) -> None:
    made = gmm.create_model("kmeans", _POINTS_FOR_TIME, {"n_clusters": 2}, ttl_seconds=3600)
    assert made["expires_at"] > made["created_at"]
    assert gmm.update_model(made["id"], ttl_seconds=None)["expires_at"] is None
    gmm.delete_model(made["id"])


def test_a_dataset_stored_with_a_ttl_says_when_it_goes(gmm: Any) -> None:
    X = np.random.default_rng(11).normal(size=(30, 2))
    dataset = gmm.create_dataset(X, ttl_seconds=3600)
    assert dataset["expires_at"] > dataset["created_at"]
    gmm.delete_dataset(dataset["id"])
