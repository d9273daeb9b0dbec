"""Per-request cost of the app itself, in-process: the service against the shared reference.

No server, no sockets, no load generator: each app is called as an ASGI callable on a
uvloop event loop with the same request, in alternating batches, and the CPU time per
request (``time.process_time``) of each batch is recorded. The median over batches of
each, and their ratio, are printed. What uvicorn's protocol costs around each request
(the same for both apps) is left out, so the ratio here is higher than over HTTP; its
use is to compare changes on a busy machine, where wrk's figures move with the
neighbours' load and these move much less.

The service is built by ``create_app`` with default settings (a temporary store, the
JSON access line written to a temporary file), holding the seed-blobs model; the
reference is ``../shared/bench/minimal_app.py`` loaded from its file, holding the
same model fitted in-process.

    python bench/asgi_cost.py [--requests 20000] [--batch 200] [--points 1 100]
                              [--reference PATH] [--api-keys]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import uvloop  # noqa: E402

from bench import predict_throughput  # noqa: E402
from bench.run import REFERENCE_MODEL_ENV, SHARED_REFERENCE  # noqa: E402

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def load_reference(path: Path, model_path: Path) -> Asgi:
    """The reference module's ``app``, loaded as its docstring says (the model's path in
    ``MINIMAL_MODEL_PATH``)."""
    os.environ[REFERENCE_MODEL_ENV] = str(model_path)
    spec = importlib.util.spec_from_file_location("shared_minimal_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app: Asgi = module.app
    return app


def _scope(path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _batch(
    app: Asgi, path: str, body: bytes, headers: list[tuple[bytes, bytes]], n: int
) -> float:
    """CPU seconds per request over ``n`` requests; every answer must be a 200."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    began = time.process_time()
    for _ in range(n):
        await app(_scope(path, body, headers), receive, send)
    spent = time.process_time() - began
    if set(statuses) != {200}:
        raise RuntimeError(f"{path} answered {sorted(set(statuses))}")
    return spent / n


async def compare(
    cases: dict[str, tuple[Asgi, str, list[tuple[bytes, bytes]]]],
    body: bytes,
    *,
    requests: int,
    batch: int,
) -> dict[str, float]:
    """Median CPU microseconds per request of each case, batches alternating."""
    for app, path, headers in cases.values():
        await _batch(app, path, body, headers, batch)  # warm-up, thrown away
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(max(1, requests // batch)):
        for name, (app, path, headers) in cases.items():
            samples[name].append(await _batch(app, path, body, headers, batch))
    return {name: statistics.median(values) * 1e6 for name, values in samples.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per app and size")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--points", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--reference", type=Path, default=SHARED_REFERENCE)
    parser.add_argument("--api-keys", action="store_true", help="the service with GMM_API_KEYS")
    args = parser.parse_args(argv)

    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.main import create_app

    results: dict[str, Any] = {"cases": []}
    with tempfile.TemporaryDirectory(prefix="gmm-bench-") as tmp:
        _, X = predict_throughput.fit_reference(Path(tmp) / "seed.joblib")
        reference = load_reference(args.reference, Path(tmp) / "seed.joblib")
        settings = Settings(
            store_dir=Path(tmp) / "store", api_keys="bench-key" if args.api_keys else None
        )
        key = [(b"x-api-key", b"bench-key")] if args.api_keys else []
        service = create_app(settings)
        stderr, log = sys.stderr, (Path(tmp) / "access.log").open("w")
        sys.stderr = log  # the access lines go to a file, as a server's would
        try:
            with TestClient(service, headers={"X-API-Key": "bench-key"}) as client:
                model_id = predict_throughput.register_model_with(client)
                cases = {
                    "reference": (reference, "/predict", []),
                    "service": (service, f"/v1/models/{model_id}/predict", key),
                }
                for n in args.points:
                    rows = np.vstack([X] * (n // len(X) + 1))[:n]
                    body = orjson.dumps({"points": rows.tolist()})
                    figures = uvloop.run(
                        compare(cases, body, requests=args.requests, batch=args.batch)
                    )
                    results["cases"].append({"points": n, "us_per_request": figures})
        finally:
            sys.stderr = stderr
            log.close()
    for case in results["cases"]:
        us = case["us_per_request"]
        print(
            f"{case['points']:>4} point(s): reference {us['reference']:7.1f} us | "
            f"service {us['service']:7.1f} us | reference/service "
            f"{us['reference'] / us['service']:.2f}x (CPU per request in-process, median)"
        )
    return results


if __name__ == "__main__":
    main()
