"""OpenAPI examples shared by several operations, defined once.

Swagger's "Try it out" sends these as they are, so each one is a request that works.
"""

from __future__ import annotations

from typing import Any

from service.schemas.data import SEED_BLOBS

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
