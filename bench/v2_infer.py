"""Open Inference Protocol infer against /v1 predict, driven by wrk, on one server.

Same server, same model, same points: ``POST /v2/models/{id}/infer`` with the
protocol's JSON form (outputs not named: all of them, as JSON) against ``POST
/v1/models/{id}/predict`` with ``{"points": ...}``. Both answer ``labels`` and
``probabilities``; both are checked against sklearn's ``predict_proba`` first. The
ratio is v2 req/s / v1 req/s: what the protocol's framing costs over /v1.

    python bench/v2_infer.py [--duration 10] [--concurrency 16] [--points 1 100]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from bench import predict_throughput  # noqa: E402
from bench.predict_wrk import measure  # noqa: E402
from bench.run import Server, service_server  # noqa: E402


def infer_body(rows: np.ndarray) -> bytes:
    """The protocol's JSON form of ``rows`` (flat, row-major data)."""
    tensor = {
        "name": "points",
        "shape": list(rows.shape),
        "datatype": "FP64",
        "data": rows.reshape(-1).tolist(),
    }
    return json.dumps({"inputs": [tensor]}).encode()


def check_same_answers(base: str, model_id: str, X: np.ndarray, expected: np.ndarray) -> bool:
    """v1 and v2 answer the same labels and sklearn's ``predict_proba`` (rtol 1e-10)."""
    rows = X[:8]
    v1 = httpx.post(
        f"{base}/v1/models/{model_id}/predict", json={"points": rows.tolist()}, timeout=30.0
    ).json()
    v2 = httpx.post(
        f"{base}/v2/models/{model_id}/infer",
        content=infer_body(rows),
        headers={"Content-Type": "application/json"},
        timeout=30.0,
    ).json()
    outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in v2["outputs"]}
    return bool(
        outputs["labels"].tolist() == v1["labels"]
        and np.allclose(outputs["probabilities"], expected, rtol=1e-10, atol=0.0)
        and np.allclose(v1["probabilities"], expected, rtol=1e-10, atol=0.0)
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per endpoint")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--points", type=int, nargs="+", default=[1, 100])
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")

    results: dict[str, Any] = {"concurrency": args.concurrency, "cases": []}
    with tempfile.TemporaryDirectory(prefix="gmm-bench-") as tmp:
        gm, X = predict_throughput.fit_reference(Path(tmp) / "seed.joblib")
        server = Server(*service_server(Path(tmp) / "store"))
        try:
            base = server.wait_ready()
            model_id = predict_throughput.register_model(base)
            results["same_answers"] = check_same_answers(base, model_id, X, gm.predict_proba(X[:8]))
            for n in args.points:
                rows = np.vstack([X] * (n // len(X) + 1))[:n]
                cases = {
                    "v1": (
                        f"{base}/v1/models/{model_id}/predict",
                        json.dumps({"points": rows.tolist()}).encode(),
                    ),
                    "v2": (f"{base}/v2/models/{model_id}/infer", infer_body(rows)),
                }
                case = measure(
                    cases,
                    concurrency=args.concurrency,
                    duration=args.duration,
                    rounds=args.rounds,
                )
                results["cases"].append({"points": n, **case})
        finally:
            server.stop()
    _report(results)
    return results


def _report(results: dict[str, Any]) -> None:
    print(
        f"v2 infer vs v1 predict, one worker, wrk -c{results['concurrency']} "
        f"(both answer sklearn's predict_proba: {results['same_answers']})"
    )
    for case in results["cases"]:
        v1, v2 = case["v1"], case["v2"]
        errors = int(v1["non_2xx"] + v2["non_2xx"])
        print(
            f"  {case['points']:>4} point(s): v1 {v1['rps']:8.0f} req/s p99 {v1['p99_ms']:6.2f} ms"
            f" | v2 {v2['rps']:8.0f} req/s p99 {v2['p99_ms']:6.2f} ms"
            f" | ratio v2/v1 {v2['rps'] / v1['rps']:.2f}x | non-2xx {errors}"
        )


if __name__ == "__main__":
    main()
