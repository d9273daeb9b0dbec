"""Finding models: ``GET /v1/models`` filters, and ``PATCH /v1/models/{id}`` names and tags.

Against the real app over a real store in ``tmp_path``: filters are checked against
what was created, pages against the filtered set, and every PATCH against RFC 7396
merge semantics, the documented limits and the content types a merge patch may use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import joblib
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.domain.training.estimators import ALGORITHMS
from service.main import create_app
from service.schemas.models import MAX_TAGS, AlgorithmName
from service.store.signing import ARTIFACT

PROBLEM = "application/problem+json"
MERGE_PATCH = "application/merge-patch+json"
POINTS = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [10.0, 10.0], [10.0, 11.0], [11.0, 10.0]]


def _create(
    client: TestClient,
    *,
    algorithm: str = "kmeans",
    name: str | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    k = "n_components" if "mixture" in algorithm else "n_clusters"
    params: dict[str, Any] = {k: 2, "random_state": 0}
    if algorithm == "kmeans":
        params["n_init"] = 1
    body: dict[str, Any] = {
        "algorithm": algorithm,
        "params": params,
        "data": {"points": POINTS},
        "include": [],
    }
    if name is not None:
        body["name"] = name
    if tags is not None:
        body["tags"] = tags
    r = client.post("/v1/models", json=body)
    assert r.status_code == 201, r.text
    resource: dict[str, Any] = r.json()
    return resource


def _ids(client: TestClient, **params: Any) -> list[str]:
    r = client.get("/v1/models", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    return [m["id"] for m in r.json()["items"]]


def _patch(client: TestClient, model_id: str, body: Any, content_type: str = MERGE_PATCH) -> Any:
    import json

    return client.patch(
        f"/v1/models/{model_id}",
        content=json.dumps(body).encode(),
        headers={"Content-Type": content_type},
    )


def _problem(r: Any, status: int, loc: list[str | int] | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    if loc is not None:
        assert loc in [e["loc"] for e in body["errors"]], body
    return body


@pytest.fixture
def catalogue(client: TestClient) -> dict[str, str]:
    """Six models, created oldest first: names, algorithms and tags to filter on."""
    made = {
        "a": _create(client, name="alpha", tags={"stage": "dev", "team": "x"}),
        "b": _create(client, algorithm="gaussian_mixture", name="alpha", tags={"stage": "prod"}),
        "c": _create(client, name="beta", tags={"stage": "prod", "team": "x"}),
        "d": _create(client, algorithm="gaussian_mixture"),
        "e": _create(client, name="Alpha", tags={"k8s.io/app": "web", "url": "http://x:80"}),
        "f": _create(client, algorithm="minibatch_kmeans", name="alpha", tags={"team": "x"}),
    }
    return {key: m["id"] for key, m in made.items()}


# -- filters ----------------------------------------------------------------------------
def test_the_algorithm_filter_offers_exactly_the_fitted_algorithms() -> None:
    assert set(get_args(AlgorithmName)) == set(ALGORITHMS)


def test_name_filter_is_an_exact_match_newest_first(
    client: TestClient, catalogue: dict[str, str]
) -> None:
    c = catalogue
    assert _ids(client, name="alpha") == [c["f"], c["b"], c["a"]]
    assert _ids(client, name="Alpha") == [c["e"]]  # case matters
    assert _ids(client, name="alph") == []  # no prefix match
    assert client.get("/v1/models", params={"name": "alpha"}).json()["total"] == 3


def test_algorithm_filter(client: TestClient, catalogue: dict[str, str]) -> None:
    c = catalogue
    assert _ids(client, algorithm="gaussian_mixture") == [c["d"], c["b"]]
    assert _ids(client, algorithm="kmeans") == [c["e"], c["c"], c["a"]]
    assert _ids(client, algorithm="bayesian_gaussian_mixture") == []
    assert _ids(client, algorithm="kmeans", name="alpha") == [c["a"]]


def test_unknown_algorithm_is_a_422_naming_the_query_parameter(client: TestClient) -> None:
    r = client.get("/v1/models", params={"algorithm": "dbscan"})
    body = _problem(r, 422, ["query", "algorithm"])
    assert body["type"].endswith("validation-error")


def test_tag_filters_must_all_match(client: TestClient, catalogue: dict[str, str]) -> None:
    c = catalogue
    assert _ids(client, tag="team:x") == [c["f"], c["c"], c["a"]]
    assert _ids(client, tag=["team:x", "stage:prod"]) == [c["c"]]
    assert _ids(client, tag=["stage:prod", "stage:dev"]) == []
    assert _ids(client, tag="stage:prod", algorithm="gaussian_mixture") == [c["b"]]
    assert _ids(client, tag="stage:pro") == []  # values match exactly
    r = client.get("/v1/models", params={"tag": ["team:x", "stage:prod"]})
    assert r.json()["total"] == 1


def test_tag_filters_with_colons_in_keys_and_values(
    client: TestClient, catalogue: dict[str, str]
) -> None:
    c = catalogue
    assert _ids(client, tag="k8s.io/app:web") == [c["e"]]
    assert _ids(client, tag="url:http://x:80") == [c["e"]]
    assert _ids(client, tag="url:http://x") == []


def test_empty_tag_values_are_tags_too(client: TestClient) -> None:
    model = _create(client, tags={"reviewed": ""})
    assert _ids(client, tag="reviewed:") == [model["id"]]


@pytest.mark.parametrize(
    "params",
    [
        {"tag": "no-colon"},
        {"tag": ":value-without-key"},
        {"tag": "bad key:v"},
        {"tag": "k:" + "v" * 257},
        {"name": ""},
        {"name": "x" * 201},
    ],
)
def test_malformed_filters_are_422(client: TestClient, params: dict[str, str]) -> None:
    (param,) = params
    body = _problem(client.get("/v1/models", params=params), 422)
    # A repeatable parameter's errors also name the repetition: ["query", "tag", 0].
    assert [e["loc"][:2] for e in body["errors"]] == [["query", param]]


def test_pages_and_total_are_those_of_the_filtered_set(client: TestClient) -> None:
    matching = []
    for i in range(9):
        model = _create(client, tags={"batch": "yes"} if i % 2 == 0 else {"batch": "no"})
        if i % 2 == 0:
            matching.append(model["id"])
    newest_first = matching[::-1]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, "tag": "batch:yes"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/models", params=params).json()
        assert page["total"] == 5
        assert page["items"], "a filter never leaves an empty page at the end"
        seen += [m["id"] for m in page["items"]]
        pages += 1
        if not (cursor := page["next_cursor"]):
            break
    assert seen == newest_first
    assert pages == 3
    everything = client.get("/v1/models").json()
    assert everything["total"] == 9


def test_listing_without_filters_is_unchanged(
    client: TestClient, catalogue: dict[str, str]
) -> None:
    page = client.get("/v1/models").json()
    assert [m["id"] for m in page["items"]] == list(catalogue.values())[::-1]
    assert page["total"] == 6 and page["next_cursor"] is None


def test_filtering_never_unpickles(
    client: TestClient, catalogue: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filters read the signed metadata only: a listing works with unpickling broken."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a listing unpickled a model")

    monkeypatch.setattr(joblib, "load", refuse)
    assert len(_ids(client, name="alpha", tag="team:x")) == 2
    assert client.get("/v1/models", params={"algorithm": "kmeans"}).json()["total"] == 3


# -- tags at creation ---------------------------------------------------------------------
def test_tags_at_creation_are_shown_everywhere(client: TestClient) -> None:
    model = _create(client, name="tagged", tags={"stage": "dev"})
    assert model["tags"] == {"stage": "dev"}
    assert client.get(f"/v1/models/{model['id']}").json()["tags"] == {"stage": "dev"}
    listed = client.get("/v1/models").json()["items"][0]
    assert (listed["name"], listed["tags"]) == ("tagged", {"stage": "dev"})


def test_a_model_without_tags_has_an_empty_map(client: TestClient) -> None:
    assert _create(client)["tags"] == {}


@pytest.mark.parametrize(
    ("tags", "loc"),
    [
        ({"bad key": "v"}, ["body", "tags", "bad key"]),
        ({"k" * 65: "v"}, ["body", "tags", "k" * 65]),
        ({"k": "v" * 257}, ["body", "tags", "k"]),
        ({"k": 1}, ["body", "tags", "k"]),
        ({f"k{i}": "v" for i in range(MAX_TAGS + 1)}, ["body", "tags"]),
    ],
)
def test_tags_at_creation_are_checked(client: TestClient, tags: Any, loc: list[Any]) -> None:
    body = {
        "algorithm": "kmeans",
        "params": {"n_clusters": 2},
        "data": {"points": POINTS},
        "tags": tags,
    }
    r = client.post("/v1/models", json=body)
    assert r.status_code == 422, r.text
    assert [e["loc"][:2] for e in r.json()["errors"]] == [["body", "tags"]]
    assert _ids(client) == []


# -- PATCH ----------------------------------------------------------------------------
def test_rename(client: TestClient) -> None:
    model = _create(client, name="old", tags={"keep": "me"})
    r = _patch(client, model["id"], {"name": "new"})
    assert r.status_code == 200, r.text
    assert r.json() == {**model, "name": "new"}
    assert client.get(f"/v1/models/{model['id']}").json() == r.json()
    assert _ids(client, name="new") == [model["id"]]
    assert _ids(client, name="old") == []


def test_null_name_removes_it_and_absent_name_keeps_it(client: TestClient) -> None:
    model = _create(client, name="named")
    assert _patch(client, model["id"], {"tags": {"a": "1"}}).json()["name"] == "named"
    assert _patch(client, model["id"], {"name": None}).json()["name"] is None
    assert client.get(f"/v1/models/{model['id']}").json()["name"] is None


def test_tags_merge_as_rfc_7396_says(client: TestClient) -> None:
    model = _create(client, tags={"keep": "1", "change": "old", "gone": "x"})
    r = _patch(client, model["id"], {"tags": {"change": "new", "gone": None, "added": "2"}})
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == {"keep": "1", "change": "new", "added": "2"}
    # Removing a tag that is not there is no error (RFC 7396: nothing to remove).
    assert _patch(client, model["id"], {"tags": {"never": None}}).json()["tags"] == {
        "keep": "1",
        "change": "new",
        "added": "2",
    }
    assert _patch(client, model["id"], {"tags": {}}).json()["tags"] == r.json()["tags"]
    cleared = _patch(client, model["id"], {"tags": None})
    assert cleared.status_code == 200 and cleared.json()["tags"] == {}
    assert client.get(f"/v1/models/{model['id']}").json()["tags"] == {}


def test_an_empty_patch_changes_nothing(client: TestClient) -> None:
    model = _create(client, name="same", tags={"a": "b"})
    r = _patch(client, model["id"], {})
    assert r.status_code == 200 and r.json() == model


def test_patch_keeps_every_other_field_and_the_model_still_predicts(
    client: TestClient, settings: Settings
) -> None:
    model = _create(client, algorithm="gaussian_mixture", name="m")
    before = client.post(f"/v1/models/{model['id']}/predict", json={"points": POINTS}).json()
    artifact = settings.store_dir / "models" / model["id"] / ARTIFACT
    stat = os.stat(artifact)
    blob = artifact.read_bytes()
    r = _patch(client, model["id"], {"name": "n", "tags": {"x": "y"}})
    assert r.json() == {**model, "name": "n", "tags": {"x": "y"}}
    after_stat = os.stat(artifact)
    assert (after_stat.st_ino, after_stat.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert artifact.read_bytes() == blob
    after = client.post(f"/v1/models/{model['id']}/predict", json={"points": POINTS}).json()
    assert after == before


def test_the_tag_limit_applies_after_the_merge(client: TestClient) -> None:
    model = _create(client, tags={f"k{i}": "v" for i in range(MAX_TAGS)})
    body = _problem(_patch(client, model["id"], {"tags": {"one-more": "v"}}), 422, ["body", "tags"])
    assert body["type"].endswith("invalid-input")
    assert str(MAX_TAGS) in body["detail"]
    assert client.get(f"/v1/models/{model['id']}").json()["tags"] == model["tags"]
    # Removing one in the same patch makes room.
    swap = _patch(client, model["id"], {"tags": {"k0": None, "one-more": "v"}})
    assert swap.status_code == 200 and len(swap.json()["tags"]) == MAX_TAGS


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"tags": {"bad key": "v"}}, ["body", "tags", "bad key"]),
        ({"tags": {"": "v"}}, ["body", "tags", ""]),
        ({"tags": {"k" * 65: "v"}}, ["body", "tags", "k" * 65]),
        ({"tags": {"k": "v" * 257}}, ["body", "tags", "k"]),
        ({"tags": {"k": "line\nbreak"}}, ["body", "tags", "k"]),
        ({"tags": {"k": 3}}, ["body", "tags", "k"]),
        ({"tags": {f"k{i}": "v" for i in range(MAX_TAGS + 1)}}, ["body", "tags"]),
        ({"tags": ["k", "v"]}, ["body", "tags"]),
        ({"name": ""}, ["body", "name"]),
        ({"name": "x" * 201}, ["body", "name"]),
        ({"name": 7}, ["body", "name"]),
        ({"algorithm": "kmeans"}, ["body", "algorithm"]),
        ({"id": "0" * 28}, ["body", "id"]),
    ],
)
def test_invalid_patches_are_422_and_change_nothing(
    client: TestClient, body: dict[str, Any], loc: list[Any]
) -> None:
    model = _create(client, name="kept", tags={"a": "b"})
    _problem(_patch(client, model["id"], body), 422, loc)
    assert client.get(f"/v1/models/{model['id']}").json() == model


def test_unknown_fields_are_named(client: TestClient) -> None:
    model = _create(client)
    body = _problem(_patch(client, model["id"], {"name": "x", "labels": {}}), 422)
    assert body["errors"] == [
        {
            "loc": ["body", "labels"],
            "msg": "Unknown field 'labels': it is not a parameter this endpoint accepts.",
            "type": "extra_forbidden",
        }
    ]
    assert client.get(f"/v1/models/{model['id']}").json()["name"] is None


@pytest.mark.parametrize("body", [[], "name", None, 3])
def test_a_patch_that_is_not_an_object_is_422(client: TestClient, body: Any) -> None:
    """RFC 7396 would replace the whole resource with a non-object; that is no edit
    this resource allows."""
    model = _create(client)
    _problem(_patch(client, model["id"], body), 422)


def test_unknown_or_malformed_id_is_404(client: TestClient) -> None:
    for model_id in ("0" * 28, "not-an-id"):
        _problem(_patch(client, model_id, {"name": "x"}), 404)


def test_deleted_model_is_404_and_stays_deleted(client: TestClient) -> None:
    model = _create(client)
    assert client.delete(f"/v1/models/{model['id']}").status_code == 204
    _problem(_patch(client, model["id"], {"name": "back"}), 404)
    assert client.get(f"/v1/models/{model['id']}").status_code == 404
    assert _ids(client) == []


@pytest.mark.parametrize(
    "content_type",
    [MERGE_PATCH, "application/json", "application/merge-patch+json; charset=utf-8"],
)
def test_json_content_types_are_accepted(client: TestClient, content_type: str) -> None:
    model = _create(client)
    r = _patch(client, model["id"], {"name": "ok"}, content_type)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "ok"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/x-npy"]
)
def test_other_content_types_are_415(client: TestClient, content_type: str) -> None:
    model = _create(client, name="kept")
    _problem(_patch(client, model["id"], {"name": "no"}, content_type), 415)
    assert client.get(f"/v1/models/{model['id']}").json()["name"] == "kept"


def test_malformed_json_is_400(client: TestClient) -> None:
    model = _create(client)
    r = client.patch(
        f"/v1/models/{model['id']}", content=b"{name", headers={"Content-Type": MERGE_PATCH}
    )
    _problem(r, 400)


def test_plots_and_exports_show_the_new_name_of_a_cached_model(client: TestClient) -> None:
    """Prediction caches a loaded model; its name and tags are read afresh."""
    model = _create(client, algorithm="gaussian_mixture", name="before")
    client.post(f"/v1/models/{model['id']}/predict", json={"points": POINTS})
    _patch(client, model["id"], {"name": "after", "tags": {"a": "b"}})
    doc = client.get(f"/v1/models/{model['id']}/export").json()
    assert (doc["name"], doc["tags"]) == ("after", {"a": "b"})
    svg = client.get(f"/v1/models/{model['id']}/plot", params={"format": "svg"})
    assert svg.status_code == 200 and b"after" in svg.content and b"before" not in svg.content


def test_export_and_import_carry_name_and_tags(client: TestClient) -> None:
    model = _create(client, algorithm="gaussian_mixture", name="portable", tags={"a": "1"})
    doc = client.get(f"/v1/models/{model['id']}/export").json()
    assert (doc["name"], doc["tags"]) == ("portable", {"a": "1"})
    imported = client.post("/v1/models/import", json=doc)
    assert imported.status_code == 201, imported.text
    assert (imported.json()["name"], imported.json()["tags"]) == ("portable", {"a": "1"})
    assert _ids(client, tag="a:1") == [imported.json()["id"], model["id"]]
    # A document without tags (written before they existed) imports with none.
    del doc["tags"]
    assert client.post("/v1/models/import", json=doc).json()["tags"] == {}
    bad = {**doc, "tags": {"bad key": "v"}}
    assert client.post("/v1/models/import", json=bad).status_code == 422


@pytest.fixture
def keyed_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        store_dir=tmp_path / "keyed", secret_key="k", api_keys="admin-key,reader-key:read"
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_a_read_only_key_may_filter_but_not_patch(keyed_client: TestClient) -> None:
    admin = {"X-API-Key": "admin-key"}
    reader = {"X-API-Key": "reader-key"}
    keyed_client.headers.update(admin)
    model = _create(keyed_client, tags={"a": "b"})
    keyed_client.headers.update(reader)
    assert _ids(keyed_client, tag="a:b") == [model["id"]]
    _problem(_patch(keyed_client, model["id"], {"name": "x"}), 403)
    keyed_client.headers.update(admin)
    assert _patch(keyed_client, model["id"], {"name": "x"}).status_code == 200


def test_creation_time_filters_bound_the_listing(client: TestClient) -> None:
    first = _create(client, name="t")
    second = _create(client, name="t")
    assert first["created_at"] <= second["created_at"]
    at_first = first["created_at"]
    assert _ids(client, created_before=at_first, name="t") == [first["id"]]
    after = _ids(client, created_after=at_first, name="t")
    assert after in ([second["id"]], [])  # [] when both fall in one millisecond
    assert _ids(client, created_after="2000-01-01T00:00:00+02:00", name="t") == [
        second["id"],
        first["id"],
    ]
    assert _ids(client, created_before="2000-01-01T00:00:00Z") == []


@pytest.mark.parametrize("value", ["0.5", "2026-01-01", "2026-01-01T00:00:00", "2026-13-01T00:00Z"])
def test_creation_times_need_a_date_a_time_and_a_zone(client: TestClient, value: str) -> None:
    r = client.get("/v1/models", params={"created_after": value})
    _problem(r, 422, ["query", "created_after"])


def test_a_model_with_a_ttl_is_deleted_when_it_expires(tmp_path: Path) -> None:
    settings = Settings(store_dir=tmp_path / "store", secret_key="k", sweep_interval_seconds=0.1)
    body = {
        "algorithm": "kmeans",
        "params": {"n_clusters": 2, "n_init": 1},
        "data": {"points": POINTS},
        "ttl_seconds": 1,
    }
    with TestClient(create_app(settings)) as client:
        doomed = client.post("/v1/models", json=body).json()
        kept = client.post("/v1/models", json={**body, "ttl_seconds": None}).json()
        assert doomed["expires_at"] > doomed["created_at"] and kept["expires_at"] is None
        # A patch may set a ttl, or clear one: this model was to go, and now stays.
        saved = client.post("/v1/models", json=body).json()
        r = _patch(client, saved["id"], {"ttl_seconds": None})
        assert r.status_code == 200 and r.json()["expires_at"] is None
        r = _patch(client, kept["id"], {"ttl_seconds": 3600})
        assert r.json()["expires_at"] > kept["created_at"]
        deadline = time.monotonic() + 20
        while client.get(f"/v1/models/{doomed['id']}").status_code != 404:
            assert time.monotonic() < deadline, "the expired model was never deleted"
            time.sleep(0.05)
        listed = {m["id"] for m in client.get("/v1/models").json()["items"]}
        assert listed == {kept["id"], saved["id"]}
        assert not (tmp_path / "store" / "models" / doomed["id"]).exists()


@pytest.mark.parametrize("ttl", [0, -1, "60", 1.5, 10 * 365 * 86400 + 1])
def test_a_ttl_is_a_positive_integer_of_seconds(client: TestClient, ttl: Any) -> None:
    body = {"algorithm": "kmeans", "params": {"n_clusters": 2}, "data": {"points": POINTS}}
    r = client.post("/v1/models", json={**body, "ttl_seconds": ttl})
    assert r.status_code == 422 and any(
        e["loc"][-1] == "ttl_seconds" for e in r.json()["errors"]
    ), r.text
