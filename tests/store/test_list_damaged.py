"""A damaged model is skipped by listings but still reported when read by id."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from service.config import Settings

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
    meta_path = settings.store_dir / "models" / bad / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["resource"]["name"] = "forged"
    meta_path.write_text(json.dumps(meta))
    listed = client.get("/v1/models")
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["items"]] == [good]
    r = client.get(f"/v1/models/{bad}")
    assert r.status_code == 500
    assert r.json()["type"].endswith("artifact-integrity")
