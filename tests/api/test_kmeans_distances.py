"""KMeans ``distances`` over HTTP are sklearn's ``transform``, bit for bit.

The data is sklearn's own ``test_transform`` data (``sklearn/cluster/tests/
test_k_means.py``), where a point equal to a center is 8e-8 from it by the
``|x|^2 - 2 x.c + |c|^2`` formula that ``euclidean_distances`` uses. sklearn answers
exactly 0 for ``transform(cluster_centers_)`` (``euclidean_distances`` zeroes the
diagonal when ``X is Y``), which is what ``test_transform`` checks. Points that arrive
over HTTP are always a new array, so the service zeroes exact matches itself: at a
center it answers what ``transform(cluster_centers_)`` answers, elsewhere what
``transform`` answers for the same points.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.testing import assert_array_equal
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.datasets import make_blobs

CENTERS = np.array(
    [[0.0, 5.0, 0.0, 0.0, 0.0], [1.0, 1.0, 4.0, 0.0, 0.0], [1.0, 0.0, 0.0, 5.0, 1.0]]
)
ESTIMATORS = {"kmeans": KMeans, "minibatch_kmeans": MiniBatchKMeans}


@pytest.mark.parametrize("algorithm", ESTIMATORS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distances_are_sklearns_transform(client: TestClient, algorithm: str, seed: int) -> None:
    X, _ = make_blobs(n_samples=100, centers=CENTERS, cluster_std=1.0, random_state=42)
    params = {"n_clusters": 3, "random_state": seed}
    est = ESTIMATORS[algorithm](**params).fit(X)
    r = client.post(
        "/v1/models",
        json={"algorithm": algorithm, "params": params, "data": {"points": X.tolist()}},
    )
    assert r.status_code == 201, r.text
    model = r.json()
    assert_array_equal(model["means"], est.cluster_centers_)

    centers = np.array(model["means"])  # equal to est.cluster_centers_, not the same array
    rng = np.random.RandomState(seed)
    probes = {
        "centers": centers,
        "random": rng.uniform(-3, 8, size=(50, 5)),
        "training": X,
        "mixed": np.vstack([centers[::-1], X[:5], centers]),
    }
    for name, points in probes.items():
        answer = client.post(f"/v1/models/{model['id']}/predict", json={"points": points.tolist()})
        assert answer.status_code == 200, answer.text
        expected = est.transform(points)
        expected[(points[:, None, :] == est.cluster_centers_[None]).all(axis=2)] = 0.0
        assert_array_equal(answer.json()["distances"], expected, err_msg=name)
        assert_array_equal(answer.json()["labels"], est.predict(points), err_msg=name)

    # What sklearn's test_transform checks: transform(cluster_centers_) is exactly
    # sklearn's, zero diagonal included (a copy of the centers is ~1e-8 off in sklearn).
    on_centers = client.post(f"/v1/models/{model['id']}/predict", json={"points": centers.tolist()})
    assert_array_equal(on_centers.json()["distances"], est.transform(est.cluster_centers_))
    assert_array_equal(np.diag(on_centers.json()["distances"]), np.zeros(3))
