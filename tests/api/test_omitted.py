"""Past GMM_MAX_DEFAULT_PER_POINT_VALUES, a fit answers without the per-point arrays it
was not asked for by name, and says so; named in ``include``, they come at any size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.mixture import GaussianMixture

from service.config import Settings
from service.main import create_app

#: 12 points: labels are 12 numbers, a 2-component mixture's probabilities 24 more.
X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [5.0, 5.0], [5.0, 6.0], [6.0, 5.0]] * 2)
X = X + np.arange(len(X))[:, None] * 1e-3


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        store_dir=tmp_path / "store", secret_key="k", max_default_per_point_values=30
    )
    with TestClient(create_app(settings)) as c:
        yield c


def fit(client: TestClient, algorithm: str, **extra: Any) -> dict[str, Any]:
    k = "n_components" if algorithm == "gaussian_mixture" else "n_clusters"
    body = {
        "algorithm": algorithm,
        "params": {k: 2, "random_state": 0},
        "data": {"points": X.tolist()},
        **extra,
    }
    r = client.post("/v1/models", json=body)
    assert r.status_code == 201, r.text
    answer: dict[str, Any] = r.json()
    return answer


def test_default_arrays_past_the_limit_are_omitted_and_named(client: TestClient) -> None:
    answer = fit(client, "gaussian_mixture")  # 12 labels + 24 probabilities > 30
    assert answer["omitted"] == ["labels", "probabilities"]
    assert "labels" not in answer and "probabilities" not in answer
    note = answer["warnings"][-1]
    assert note["category"] == "ResponseSizeWarning"
    assert "include" in note["message"] and f"/v1/models/{answer['id']}/predict" in note["message"]
    # The stored resource is the model, not this answer's note.
    stored = client.get(f"/v1/models/{answer['id']}").json()
    assert "omitted" not in stored and note not in stored["warnings"]
    # The way the note names gives exactly what was left out.
    pred = client.post(f"/v1/models/{answer['id']}/predict", json={"points": X.tolist()}).json()
    gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    np.testing.assert_array_equal(pred["labels"], gm.predict(X))


def test_named_arrays_come_at_any_size(client: TestClient) -> None:
    answer = fit(client, "gaussian_mixture", include=["labels", "probabilities"])
    assert "omitted" not in answer
    gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    np.testing.assert_array_equal(answer["labels"], gm.predict(X))
    np.testing.assert_allclose(answer["probabilities"], gm.predict_proba(X), rtol=1e-12)


def test_default_arrays_within_the_limit_are_answered(client: TestClient) -> None:
    answer = fit(client, "kmeans")  # 12 labels <= 30
    assert "omitted" not in answer
    assert len(answer["labels"]) == len(X)
