"""Fit end to end, and its memory: ``POST /v1/models`` against sklearn's bare fit.

Three ways a client fits the same 100,000 x 8 array (8 components), each timed from
the client's first byte to its parsed answer, against ``GaussianMixture.fit`` on the
same array in this process (interleaved, medians of ``--repeats``):

- ``.npy``: upload the array to ``POST /v1/datasets`` as ``application/x-npy``, then
  fit ``{"dataset_id"}`` with ``"include": []`` (the upload is counted);
- JSON: the rows encoded by orjson, ``"include": []``;
- JSON with the default ``include`` (labels and probabilities for every point);
- JSON as a plain request: no ``wait`` and no ``include`` in the body, default settings.
  The fit runs as a job and the request waits for it (``GMM_SYNC_WAIT_SECONDS``):
  what a client that knows nothing of the options pays.

The first three say ``"wait": true`` (the fit runs in the request, no job).

Memory: a 1,000,000 x 8 fit through ``.npy`` in a fresh server process, its peak RSS
(``VmHWM``) against a fresh Python process that loads the same ``.npy`` and fits it
alone. Both processes import the same libraries, so the ratio prices the service.

    python bench/fit_e2e.py [--repeats 3] [--memory-samples 1000000] [--skip-memory]
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402

from bench.fit_overhead import make_data  # noqa: E402
from bench.run import Server, service_server  # noqa: E402

N_COMPONENTS = 8
SEED = 0


def _npy_bytes(X: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, X, allow_pickle=False)
    return buf.getvalue()


def fit_npy(client: httpx.Client, X: np.ndarray) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    up = client.post(
        "/v1/datasets", content=_npy_bytes(X), headers={"Content-Type": "application/x-npy"}
    )
    if up.status_code not in (200, 201):
        raise RuntimeError(f"upload answered {up.status_code}: {up.text[:300]}")
    body = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": N_COMPONENTS, "random_state": SEED},
        "data": {"dataset_id": up.json()["id"]},
        "include": [],
        "wait": True,
    }
    r = client.post("/v1/models", content=orjson.dumps(body), headers=_JSON)
    model = orjson.loads(r.content)
    elapsed = time.perf_counter() - t0
    if r.status_code != 201:
        raise RuntimeError(f"fit answered {r.status_code}: {r.text[:300]}")
    return elapsed, model


_JSON = {"Content-Type": "application/json"}


def fit_json(
    client: httpx.Client, X: np.ndarray, include: list[str] | None, *, wait: bool | None = True
) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    body: dict[str, Any] = {
        "algorithm": "gaussian_mixture",
        "params": {"n_components": N_COMPONENTS, "random_state": SEED},
        "data": {"points": X},
    }
    if wait is not None:
        body["wait"] = wait
    if include is not None:
        body["include"] = include
    r = client.post(
        "/v1/models", content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), headers=_JSON
    )
    model = orjson.loads(r.content)
    elapsed = time.perf_counter() - t0
    if r.status_code != 201:
        raise RuntimeError(f"fit answered {r.status_code}: {r.text[:300]}")
    return elapsed, model


def sklearn_fit(X: np.ndarray) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    gm = GaussianMixture(n_components=N_COMPONENTS, random_state=SEED).fit(X)
    return time.perf_counter() - t0, gm.means_


def timing(base: str, repeats: int, n_samples: int, n_features: int) -> dict[str, Any]:
    X = make_data(n_samples, n_features, N_COMPONENTS)
    runs: dict[str, list[float]] = {
        "sklearn": [],
        "npy": [],
        "json": [],
        "json_default": [],
        "json_plain": [],
    }
    same = True
    with httpx.Client(base_url=base, timeout=600.0) as client:
        warm = make_data(2000, n_features, N_COMPONENTS, random_state=1)
        sklearn_fit(warm)
        fit_json(client, warm, [])
        for _ in range(repeats):
            seconds, means = sklearn_fit(X)
            runs["sklearn"].append(seconds)
            for name, call in (
                ("npy", lambda: fit_npy(client, X)),
                ("json", lambda: fit_json(client, X, [])),
                ("json_default", lambda: fit_json(client, X, None)),
                ("json_plain", lambda: fit_json(client, X, None, wait=None)),
            ):
                seconds, model = call()
                runs[name].append(seconds)
                same = same and np.allclose(model["means"], means, rtol=1e-10, atol=0)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {"medians_s": medians, "runs_s": runs, "same_means": same}


_ALONE = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from sklearn.mixture import GaussianMixture
    X = np.load(sys.argv[1])
    GaussianMixture(n_components={k}, random_state={seed}).fit(X)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            print(int(line.split()[1]) * 1024)
    """
)


def _hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def memory(n_samples: int, n_features: int, tmp: Path) -> dict[str, Any]:
    X = make_data(n_samples, n_features, N_COMPONENTS)
    path = tmp / "big.npy"
    np.save(path, X)
    alone = subprocess.run(
        [sys.executable, "-c", _ALONE.format(k=N_COMPONENTS, seed=SEED), str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    sklearn_peak = int(alone.stdout.split()[-1])
    server = Server(*service_server(tmp / "memstore"))
    try:
        base = server.wait_ready()
        with httpx.Client(base_url=base, timeout=1800.0) as client:
            fit_npy(client, X)
        service_peak = _hwm(server.proc.pid)
    finally:
        server.stop()
    return {
        "n_samples": n_samples,
        "sklearn_peak_bytes": sklearn_peak,
        "service_peak_bytes": service_peak,
        "ratio": service_peak / sklearn_peak,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--memory-samples", type=int, default=1_000_000)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gmm-bench-fit-") as tmp:
        server = Server(*service_server(Path(tmp) / "store"))
        try:
            out["timing"] = timing(server.wait_ready(), args.repeats, args.samples, args.features)
        finally:
            server.stop()
        if not args.skip_memory:
            out["memory"] = memory(args.memory_samples, args.features, Path(tmp))
    _report(out, args)
    return out


def _report(out: dict[str, Any], args: argparse.Namespace) -> None:
    t = out["timing"]
    m = t["medians_s"]
    ref = m["sklearn"]
    print(
        f"fit end to end, {args.samples:,} x {args.features}, {N_COMPONENTS} components "
        f"(medians of {args.repeats}; service means equal sklearn's: {t['same_means']})"
    )
    print(f"  sklearn bare fit            {ref:7.3f} s")
    for name, label, goal in (
        ("npy", ".npy upload + dataset_id", "<= 1.10x"),
        ("json", "JSON (orjson), include=[]", "<= 1.40x"),
        ("json_default", "JSON, default include", "reported"),
        ("json_plain", "JSON, no wait, no include", "<= 1.40x"),
    ):
        print(f"  {label:27s} {m[name]:7.3f} s  {m[name] / ref:5.2f}x  (goal {goal})")
    if "memory" in out:
        mem = out["memory"]
        print(
            f"memory, {mem['n_samples']:,} x {args.features} via .npy: service peak "
            f"{mem['service_peak_bytes'] / 2**20:,.0f} MiB, sklearn alone "
            f"{mem['sklearn_peak_bytes'] / 2**20:,.0f} MiB: {mem['ratio']:.2f}x (goal < 2x)"
        )


if __name__ == "__main__":
    main()
