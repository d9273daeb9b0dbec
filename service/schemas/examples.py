"""OpenAPI examples, defined once: request specs shared by several operations, and
example responses computed once from real fits and committed.

Swagger's "Try it out" sends request examples as they are, so each one is a request
that works. The response examples come from the *seed-blobs* example of
``POST /v1/models``.

The model is the *seed-blobs* example of ``POST /v1/models`` (the notebook's
``make_blobs(n_samples=200, centers=4, cluster_std=1.6, random_state=10)`` fitted by
``GaussianMixture(n_components=4, random_state=0)``); the numbers are scikit-learn's,
rounded to 4 decimals. Per-point arrays show their first 5 rows. A test
(``tests/test_openapi.py``) refits the seed model and checks that these still agree,
so the examples cannot drift from what the service answers.
"""

from __future__ import annotations

from typing import Any

#: The notebook's blobs: ``make_blobs(n_samples=200, n_features=2, centers=4,
#: cluster_std=1.6, random_state=10)``, the seed example everywhere.
SEED_BLOBS: dict[str, Any] = {
    "kind": "blobs",
    "n_samples": 200,
    "n_features": 2,
    "centers": 4,
    "cluster_std": 1.6,
    "random_state": 10,
}

#: Two elongated, overlapping Gaussians: the notebook's picture of why covariances matter.
NOTEBOOK_ELLIPSES: dict[str, Any] = {
    "kind": "gaussian_mixture",
    "random_state": 0,
    "components": [
        {"mean": [0, 1], "cov": [[1, 0.9], [0.9, 2]], "n_samples": 1000},
        {"mean": [1, -2], "cov": [[2, -1], [-1, 1]], "n_samples": 1000},
    ],
}

#: Generator specs for ``POST /v1/datasets/generate``.
GENERATE_EXAMPLES: dict[str, dict[str, Any]] = {
    "seed-blobs": {"summary": "The notebook's blobs", "value": SEED_BLOBS},
    "notebook-ellipses": {
        "summary": "Two elongated, overlapping Gaussians (valid covariances)",
        "value": NOTEBOOK_ELLIPSES,
    },
}

#: The same specs for ``POST /v1/datasets/plot``, where the true ellipses are drawn.
PLOT_GENERATOR_EXAMPLES: dict[str, dict[str, Any]] = {
    "seed-blobs": GENERATE_EXAMPLES["seed-blobs"],
    "notebook-ellipses": {
        "summary": "Two elongated, overlapping Gaussians (their true ellipses are drawn)",
        "value": NOTEBOOK_ELLIPSES,
    },
}

#: Points near two of the seed model's components, for predict and score.
SEED_POINTS: list[list[float]] = [[-6, 5], [5, -9]]

#: ``GET /v1/models/{model_id}`` of the seed model.
SEED_MODEL: dict[str, Any] = {
    "aic": 2054.3143,
    "algorithm": "gaussian_mixture",
    "bic": 2130.1756,
    "converged": True,
    "covariance_type": "full",
    "covariances": [
        [[2.5545, -0.3636], [-0.3636, 1.9463]],
        [[2.2761, 0.2445], [0.2445, 2.7723]],
        [[2.7476, 0.5267], [0.5267, 2.3681]],
        [[2.0746, -0.1189], [-0.1189, 1.7128]],
    ],
    "created_at": "2026-11-29T08:10:45.139Z",
    "expires_at": None,
    "dataset_id": "859944d816869058dd1f7cf173b7e0c66cfd31d1382c6e23bc317e742994cbfd",
    "fit_seconds": 0.2037,
    "id": "01a2265b4413fa62e44ad9b4a6f8",
    "imported": False,
    "lower_bound": -5.0208,
    "lower_bounds": [-5.0212, -5.0208],
    "means": [[-5.7198, 5.0828], [5.5056, -9.5642], [2.9582, 4.8996], [-0.028, -5.4563]],
    "n_components": 4,
    "n_features": 2,
    "n_iter": 2,
    "n_samples": 200,
    "name": "seed-blobs",
    "tags": {},
    "params": {
        "covariance_type": "full",
        "init_params": "kmeans",
        "max_iter": 100,
        "means_init": None,
        "n_components": 4,
        "n_init": 1,
        "precisions_init": None,
        "random_state": 0,
        "reg_covar": 0.0,
        "tol": 0.001,
        "weights_init": None,
    },
    "precisions": [
        [[0.4022, 0.0751], [0.0751, 0.5278]],
        [[0.4435, -0.0391], [-0.0391, 0.3642]],
        [[0.3802, -0.0845], [-0.0845, 0.4411]],
        [[0.4839, 0.0336], [0.0336, 0.5862]],
    ],
    "warnings": [],
    "weights": [0.2494, 0.2549, 0.2506, 0.2451],
}
#: The seed model as ``GET /v1/models`` lists it (``models.LIST_OMITS`` left out).
SEED_SUMMARY: dict[str, Any] = {
    k: v for k, v in SEED_MODEL.items() if k not in ("covariances", "precisions", "lower_bounds")
}

#: ``POST /v1/models`` with the seed example: the resource plus per-point arrays.
SEED_FITTED: dict[str, Any] = {
    **SEED_MODEL,
    "labels": [2, 3, 0, 0, 1],
    "probabilities": [
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0057, 0.0, 0.9943],
        [1.0, 0.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
    ],
}

#: ``POST /v1/models/{model_id}/predict`` with ``SEED_POINTS``.
SEED_PREDICTION: dict[str, Any] = {
    "labels": [0, 1],
    "probabilities": [[1.0, 0.0, 0.0, 0.0], [0.0, 0.9999, 0.0, 0.0001]],
}

#: ``POST /v1/models/{model_id}/score`` with ``SEED_POINTS``.
SEED_SCORE: dict[str, Any] = {
    "log_likelihood": [-4.0344, -4.2466],
    "score": -4.1405,
    "percentile": [94.5, 80.5],
    "bic": 32.5045,
    "aic": 62.5621,
}

#: ``POST /v1/models/{model_id}/sample`` with ``SEED_SAMPLE_REQUEST``.
SEED_SAMPLE_REQUEST: dict[str, Any] = {"n_samples": 3, "random_state": 0}
SEED_SAMPLE: dict[str, Any] = {
    "points": [[-1.5753, 5.1081], [7.6526, -11.9879], [-1.9779, -5.5567]],
    "labels": [0, 1, 3],
}

#: ``GET /v1/models/{model_id}/ellipses`` of the seed model.
SEED_ELLIPSES: dict[str, Any] = {
    "model_id": "01a2265b4413fa62e44ad9b4a6f8",
    "algorithm": "gaussian_mixture",
    "covariance_type": "full",
    "projection": "identity",
    "n_features": 2,
    "n_sigmas": [1, 2, 3],
    "components": [
        {
            "component": 0,
            "mean": [-5.7198, 5.0828],
            "weight": 0.2494,
            "sigmas": [
                {"n_sigma": 1, "width": 3.3012, "height": 2.6656, "angle": 154.9551},
                {"n_sigma": 2, "width": 6.6023, "height": 5.3312, "angle": 154.9551},
                {"n_sigma": 3, "width": 9.9035, "height": 7.9968, "angle": 154.9551},
            ],
        },
        {
            "component": 1,
            "mean": [5.5056, -9.5642],
            "weight": 0.2549,
            "sigmas": [
                {"n_sigma": 1, "width": 3.3897, "height": 2.9502, "angle": 67.7118},
                {"n_sigma": 2, "width": 6.7794, "height": 5.9004, "angle": 67.7118},
                {"n_sigma": 3, "width": 10.1691, "height": 8.8506, "angle": 67.7118},
            ],
        },
        {
            "component": 2,
            "mean": [2.9582, 4.8996],
            "weight": 0.2506,
            "sigmas": [
                {"n_sigma": 1, "width": 3.5314, "height": 2.827, "angle": 35.0918},
                {"n_sigma": 2, "width": 7.0628, "height": 5.6541, "angle": 35.0918},
                {"n_sigma": 3, "width": 10.5941, "height": 8.4811, "angle": 35.0918},
            ],
        },
        {
            "component": 3,
            "mean": [-0.028, -5.4563],
            "weight": 0.2451,
            "sigmas": [
                {"n_sigma": 1, "width": 2.9053, "height": 2.5901, "angle": 163.3407},
                {"n_sigma": 2, "width": 5.8107, "height": 5.1802, "angle": 163.3407},
                {"n_sigma": 3, "width": 8.716, "height": 7.7703, "angle": 163.3407},
            ],
        },
    ],
    "pca": None,
}

#: ``POST /v1/datasets/generate`` with the seed blobs (first 5 points).
SEED_GENERATED: dict[str, Any] = {
    "points": [
        [2.1994, 6.3332],
        [0.9625, -7.2138],
        [-7.0216, 6.5499],
        [-5.6769, 5.0252],
        [5.8512, -9.4113],
    ],
    "labels": [1, 2, 3, 3, 0],
}

#: ``POST /v1/model-selection`` on the seed blobs, grid ``n_components: [3, 4, 5]``.
SEED_SELECTION: dict[str, Any] = {
    "criterion": "bic",
    "scores": [
        {
            "n_components": 3,
            "covariance_type": "full",
            "bic": 2155.621,
            "aic": 2099.5496,
            "converged": True,
            "n_iter": 2,
            "lower_bound": -5.1639,
            "fit_seconds": 0.2669,
            "warnings": [],
            "error": None,
        },
        {
            "n_components": 4,
            "covariance_type": "full",
            "bic": 2130.1756,
            "aic": 2054.3143,
            "converged": True,
            "n_iter": 2,
            "lower_bound": -5.0208,
            "fit_seconds": 0.3293,
            "warnings": [],
            "error": None,
        },
        {
            "n_components": 5,
            "covariance_type": "full",
            "bic": 2151.4418,
            "aic": 2055.7906,
            "converged": True,
            "n_iter": 10,
            "lower_bound": -4.9945,
            "fit_seconds": 0.5495,
            "warnings": [],
            "error": None,
        },
    ],
    "best": {
        "n_components": 4,
        "covariance_type": "full",
        "bic": 2130.1756,
        "aic": 2054.3143,
        "converged": True,
        "n_iter": 2,
        "lower_bound": -5.0208,
        "fit_seconds": 0.3293,
        "warnings": [],
        "error": None,
        "model_id": None,
    },
    "warnings": [],
}

#: ``POST /v1/comparisons`` with its ``kmeans-vs-mixture`` example (first 5 labels).
ELLIPSES_COMPARISON: dict[str, Any] = {
    "results": [
        {
            "algorithm": "kmeans",
            "params": {
                "n_clusters": 2,
                "init": "random",
                "n_init": 10,
                "max_iter": 300,
                "tol": 0.0001,
                "random_state": 0,
                "algorithm": "lloyd",
            },
            "labels": [1, 1, 0, 1, 1],
            "n_clusters": 2,
            "fit_seconds": 0.0804,
            "silhouette_score": 0.4754,
            "adjusted_rand_score": 0.6673,
            "adjusted_mutual_info_score": 0.5665,
            "normalized_mutual_info_score": 0.5666,
            "homogeneity_score": 0.5657,
            "completeness_score": 0.5676,
            "v_measure_score": 0.5666,
            "warnings": [],
        },
        {
            "algorithm": "gaussian_mixture",
            "params": {
                "n_components": 2,
                "covariance_type": "full",
                "tol": 0.001,
                "reg_covar": 0.0,
                "max_iter": 100,
                "n_init": 1,
                "init_params": "kmeans",
                "random_state": 0,
                "weights_init": None,
                "means_init": None,
                "precisions_init": None,
            },
            "labels": [1, 1, 0, 1, 1],
            "n_clusters": 2,
            "fit_seconds": 0.033,
            "silhouette_score": 0.4599,
            "adjusted_rand_score": 0.7309,
            "adjusted_mutual_info_score": 0.6301,
            "normalized_mutual_info_score": 0.6302,
            "homogeneity_score": 0.6296,
            "completeness_score": 0.6307,
            "v_measure_score": 0.6302,
            "warnings": [],
        },
    ],
    "silhouette": {"sample_size": None, "random_state": None},
    "warnings": [],
}
