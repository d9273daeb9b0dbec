"""API keys, security headers, request ids, CORS and load shedding over HTTP."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.middleware import access_log, configure_logging, write_access_line
from service.config import Settings
from service.main import create_app

FIT = {
    "algorithm": "kmeans",
    "params": {"n_clusters": 2, "random_state": 0},
    "data": {"points": [[0.0, 0.0], [0.0, 1.0], [5.0, 5.0], [5.0, 6.0]]},
}


def app_with(tmp_path: Path, **kw: object) -> TestClient:
    return TestClient(create_app(Settings(store_dir=tmp_path / "store", **kw)))


def test_keys_guard_v1_and_leave_operations_open(tmp_path: Path) -> None:
    with app_with(tmp_path, api_keys="admin-key,reader-key:read") as c:
        r = c.get("/v1/models")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert c.get(path).status_code == 200, path
        created = c.post("/v1/models", json=FIT, headers={"X-API-Key": "admin-key"})
        assert created.status_code == 201
        model = created.json()["id"]
        reader = {"Authorization": "Bearer reader-key"}
        assert c.get(f"/v1/models/{model}", headers=reader).status_code == 200
        r = c.post(f"/v1/models/{model}/predict", json={"points": [[0, 0]]}, headers=reader)
        assert r.status_code == 200
        r = c.post("/v1/models", json=FIT, headers=reader)
        assert r.status_code == 403
        assert r.json()["type"].endswith("forbidden")
        assert c.delete(f"/v1/models/{model}", headers=reader).status_code == 403
        assert (
            c.delete(f"/v1/models/{model}", headers={"X-API-Key": "admin-key"}).status_code == 204
        )


def test_hashed_key_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    digest = hashlib.sha256(b"s3cret").hexdigest()
    keys.write_text(f"# team keys\nsha256:{digest}\n")
    with app_with(tmp_path, api_keys_file=keys) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/v1/models", headers={"X-API-Key": digest}).status_code == 401


def test_openapi_declares_security_schemes(tmp_path: Path) -> None:
    with app_with(tmp_path, api_keys="admin-key") as c:
        spec = c.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"]["scheme"] == "bearer"
    assert "security" in spec["paths"]["/v1/models"]["post"]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_security_headers_and_request_id(client: TestClient) -> None:
    r = client.get("/v1/models", headers={"X-Request-ID": "trace-123"})
    assert r.headers["x-request-id"] == "trace-123"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    # a hostile id is replaced, not echoed
    r = client.get("/healthz", headers={"X-Request-ID": "x" * 500})
    assert r.headers["x-request-id"] != "x" * 500
    # Swagger UI has a policy of its own that lets it load its (local) assets
    assert "'self'" in client.get("/docs").headers["content-security-policy"]


def test_access_log_is_one_json_line_per_request(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    client.get("/v1/models/" + "0" * 28, headers={"X-Request-ID": "log-me"})
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    entry = next(x for x in lines if x.get("request_id") == "log-me")
    assert entry["route"] == "/v1/models/{model_id}"
    assert entry["status"] == 404
    assert entry["method"] == "GET"
    assert entry["duration_ms"] >= 0


def test_cors_when_configured(tmp_path: Path) -> None:
    with app_with(tmp_path, cors_origins="https://app.example") as c:
        r = c.options(
            "/v1/models",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
            },
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        r = c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    with app_with(tmp_path) as c:
        r = c.get("/healthz", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in r.headers


def test_cors_preflight_allows_every_method_the_api_uses(tmp_path: Path) -> None:
    """PATCH /v1/models/{id} (rename, relabel) was left out of the allowed methods, so a
    browser's preflight for it was refused with 400 and the PATCH never sent."""
    with app_with(tmp_path, cors_origins="https://app.example") as c:
        for method in ("GET", "POST", "PATCH", "DELETE"):
            r = c.options(
                "/v1/models/" + "0" * 28,
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "content-type,x-api-key",
                },
            )
            assert r.status_code == 200, (method, r.text)
            allowed = {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
            assert method in allowed, (method, allowed)
        r = c.options(
            "/v1/models",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "PUT"},
        )
        assert r.status_code == 400, "PUT is no route's method: not allowed"


def test_fits_past_the_bound_get_429_with_retry_after(tmp_path: Path) -> None:
    # No queue: the second fit finds the slot busy and the queue full at once.
    with app_with(tmp_path, max_concurrent_fits=1, fit_queue_length=0) as c:
        service = c.app.state.services.training  # type: ignore[attr-defined]
        entered, release = threading.Event(), threading.Event()
        real = service.fit

        def slow_fit(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            release.wait(10)
            return real(*args, **kwargs)

        service.fit = slow_fit
        results: list[int] = []
        t = threading.Thread(
            target=lambda: results.append(c.post("/v1/models", json=FIT).status_code)
        )
        t.start()
        assert entered.wait(10)
        r = c.post("/v1/models", json=FIT)
        assert r.status_code == 429
        assert r.headers["retry-after"] == "2"
        assert r.headers["content-type"] == "application/problem+json"
        assert c.get("/healthz").status_code == 200  # the event loop is free meanwhile
        release.set()
        t.join(20)
        assert results == [201]
        del service.fit  # the class's own method again
        assert c.post("/v1/models", json=FIT).status_code == 201


def test_metrics_report_fits_iterations_store_and_cache(client: TestClient) -> None:
    model = client.post("/v1/models", json=FIT).json()["id"]
    client.post(f"/v1/models/{model}/predict", json={"points": [[0, 0]]})
    client.post(f"/v1/models/{model}/predict", json={"points": [[0, 0]]})
    text = client.get("/metrics").text
    assert 'gmm_fits_total{algorithm="kmeans",outcome="stored"} 1.0' in text
    assert 'gmm_fit_iterations_count{algorithm="kmeans"} 1.0' in text
    assert "gmm_store_models 1.0" in text
    size = next(
        float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("gmm_store_artifact_bytes ")
    )
    assert size > 0
    assert "gmm_model_cache_hits 1.0" in text
    assert "gmm_model_cache_misses 1.0" in text
    assert (
        'gmm_http_requests_total{method="POST",route="/v1/models/{model_id}/predict",'
        'status="200"} 2.0' in text
    )


def test_without_a_key_any_body_is_401_never_a_body_error(tmp_path: Path) -> None:
    """The key is checked before the body is read (issue 16): a body that would be a
    400 (malformed JSON), 413 (too large) or 415 (unknown media type) is a 401 without a
    key, with the same problem a body-less request gets."""
    with app_with(tmp_path, api_keys="admin-key,reader-key:read", max_body_bytes=4096) as c:
        expected = c.get("/v1/models").json()
        bodies = [
            ("/v1/models", b'{"algorithm": ', "application/json"),
            ("/v1/models", b"{" + b" " * 10_000 + b"}", "application/json"),
            ("/v1/datasets", b"\x93NUMPY garbage", "application/x-npy"),
            ("/v1/datasets", b"<points/>", "application/xml"),
        ]
        for path, body, media_type in bodies:
            r = c.post(path, content=body, headers={"Content-Type": media_type})
            assert r.status_code == 401, (path, media_type, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["www-authenticate"] == 'Bearer realm="gmm-service"'
            assert r.json() == expected
            r = c.post(
                path, content=body, headers={"X-API-Key": "wrong", "Content-Type": media_type}
            )
            assert r.status_code == 401 and r.json()["detail"] == "The API key is not valid."
        # A read-only key that may not write is refused before its body is read, too.
        r = c.post("/v1/models", content=b"{", headers={"X-API-Key": "reader-key"})
        assert r.status_code == 403, r.text
        assert r.json()["detail"] == "A read-only key may not call create_model."
        # ... and may still send a body where it may: its errors are the body's own.
        r = c.post(
            "/v1/models/" + "0" * 28 + "/predict",
            content=b"{",
            headers={"X-API-Key": "reader-key", "Content-Type": "application/json"},
        )
        assert r.status_code == 400, r.text
        r = c.post(
            "/v1/models",
            content=b"{",
            headers={"X-API-Key": "admin-key", "Content-Type": "application/json"},
        )
        assert r.status_code == 400, r.text


def test_keys_leave_open_paths_and_unknown_routes_as_they_were(tmp_path: Path) -> None:
    """Docs, the explorer's files, /v2's health and unknown routes answer without a key
    as they do with none configured; a wrong key on an open path changes nothing."""
    with app_with(tmp_path) as open_app, app_with(tmp_path, api_keys="admin-key") as keyed:
        for method, path in [
            ("GET", "/docs"),
            ("GET", "/explorer"),
            ("GET", "/explorer/assets/explorer.js"),
            ("GET", "/v2/health/live"),
            ("GET", "/v1/nothing-here"),
            ("PUT", "/v1/models"),
            ("OPTIONS", "/v1/models"),
        ]:
            want = open_app.request(method, path)
            got = keyed.request(method, path, headers={"X-API-Key": "wrong"})
            assert got.status_code == want.status_code, (method, path, got.text)
        assert keyed.get("/v2/models/x").status_code == 401


def test_access_line_written_directly_is_the_records_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The access line made without a LogRecord (the service's own JSON handler) is the
    line ``logging`` makes when a filter forces the record path."""
    configure_logging(json_lines=True)
    fields = {"method": "POST", "route": "/r", "path": "/r", "status": 201, "client": "c"}
    capsys.readouterr()
    write_access_line("POST", "/r", 201, fields)
    direct = json.loads(capsys.readouterr().err)
    seen: list[logging.LogRecord] = []
    access_log.addFilter(lambda record: seen.append(record) or True)
    try:
        write_access_line("POST", "/r", 201, fields)
    finally:
        access_log.filters.clear()
    through_logging = json.loads(capsys.readouterr().err)
    assert len(seen) == 1
    direct.pop("ts"), through_logging.pop("ts")
    assert direct == through_logging
    assert direct["message"] == "POST /r 201" and direct["logger"] == "gmm.access"
