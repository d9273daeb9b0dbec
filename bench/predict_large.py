"""A large batch: 1,000,000 x 8 points predicted through ``.npy`` both ways, against
``predict_proba`` in-process, and the server's memory while it does it.

The model is ``GaussianMixture(n_components=8, random_state=0)`` (full covariances)
fitted on 20,000 points of ``make_blobs(n_features=8, centers=8)``, in the bench
process and through the service on the same points (its means are checked to equal
sklearn's); the batch is 1,000,000 other points of the same blobs. Timed, interleaved,
medians of ``--repeats``:

- sklearn: ``gm.predict_proba(X)`` in the bench process, the reference;
- service ``.npy``: ``POST /v1/models/{id}/predict`` with ``X`` as a ``.npy`` body
  (``numpy.save``'s bytes, made beforehand as a client holding a file has them) and
  ``Accept: application/x-npy``, the answer (``labels``) read by ``numpy.load``: the
  client's wall time, goal at most 1.3x sklearn's;
- service JSON: the same points as ``{"points": ...}`` (orjson, made beforehand), the
  JSON answer (labels and probabilities) parsed by orjson: reported beside it.

Memory, first, on the fresh server (one worker, default settings): its peak RSS
(``VmHWM``) once the model answered a small request, then after one ``.npy`` predict
of ``X`` (goal: it grows by at most 3x the body's size), then after one JSON predict
(reported). Before any figure, the ``.npy`` answer's labels are checked against
sklearn's ``predict``.

    python bench/predict_large.py [--samples 1000000] [--features 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
from sklearn.datasets import make_blobs  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402

from bench.run import Server, machine_info, service_server  # noqa: E402

N_COMPONENTS = 8
TRAIN_SAMPLES = 20_000
NPY = "application/x-npy"


def data(n_samples: int, n_features: int, seed: int) -> np.ndarray:
    X, _ = make_blobs(
        n_samples=n_samples, n_features=n_features, centers=N_COMPONENTS, random_state=seed
    )
    return np.ascontiguousarray(X, dtype=np.float64)


def npy_bytes(X: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, X)
    return buffer.getvalue()


def peak_rss(pid: int) -> int:
    """The process's peak resident set size so far (``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def predict_npy(client: httpx.Client, url: str, body: bytes) -> np.ndarray:
    response = client.post(url, content=body, headers={"Content-Type": NPY, "Accept": NPY})
    response.raise_for_status()
    labels: np.ndarray = np.load(io.BytesIO(response.content), allow_pickle=False)
    return labels


def predict_json(client: httpx.Client, url: str, body: bytes) -> dict[str, Any]:
    response = client.post(url, content=body, headers={"Content-Type": "application/json"})
    response.raise_for_status()
    answer: dict[str, Any] = orjson.loads(response.content)
    return answer


def _timed(run: Any) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    train = data(TRAIN_SAMPLES, args.features, seed=0)
    X = data(args.samples, args.features, seed=1)
    gm = GaussianMixture(n_components=N_COMPONENTS, random_state=0).fit(train)
    npy_body = npy_bytes(X)
    json_body = orjson.dumps({"points": X}, option=orjson.OPT_SERIALIZE_NUMPY)
    out: dict[str, Any] = {
        "machine": machine_info(),
        "samples": args.samples,
        "features": args.features,
        "npy_body_bytes": len(npy_body),
        "json_body_bytes": len(json_body),
    }
    with tempfile.TemporaryDirectory(prefix="gmm-bench-large-") as tmp:
        server = Server(*service_server(Path(tmp) / "store"))
        try:
            base = server.wait_ready()
            with httpx.Client(base_url=base, timeout=3600.0) as client:
                fit = {
                    "algorithm": "gaussian_mixture",
                    "params": {"n_components": N_COMPONENTS, "random_state": 0},
                    "data": {"points": train.tolist()},
                    "include": [],
                }
                response = client.post("/v1/models", json=fit)
                response.raise_for_status()
                model = response.json()
                out["same_model"] = bool(np.allclose(model["means"], gm.means_, rtol=1e-10))
                url = f"/v1/models/{model['id']}/predict"
                predict_npy(client, url, npy_bytes(X[:10]))  # loaded and compiled
                before = peak_rss(server.proc.pid)
                labels = predict_npy(client, url, npy_body)
                after_npy = peak_rss(server.proc.pid)
                predict_json(client, url, json_body)
                after_json = peak_rss(server.proc.pid)
                out["labels_mismatches"] = int(np.count_nonzero(labels != gm.predict(X)))
                out["memory"] = {
                    "peak_before_bytes": before,
                    "npy_growth_bytes": after_npy - before,
                    "json_growth_bytes": after_json - before,
                }
                runs: dict[str, list[float]] = {"sklearn": [], "npy": [], "json": []}
                for _ in range(args.repeats):
                    runs["sklearn"].append(_timed(lambda: gm.predict_proba(X)))
                    runs["npy"].append(_timed(lambda: predict_npy(client, url, npy_body)))
                    runs["json"].append(_timed(lambda: predict_json(client, url, json_body)))
        finally:
            server.stop()
    out["runs_s"] = runs
    out["medians_s"] = {name: statistics.median(values) for name, values in runs.items()}
    out["load_average_end"] = list(os.getloadavg())
    _report(out)
    return out


def _report(out: dict[str, Any]) -> None:
    m, mem = out["medians_s"], out["memory"]
    load = out["machine"]["load_average"][0], out["load_average_end"][0]
    ref, body = m["sklearn"], out["npy_body_bytes"]
    print(
        f"predict {out['samples']:,} x {out['features']}, {N_COMPONENTS} components, medians "
        f"of {len(out['runs_s']['sklearn'])}, load average {load[0]:.2f} -> {load[1]:.2f} "
        f"(same model: {out['same_model']}; labels unlike sklearn's predict: "
        f"{out['labels_mismatches']})"
    )
    print(f"  sklearn predict_proba in-process  {ref:7.3f} s")
    print(
        f"  service, .npy both ways           {m['npy']:7.3f} s  {m['npy'] / ref:5.2f}x "
        "(goal <= 1.3x)"
    )
    print(f"  service, JSON both ways           {m['json']:7.3f} s  {m['json'] / ref:5.2f}x")
    print(
        f"  server peak RSS {mem['peak_before_bytes'] / 2**20:,.0f} MiB before; grows "
        f"{mem['npy_growth_bytes'] / 2**20:,.0f} MiB with the .npy predict = "
        f"{mem['npy_growth_bytes'] / body:.2f}x its {body / 2**20:,.0f} MiB body (goal <= 3x); "
        f"{mem['json_growth_bytes'] / 2**20:,.0f} MiB after the JSON one "
        f"({out['json_body_bytes'] / 2**20:,.0f} MiB body)"
    )


if __name__ == "__main__":
    main()
