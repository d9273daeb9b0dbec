"""The services without HTTP: what the CLI, a worker or a script builds from settings.
Fit, predict and read back, compared with sklearn in-process."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from service.config import Settings
from service.domain.jobs.service import Waiting
from service.schemas.data import DataSpec
from service.schemas.models import FitRequest
from service.services import build_services


def _params(algorithm: str, **given: object) -> dict[str, object]:
    """Every constructor parameter with its default, as a route passes them."""
    request = TypeAdapter(FitRequest).validate_python(
        {"algorithm": algorithm, "params": given, "data": {"points": [[0.0]]}}
    )
    return request.params.model_dump()


def test_services_fit_predict_and_list_without_an_app(tmp_path: Path) -> None:
    X, _ = make_blobs(n_samples=200, n_features=2, centers=4, cluster_std=1.6, random_state=10)
    services = build_services(Settings(store_dir=tmp_path / "store", secret_key="k"))
    try:
        kind, model = services.training.create_model(
            algorithm="gaussian_mixture",
            params=_params("gaussian_mixture", n_components=4, random_state=0),
            data=DataSpec(points=X.tolist()),
            name="no-http",
            include=["labels", "probabilities"],
            waiting=Waiting.now(),
        )
        assert kind == "done"
        ref = GaussianMixture(n_components=4, random_state=0).fit(X)
        np.testing.assert_array_equal(model["labels"], ref.predict(X))
        np.testing.assert_allclose(model["means"], ref.means_, rtol=1e-12)
        new = np.array([[-6.0, 5.0], [5.0, -9.0]])
        predicted = services.inference.predict(model["id"], new)
        np.testing.assert_array_equal(predicted["labels"], ref.predict(new))
        np.testing.assert_allclose(predicted["probabilities"], ref.predict_proba(new), atol=1e-15)
        page = services.catalogue.list(limit=10, cursor=None, name="no-http")
        assert [m["id"] for m in page["items"]] == [model["id"]]
    finally:
        services.close()


def test_a_job_started_within_zero_seconds_answers_later_with_the_same_numbers(
    tmp_path: Path,
) -> None:
    X, _ = make_blobs(n_samples=300, n_features=3, centers=3, random_state=1)
    services = build_services(Settings(store_dir=tmp_path / "store", secret_key="k"))
    try:
        request = {
            "algorithm": "gaussian_mixture",
            "params": _params("gaussian_mixture", n_components=3, random_state=0),
            "data": DataSpec(points=X.tolist()),
            "name": None,
            "include": None,
        }
        _, now = services.training.create_model(**request, waiting=Waiting.now())
        kind, job = services.training.create_model(**request, waiting=Waiting.later())
        assert kind == "job"
        for _ in range(600):
            job = services.jobs.get(job["id"])
            if job["status"] == "succeeded":
                break
            time.sleep(0.05)
        later = services.training.job_result(job["id"])
        for key in ("labels", "probabilities", "means", "covariances", "weights"):
            np.testing.assert_array_equal(np.asarray(later[key]), np.asarray(now[key]), key)
    finally:
        services.close()
