"""Hostile ids, names and hand-made model folders never reach the file system.

Model servers have shipped path traversal through model names and code execution
through pickled models. Every route that takes a model id is found from the app's
own OpenAPI document (so routes added later are covered without editing this file)
and fed ids built to escape the store: dot segments, encoded slashes and
backslashes, NUL, newlines, look-alike unicode, 10,000 characters. Each answer must
be a 4xx problem+json, and the files around the store (sentinels at every level a
traversal could reach) must be exactly as they were.

A folder written by hand into ``models/`` (signed with a key that is not the
server's, or not signed at all) must be refused before its pickle is opened: the
pickle here creates a marker file when unpickled, and the marker must never appear.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.ids import new_model_id
from service.main import create_app
from service.store.signing import ARTIFACT, META, canonical_json
from tests.conftest import SEED_BLOBS
from tests.helpers_server import running_server
from tests.helpers_store import insert_model_row

PROBLEM = "application/problem+json"
SECRET = "hostile-test-key"
SENTINEL = "victim"

#: Bodies that are valid for each kind of route, so that only the id can be wrong.
_BODIES: dict[str, dict[str, Any]] = {
    "predict": {"points": [[0.0, 0.0]]},
    "score": {"points": [[0.0, 0.0]]},
    "sample": {"n_samples": 2, "random_state": 0},
}

#: Path segments as they go on the wire; ``{real}`` is a real model's id.
HOSTILE_SEGMENTS = [
    "..",
    "%2e%2e",
    "%2E%2E%2F%2E%2E%2Fvictim",
    "..%2Fvictim",
    "..%2F..%2Fvictim",
    "..%2F..%2F..%2Fvictim",
    "..%2f..%2f..%2f..%2fvictim",
    "%2F..%2F",
    "%2F..%2F..%2Fvictim",
    "%2Fetc%2Fpasswd",
    "..%2Fmodels%2F{real}",
    "{real}%2F..%2F{real}",
    "%252F..%252Fvictim",  # encoded twice: must not be decoded twice
    "..%5Cvictim",
    "..\\..\\victim",
    "%5C%5Chost%5Cshare",
    "%00",
    "{real}%00",
    "%00{real}",
    "{real}%00.json",
    "{real}%0A",  # a regex whose $ accepts a final newline would let this through
    "{real}%0D%0A",
    "%20{real}",
    "{real}%20",
    "{REAL}",
    "{real}0",
    "{real_short}",
    "ü" * 28,
    "%EF%BC%8E%EF%BC%8E%EF%BC%8Fvictim",  # fullwidth "../"
    "\uff10" * 28,  # fullwidth digits: "digits" to a careless \d
    "\u0660" * 28,  # Arabic-Indic digits, likewise
    "%E2%80%AE{real}",  # right-to-left override
    "secret.key",
    "..%2Fsecret.key",
    "tmp",
    "~",
    "$HOME",
    "*",
    "a" * 10_000,
    "0" * 10_000,
    "%2F" * 3_000 + "victim",
    "..%2F" * 2_000 + "victim",
]


def _snapshot(root: Path) -> dict[str, tuple[str, int, int, str]]:
    """Every path under ``root`` with its kind, size, mtime and content hash."""
    out: dict[str, tuple[str, int, int, str]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_file() and not path.is_symlink():
            kind, digest = "file", hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            kind, digest = ("dir" if path.is_dir() else "other"), ""
        out[str(path.relative_to(root))] = (kind, st.st_size, st.st_mtime_ns, digest)
    return out


def _store_dir(root: Path) -> Path:
    """Deep enough that every traversal tried here stays inside ``root``."""
    return root / "a" / "b" / "store"


def _plant_sentinels(root: Path) -> list[Path]:
    """A victim file at each level a ``../`` chain from ``models/`` reaches, and a folder
    shaped like a model just outside the store."""
    store = _store_dir(root)
    store.mkdir(parents=True, exist_ok=True)
    victims = [
        store / SENTINEL,
        store.parent / SENTINEL,
        store.parent.parent / SENTINEL,
        root / SENTINEL,
    ]
    for victim in victims:
        victim.write_text("must stay untouched\n")
    outside_model = root / "models" / new_model_id()
    outside_model.mkdir(parents=True)
    (outside_model / META).write_text("{}")
    return victims


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[TestClient, str, Path]]:
    """An app over a store deep in ``tmp_path``, one real model, sentinels around it."""
    _plant_sentinels(tmp_path)
    settings = Settings(store_dir=_store_dir(tmp_path), secret_key=SECRET)
    with TestClient(create_app(settings)) as client:
        body = {
            "algorithm": "gaussian_mixture",
            "params": {"n_components": 2, "random_state": 0},
            "data": {"generator": {**SEED_BLOBS, "n_samples": 60}},
            "include": [],
        }
        r = client.post("/v1/models", json=body)
        assert r.status_code == 201, r.text
        yield client, r.json()["id"], tmp_path


def _model_id_routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path template) of every operation whose path takes a model id."""
    paths = client.get("/openapi.json").json()["paths"]
    return sorted(
        (method.upper(), path)
        for path, operations in paths.items()
        if "{model_id}" in path
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    )


def _body_for(path: str) -> dict[str, Any] | None:
    return _BODIES.get(path.rsplit("/", 1)[-1], {})


def _segment(template: str, real: str) -> str:
    return template.format(real=real, REAL=real.upper(), real_short=real[:-1])


def _problem_failure(r: Any, where: str, tmp_path: Path) -> str | None:
    """Why ``r`` is not a clean 4xx problem+json (None when it is)."""
    if not 400 <= r.status_code < 500:
        return f"{where}: {r.status_code} {r.text[:200]}"
    if not r.headers.get("content-type", "").startswith(PROBLEM):
        return f"{where}: content-type {r.headers.get('content-type')}"
    body = r.json()
    if body.get("status") != r.status_code or not body.get("title") or "type" not in body:
        return f"{where}: not a problem document {r.text[:200]}"
    if str(tmp_path) in r.text or "Traceback" in r.text:
        return f"{where}: leaks paths or a stack trace"
    return None


def test_every_model_id_route_is_found(hostile: tuple[TestClient, str, Path]) -> None:
    """Guard: the route discovery below really sees the routes the contract names, and
    the bodies it sends are valid, so a hostile id is the only thing wrong."""
    client, real, _ = hostile
    routes = _model_id_routes(client)
    assert {
        ("GET", "/v1/models/{model_id}"),
        ("DELETE", "/v1/models/{model_id}"),
        ("POST", "/v1/models/{model_id}/predict"),
        ("POST", "/v1/models/{model_id}/score"),
        ("POST", "/v1/models/{model_id}/sample"),
    } <= set(routes)
    for suffix in _BODIES:
        r = client.post(f"/v1/models/{real}/{suffix}", json=_body_for(suffix))
        assert r.status_code == 200, r.text


def test_hostile_ids_are_4xx_problems_on_every_route_and_touch_nothing(
    hostile: tuple[TestClient, str, Path],
) -> None:
    client, real, root = hostile
    before = _snapshot(root)
    routes = _model_id_routes(client)
    failures: list[str] = []
    sent = 0
    for method, template in routes:
        for seg in HOSTILE_SEGMENTS:
            segment = _segment(seg, real)
            url = template.replace("{model_id}", segment)
            kwargs: dict[str, Any] = {}
            if method in ("POST", "PUT", "PATCH"):
                kwargs["json"] = _body_for(template)
            r = client.request(method, url, **kwargs)
            sent += 1
            failure = _problem_failure(r, f"{method} {url[:80]}", root)
            if failure:
                failures.append(failure)
            elif r.status_code != 404:
                # No model has such an id: 404 as for an unknown well-formed one (or, when
                # an encoded slash splits the segment, because no route matches).
                failures.append(f"{method} {url[:80]}: {r.status_code} {r.text[:200]}")
    # Ids in the query string and in bodies go through the same gate.
    for seg in HOSTILE_SEGMENTS:
        value = _segment(seg, real).replace("%2F", "/").replace("%00", "\x00")
        r = client.get("/v1/models", params={"cursor": value})
        failures += filter(None, [_problem_failure(r, f"cursor={value[:40]!r}", root)])
        body = {
            "algorithm": "kmeans",
            "params": {"n_clusters": 2, "n_init": 1, "random_state": 0},
            "data": {"points": [[0, 0], [0, 1], [5, 5], [5, 6]]},
            "align_to": value,
        }
        r = client.post("/v1/models", json=body)
        failures += filter(None, [_problem_failure(r, f"align_to={value[:40]!r}", root)])
        sent += 2
    assert failures == [], f"{len(failures)} of {sent} requests:\n" + "\n".join(failures[:30])

    assert _snapshot(root) == before, "a hostile id changed files"
    # The one real model is still whole and serving.
    assert client.get(f"/v1/models/{real}").status_code == 200
    r = client.post(f"/v1/models/{real}/predict", json={"points": [[0.0, 0.0]]})
    assert r.status_code == 200, r.text
    assert client.get("/v1/models").json()["total"] == 1


def test_malformed_and_unknown_ids_are_the_same_404(
    hostile: tuple[TestClient, str, Path],
) -> None:
    """A model that does not exist is 404 not-found on every route, whatever its id
    looks like: a path pattern must not turn some of them into 422."""
    client, real, _ = hostile
    ids = ["0" * 28, "abc", "0" * 29, real.upper(), real[:-1], "ü" * 28, "a" * 2_000, "%00"]
    for method, template in _model_id_routes(client):
        for model_id in ids:
            kwargs: dict[str, Any] = {}
            if method in ("POST", "PUT", "PATCH"):
                kwargs["json"] = _body_for(template)
            r = client.request(method, template.replace("{model_id}", model_id), **kwargs)
            where = f"{method} {template} with {model_id[:30]!r}"
            assert r.status_code == 404, f"{where}: {r.status_code} {r.text[:200]}"
            assert r.headers["content-type"].startswith(PROBLEM), where
            assert r.json()["type"].endswith(":not-found"), f"{where}: {r.text[:200]}"
    assert client.get(f"/v1/models/{real}").status_code == 200


@pytest.mark.parametrize(
    "name",
    [
        "a\x00b",
        "\x00",
        "bell\x07",
        "line\nbreak",
        "tab\there",
        "\x1b[2J\x1b[31mred",
        "del\x7f",
        "",
        "n" * 201,
        "n" * 10_000,
    ],
    ids=["nul", "only-nul", "bell", "newline", "tab", "ansi", "del", "empty", "201", "10k"],
)
def test_bad_names_are_422_naming_the_field(
    hostile: tuple[TestClient, str, Path], name: str
) -> None:
    client, _, root = hostile
    before = _snapshot(root)
    kmeans = {
        "algorithm": "kmeans",
        "params": {"n_clusters": 2, "n_init": 1, "random_state": 0},
        "data": {"points": [[0, 0], [0, 1], [5, 5], [5, 6]]},
        "name": name,
    }
    selection = {
        "data": {"points": [[0, 0], [0, 1], [5, 5], [5, 6]]},
        "grid": {"n_components": [1, 2]},
        "store_best": True,
        "name": name,
    }
    for path, body in (("/v1/models", kmeans), ("/v1/model-selection", selection)):
        r = client.post(path, json=body)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith(PROBLEM)
        assert ["body", "name"] in [item["loc"] for item in r.json()["errors"]], r.text
    assert _snapshot(root) == before
    assert client.get("/v1/models").json()["total"] == 1


def test_path_like_and_unicode_names_are_only_labels(
    hostile: tuple[TestClient, str, Path],
) -> None:
    """A name is never a path: these are stored as given and touch nothing else."""
    client, real, root = hostile
    store = _store_dir(root)
    outside = {k: v for k, v in _snapshot(root).items() if not k.startswith("a/b/store")}
    names = ["../../victim", "..\\..\\victim", "a/b/c", "%2F..%2F", "模型 ü 🚀", "\u202eevil"]
    for name in names:
        body = {
            "algorithm": "kmeans",
            "params": {"n_clusters": 2, "n_init": 1, "random_state": 0},
            "data": {"points": [[0, 0], [0, 1], [5, 5], [5, 6]]},
            "name": name,
            "include": [],
        }
        r = client.post("/v1/models", json=body)
        assert r.status_code == 201, r.text
        model_id = r.json()["id"]
        assert client.get(f"/v1/models/{model_id}").json()["name"] == name
    # The export document's source id is informative only: import takes a new id.
    doc = client.get(f"/v1/models/{real}/export")
    assert doc.status_code == 200, doc.text
    document = doc.json()
    document["source"]["model_id"] = "../../../victim"
    r = client.post("/v1/models/import", json=document)
    assert r.status_code in (201, 422), r.text
    if r.status_code == 201:
        assert r.json()["id"] != "../../../victim"

    after = {k: v for k, v in _snapshot(root).items() if not k.startswith("a/b/store")}
    assert after == outside
    folders = {p.name for p in (store / "models").iterdir()}
    assert folders == {m["id"] for m in client.get("/v1/models").json()["items"]}
    assert all(len(name) == 28 for name in folders)


# -- hand-made model folders ----------------------------------------------------------
class _TouchOnUnpickle:
    """Unpickling this calls ``Path.touch(marker)``: any code could stand in for it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _evil_pickle(marker: Path, scratch: Path) -> bytes:
    path = scratch / "evil.joblib"
    joblib.dump(_TouchOnUnpickle(marker), path)
    blob = path.read_bytes()
    path.unlink()
    return blob


def _sign(key: str, payload: bytes) -> str:
    return hmac.new(key.encode(), payload, hashlib.sha256).hexdigest()


def _hand_made_meta(model_id: str, blob: bytes, key: str) -> dict[str, Any]:
    """Metadata shaped exactly as the store writes it, signed with ``key``."""
    digest = hashlib.sha256(blob).hexdigest()
    resource = {
        "id": model_id,
        "name": "hand-made",
        "algorithm": "kmeans",
        "n_features": 2,
        "n_components": 2,
    }
    meta: dict[str, Any] = {
        "id": model_id,
        "resource": resource,
        "versions": {},
        "artifact": {
            "file": ARTIFACT,
            "bytes": len(blob),
            "sha256": digest,
            "signature": _sign(key, f"{model_id}\n{digest}".encode()),
        },
    }
    meta["signature"] = _sign(key, canonical_json(meta))
    return meta


def test_evil_pickle_payload_is_live(tmp_path: Path) -> None:
    """Guard for the test below: unpickling the crafted artifact does run its code."""
    marker = tmp_path / "ran"
    path = tmp_path / "copy.joblib"
    path.write_bytes(_evil_pickle(marker, tmp_path))
    joblib.load(path)
    assert marker.exists()


@pytest.mark.parametrize(
    "variant",
    ["wrong-key", "unsigned", "signature-not-a-string", "garbage-meta", "no-row"],
)
def test_hand_made_folder_is_refused_before_unpickling(
    client: TestClient, settings: Settings, tmp_path: Path, variant: str
) -> None:
    marker = tmp_path / "pwned"
    blob = _evil_pickle(marker, tmp_path)
    model_id = new_model_id()
    folder = settings.store_dir / "models" / model_id
    folder.mkdir(parents=True)
    (folder / ARTIFACT).write_bytes(blob)
    meta = _hand_made_meta(model_id, blob, key="not-the-servers-key")
    if variant == "unsigned":
        del meta["signature"]
    if variant == "signature-not-a-string":
        meta["signature"] = {"hex": meta["signature"]}
    if variant == "no-row":  # a folder planted beside the catalogue is not a model
        (folder / META).write_text(json.dumps(meta))
    elif variant == "garbage-meta":
        insert_model_row(settings.store_dir, model_id, b"\x01 not json {")
    else:
        insert_model_row(settings.store_dir, model_id, json.dumps(meta).encode())

    for method, path, body in (
        ("GET", f"/v1/models/{model_id}", None),
        ("POST", f"/v1/models/{model_id}/predict", {"points": [[0.0, 0.0]]}),
        ("POST", f"/v1/models/{model_id}/score", {"points": [[0.0, 0.0]]}),
        ("POST", f"/v1/models/{model_id}/sample", {"n_samples": 2}),
        ("GET", f"/v1/models/{model_id}/export", None),
        ("GET", "/v1/models", None),
        ("DELETE", f"/v1/models/{model_id}", None),
    ):
        r = client.request(method, path, json=body)
        assert not marker.exists(), f"{method} {path} unpickled the hand-made artifact"
        if path == "/v1/models" or method == "DELETE":
            # Listing reads metadata only; deleting a damaged model is how an operator
            # clears it. Either may answer; neither may unpickle.
            assert r.status_code in (200, 204, 404, 500), r.text
            continue
        expected = 404 if variant == "no-row" else 500
        assert r.status_code == expected, f"{method} {path}: {r.status_code} {r.text}"
        assert r.headers["content-type"].startswith(PROBLEM)
        if variant != "no-row":
            assert r.json()["type"].endswith("artifact-integrity"), r.text
        assert str(settings.store_dir) not in r.text
    assert not marker.exists()


def test_artifact_replaced_by_a_folder_is_an_integrity_problem(
    client: TestClient, settings: Settings
) -> None:
    """A damaged layout answers the integrity problem, not an unhandled OSError."""
    body = {
        "algorithm": "kmeans",
        "params": {"n_clusters": 2, "n_init": 1, "random_state": 0},
        "data": {"points": [[0, 0], [0, 1], [5, 5], [5, 6]]},
        "include": [],
    }
    model_id = client.post("/v1/models", json=body).json()["id"]
    artifact = settings.store_dir / "models" / model_id / ARTIFACT
    artifact.unlink()
    artifact.mkdir()
    r = client.post(f"/v1/models/{model_id}/predict", json={"points": [[0.0, 0.0]]})
    assert r.status_code == 500, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["type"].endswith("artifact-integrity"), r.text
    assert client.get(f"/v1/models/{model_id}").status_code == 200  # metadata is intact


def test_folder_without_metadata_is_not_a_model(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    model_id = new_model_id()
    folder = settings.store_dir / "models" / model_id
    folder.mkdir(parents=True)
    (folder / ARTIFACT).write_bytes(_evil_pickle(marker, tmp_path))
    for method, path, body in (
        ("GET", f"/v1/models/{model_id}", None),
        ("POST", f"/v1/models/{model_id}/predict", {"points": [[0.0, 0.0]]}),
    ):
        r = client.request(method, path, json=body)
        assert r.status_code == 404, r.text
        assert r.headers["content-type"].startswith(PROBLEM)
    assert not marker.exists()


# -- the real server: raw request lines that no HTTP client library would send --------
def _raw_request(port: int, target: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
    """Send one request line exactly as given; (status, head+body) of the answer."""
    body = b""
    headers = b"Host: 127.0.0.1\r\nConnection: close\r\n"
    if method == b"POST":
        body = b'{"points": [[0.0, 0.0]]}'
        headers += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(method + b" " + target + b" HTTP/1.1\r\n" + headers + b"\r\n" + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    return int(answer.split(b" ", 2)[1]), answer


@pytest.mark.slow
def test_raw_paths_to_a_real_server_are_4xx_and_touch_nothing(tmp_path: Path) -> None:
    """uvicorn does not normalise ``..`` the way HTTP clients do: send them literally."""
    _plant_sentinels(tmp_path)
    env = {"GMM_STORE_DIR": str(_store_dir(tmp_path)), "GMM_SECRET_KEY": SECRET}
    logs = tmp_path / "logs"  # the server's log grows: keep it out of the snapshots
    logs.mkdir()
    with running_server(env, cwd=logs) as server:
        body = {
            "algorithm": "kmeans",
            "params": {"n_clusters": 2, "n_init": 1, "random_state": 0},
            "data": {"points": [[0, 0], [0, 1], [5, 5], [5, 6]]},
            "include": [],
        }
        real = server.client.post("/v1/models", json=body).json()["id"]
        before = {k: v for k, v in _snapshot(tmp_path).items() if not k.startswith("logs")}
        targets = [
            b"/v1/models/..",
            b"/v1/models/../victim",
            b"/v1/models/../../victim",
            b"/v1/models/../../../victim",
            b"/v1/models/../../../../victim",
            b"/v1/models/./..",
            b"/v1/models/..\\..\\victim",
            b"/v1/models/" + real.encode() + b"/../" + real.encode(),
            b"/v1/models/%2e%2e/%2e%2e/victim",
            b"/v1/models/..%2f..%2fvictim",
            b"/v1/models/%00",
            b"/v1/models/\x00",  # uvicorn refuses this line itself: a plain 400
            b"/v1/models/" + "ü".encode() * 14,
            b"/v1/models/" + b"a" * 10_000,
            b"/v1/models/" + b"../" * 3_000 + b"victim",
        ]
        failures: list[str] = []
        for target in targets:
            for method, suffix in ((b"GET", b""), (b"DELETE", b""), (b"POST", b"/predict")):
                status, answer = _raw_request(server.port, target + suffix, method)
                head, _, text = answer.partition(b"\r\n\r\n")
                where = f"{method.decode()} {target[:60]!r}{suffix.decode()}"
                if not 400 <= status < 500:
                    failures.append(f"{where}: {status} {text[:200]!r}")
                # An answer from the app (it carries a request id) is a problem document;
                # uvicorn's own refusal of an unparsable request line is plain text.
                if b"x-request-id" in head.lower() and PROBLEM.encode() not in head.lower():
                    failures.append(f"{where}: not problem+json: {head[:300]!r}")
        assert failures == [], "\n".join(failures)
        after = {k: v for k, v in _snapshot(tmp_path).items() if not k.startswith("logs")}
        assert after == before, "a raw path changed files"
        r = server.client.post(f"/v1/models/{real}/predict", json={"points": [[0.0, 0.0]]})
        assert r.status_code == 200, r.text
