"""A damaged model is skipped by listings but still reported when read by id."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from service.config import Settings
from tests.helpers_store import read_row, write_row

FIT = {
    "algorithm": "kmeans",
    "params": {"n_clusters": 1},
    "data": {"points": [[0.0, 0.0], [1.0, 1.0]]},
}


def test_list_skips_a_model_whose_metadata_fails_its_signature(
    client: TestClient, settings: Settings
) -> None:
    good = client.post("/v1/models", json=FIT).json()["id"]
    bad = client.post("/v1/models", json=FIT).json()["id"]
    meta = json.loads(read_row(settings.store_dir, "model", bad))
    meta["resource"]["name"] = "forged"
    write_row(settings.store_dir, "model", bad, json.dumps(meta).encode())
    listed = client.get("/v1/models")
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["items"]] == [good]
    r = client.get(f"/v1/models/{bad}")
    assert r.status_code == 500
    assert r.json()["type"].endswith("artifact-integrity")
