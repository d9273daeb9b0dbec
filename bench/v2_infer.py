"""Open Inference Protocol infer against /v1 predict, driven by wrk, on one server.

Same server (one uvicorn worker, default settings), same model, same points: ``POST
/v2/models/{id}/infer`` with the binary tensor data extension (the points as raw
little-endian float64 after a JSON header of ``Inference-Header-Content-Length``
bytes, both outputs asked for as binary data, as ``tritonclient`` sends them), and in
the protocol's JSON form, against ``POST /v1/models/{id}/predict`` with ``{"points":
...}``. All three answer labels and probabilities, checked against sklearn's
``predict_proba`` first. The ratio is v2 req/s / v1 req/s (goal for binary tensors:
at least 1.0).

    python bench/v2_infer.py [--duration 9] [--rounds 3] [--concurrency 16] [--points 1 100]
"""

from __future__ import annotations

import argparse
import json
import os
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
from bench.predict_wrk import Endpoint, cpus_to_pin, measure, pinned  # noqa: E402
from bench.run import Server, machine_info, service_server  # noqa: E402

HEADER_LENGTH = "Inference-Header-Content-Length"
OUTPUTS = ("labels", "probabilities")


def infer_body(rows: np.ndarray) -> bytes:
    """The protocol's JSON form of ``rows`` (flat, row-major data)."""
    tensor = {
        "name": "points",
        "shape": list(rows.shape),
        "datatype": "FP64",
        "data": rows.reshape(-1).tolist(),
    }
    return json.dumps({"inputs": [tensor]}).encode()


def binary_infer_body(rows: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The binary tensor form of ``rows`` and its headers: outputs as binary data too."""
    raw = np.ascontiguousarray(rows, dtype="<f8").tobytes()
    document = {
        "inputs": [
            {
                "name": "points",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in OUTPUTS],
    }
    header = json.dumps(document).encode()
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return header + raw, headers


def _binary_outputs(response: httpx.Response) -> dict[str, np.ndarray]:
    """The outputs of a binary answer: the JSON header, then each output's bytes."""
    size = int(response.headers[HEADER_LENGTH])
    header = json.loads(response.content[:size])
    found, at = {}, size
    for output in header["outputs"]:
        n = output["parameters"]["binary_data_size"]
        dtype = "<i8" if output["datatype"] == "INT64" else "<f8"
        found[output["name"]] = np.frombuffer(response.content[at : at + n], dtype=dtype).reshape(
            output["shape"]
        )
        at += n
    return found


def check_same_answers(base: str, model_id: str, X: np.ndarray, expected: np.ndarray) -> bool:
    """v1, v2 JSON and v2 binary answer the same labels and sklearn's ``predict_proba``
    (rtol 1e-10)."""
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
    body, headers = binary_infer_body(rows)
    binary = _binary_outputs(
        httpx.post(f"{base}/v2/models/{model_id}/infer", content=body, headers=headers)
    )
    return bool(
        outputs["labels"].tolist() == v1["labels"] == binary["labels"].tolist()
        and np.allclose(outputs["probabilities"], expected, rtol=1e-10, atol=0.0)
        and np.allclose(binary["probabilities"], expected, rtol=1e-10, atol=0.0)
        and np.allclose(v1["probabilities"], expected, rtol=1e-10, atol=0.0)
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=9.0, help="seconds per endpoint")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--points", type=int, nargs="+", default=[1, 100])
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")

    results: dict[str, Any] = {
        "concurrency": args.concurrency,
        "machine": machine_info(),
        "cases": [],
    }
    with tempfile.TemporaryDirectory(prefix="gmm-bench-") as tmp:
        folder = Path(tmp)
        gm, X = predict_throughput.fit_reference(folder / "seed.joblib")
        # The server on one CPU and wrk on another, as in predict_wrk.py.
        server_cpu, wrk_cpu = cpus_to_pin()
        argv_, env, port, ready = service_server(folder / "store")
        server = Server([*pinned(server_cpu), *argv_], env, port, ready)
        try:
            base = server.wait_ready()
            model_id = predict_throughput.register_model(base)
            results["same_answers"] = check_same_answers(base, model_id, X, gm.predict_proba(X[:8]))
            json_type = {"Content-Type": "application/json"}
            infer = f"{base}/v2/models/{model_id}/infer"
            for n in args.points:
                rows = np.vstack([X] * (n // len(X) + 1))[:n]
                binary, binary_headers = binary_infer_body(rows)
                cases = {
                    "v1": Endpoint(
                        f"{base}/v1/models/{model_id}/predict",
                        json.dumps({"points": rows.tolist()}).encode(),
                        json_type,
                        folder,
                    ),
                    "v2 binary": Endpoint(infer, binary, binary_headers, folder),
                    "v2 JSON": Endpoint(infer, infer_body(rows), json_type, folder),
                }
                case = measure(
                    cases,
                    concurrency=args.concurrency,
                    duration=args.duration,
                    rounds=args.rounds,
                    cpus=dict.fromkeys(cases, wrk_cpu),
                )
                results["cases"].append({"points": n, **case})
        finally:
            server.stop()
    results["load_average_end"] = list(os.getloadavg())
    _report(results)
    return results


def _report(results: dict[str, Any]) -> None:
    load = results["machine"]["load_average"][0], results["load_average_end"][0]
    print(
        f"v2 infer vs v1 predict, one worker, wrk -c{results['concurrency']}, load average "
        f"{load[0]:.2f} -> {load[1]:.2f} (all answer sklearn's predict_proba: "
        f"{results['same_answers']})"
    )
    for case in results["cases"]:
        v1 = case["v1"]
        print(
            f"  {case['points']:>4} point(s): v1 {v1['rps']:8.0f} req/s p99 {v1['p99_ms']:6.2f} ms"
        )
        for name, goal in (("v2 binary", " (goal >= 1.0x)"), ("v2 JSON", "")):
            v2 = case[name]
            print(
                f"        {name:10s} {v2['rps']:8.0f} req/s p99 {v2['p99_ms']:6.2f} ms"
                f"  {v2['rps'] / v1['rps']:.2f}x v1{goal}"
            )
        errors = int(sum(case[name]["non_2xx"] for name in ("v1", "v2 binary", "v2 JSON")))
        if errors:
            print(f"        non-2xx answers: {errors}")


if __name__ == "__main__":
    main()
