"""Shared fixtures: every test gets its own app over a real store in ``tmp_path``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app

SEED_BLOBS = {
    "kind": "blobs",
    "n_samples": 200,
    "n_features": 2,
    "centers": 4,
    "cluster_std": 1.6,
    "random_state": 10,
}
#: The seed-blobs fit as a ``POST /v1/models`` body.
SEED_FIT = {
    "algorithm": "gaussian_mixture",
    "params": {"n_components": 4, "random_state": 0},
    "data": {"generator": SEED_BLOBS},
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store_dir=tmp_path / "store", secret_key="test-secret-key")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c
