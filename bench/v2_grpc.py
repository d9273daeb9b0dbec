"""Open Inference Protocol infer over gRPC beside the same infer over REST, on one server.

One service with ``GMM_GRPC_PORT`` set, one seed-blobs model, the same points, in
alternating slices after a warm-up:

- ``grpc``: ``ModelInfer`` from several client processes running ``tritonclient.grpc``
  (threads in each, a channel per thread), raw tensors both ways, as Triton's client
  sends them;
- ``rest``: ``POST /v2/models/{id}/infer`` from the same client processes running
  ``tritonclient.http`` (binary tensor data both ways): the like-for-like REST figure;
- ``rest-wrk``: the same route driven by wrk in the JSON form (``bench/v2_infer.py``'s
  figure), when wrk is installed: what REST does when the client costs nothing.

Answers are checked first: gRPC's and REST's labels and probabilities equal sklearn's
``predict_proba`` (rtol 1e-10). The client processes run on the server's machine: on
a small machine they compete with it for CPU, so the figures are lower bounds.

    python bench/v2_grpc.py [--duration 10] [--processes 4] [--threads 4]
                            [--points 1 100] [--workers 1]
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench import predict_throughput  # noqa: E402
from bench.predict_wrk import Endpoint, measure  # noqa: E402
from bench.run import Server, free_port, service_server  # noqa: E402
from bench.v2_infer import infer_body  # noqa: E402

#: Calls each client makes before the clock starts (connections, the model's cache).
WARMUP_CALLS = 20


def _client_process(
    transport: str,
    target: str,
    model: str,
    rows: np.ndarray,
    threads: int,
    duration: float,
    barrier: Any,
    results: Any,
) -> None:
    """``threads`` closed loops of ``infer`` for ``duration`` seconds, each with its own
    client (its own connection, made in its own thread: tritonclient.http's gevent
    sockets belong to the thread that made them), started once every process is warm;
    their latencies and errors go to ``results``."""
    module = importlib.import_module(f"tritonclient.{transport}")
    warm = threading.Barrier(threads + 1)
    go = threading.Event()
    deadline = [0.0]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[list[str]] = [[] for _ in range(threads)]

    def loop(i: int) -> None:
        client = module.InferenceServerClient(url=target)
        tensor = module.InferInput("points", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows)
        for _ in range(WARMUP_CALLS):
            client.infer(model, [tensor])
        warm.wait()
        go.wait()
        while (start := time.perf_counter()) < deadline[0]:
            try:
                client.infer(model, [tensor])
            except Exception as exc:
                errors[i].append(f"{type(exc).__name__}: {exc}")
                continue
            latencies[i].append(time.perf_counter() - start)
        client.close()

    running = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for thread in running:
        thread.start()
    warm.wait()
    barrier.wait()
    deadline[0] = time.perf_counter() + duration
    go.set()
    for thread in running:
        thread.join()
    results.put(([x for xs in latencies for x in xs], [e for es in errors for e in es]))


def drive(
    transport: str,
    target: str,
    model: str,
    rows: np.ndarray,
    *,
    processes: int,
    threads: int,
    duration: float,
) -> dict[str, float]:
    """Requests/s, p50 and p99 (ms) and errors of ``processes`` x ``threads`` clients."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    results = context.Queue()
    args = (transport, target, model, rows, threads, duration, barrier, results)
    started = [context.Process(target=_client_process, args=args) for _ in range(processes)]
    for process in started:
        process.start()
    barrier.wait(timeout=300)  # every client imported, connected and warm
    gathered = [results.get(timeout=duration + 300) for _ in started]
    for process in started:
        process.join()
    latencies = np.array([x for done, _ in gathered for x in done]) * 1e3
    errors = [e for _, failed in gathered for e in failed]
    if errors:
        print(f"{transport}: {len(errors)} failed calls, first: {errors[0]}", file=sys.stderr)
    return {
        "rps": len(latencies) / duration,
        "p50_ms": float(np.percentile(latencies, 50)) if latencies.size else float("nan"),
        "p99_ms": float(np.percentile(latencies, 99)) if latencies.size else float("nan"),
        "errors": float(len(errors)),
    }


def check_same_answers(
    http: str, grpc_target: str, model: str, X: np.ndarray, expected: Any
) -> bool:
    """gRPC and REST answer the same labels and sklearn's ``predict_proba``."""
    answers = []
    for transport, target in (("grpc", grpc_target), ("http", http)):
        module = importlib.import_module(f"tritonclient.{transport}")
        with module.InferenceServerClient(url=target) as client:
            tensor = module.InferInput("points", list(X.shape), "FP64")
            tensor.set_data_from_numpy(X)
            result = client.infer(model, [tensor])
            answers.append((result.as_numpy("labels"), result.as_numpy("probabilities")))
    (grpc_labels, grpc_proba), (rest_labels, rest_proba) = answers
    return bool(
        np.array_equal(grpc_labels, rest_labels)
        and np.allclose(grpc_proba, expected, rtol=1e-10, atol=0.0)
        and np.allclose(rest_proba, expected, rtol=1e-10, atol=0.0)
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per transport")
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--threads", type=int, default=4, help="clients in each process")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--points", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (GMM_WORKERS)")
    args = parser.parse_args(argv)
    concurrency = args.processes * args.threads
    results: dict[str, Any] = {
        "processes": args.processes,
        "threads": args.threads,
        "workers": args.workers,
        "cases": [],
    }
    with tempfile.TemporaryDirectory(prefix="gmm-bench-") as tmp:
        gm, X = predict_throughput.fit_reference(Path(tmp) / "seed.joblib")
        argv_, env, port, ready = service_server(Path(tmp) / "store")
        grpc_port = free_port()
        env.update({"GMM_GRPC_PORT": str(grpc_port), "GMM_WORKERS": str(args.workers)})
        server = Server(argv_, env, port, ready)
        try:
            base = server.wait_ready()
            model_id = predict_throughput.register_model(base)
            http, grpc_target = f"127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"
            results["same_answers"] = check_same_answers(
                http, grpc_target, model_id, X[:8], gm.predict_proba(X[:8])
            )
            for n in args.points:
                rows = np.vstack([X] * (n // len(X) + 1))[:n]
                slices: dict[str, list[dict[str, float]]] = {"grpc": [], "rest": []}
                for _ in range(args.rounds):
                    for transport, name, target in (
                        ("grpc", "grpc", grpc_target),
                        ("http", "rest", http),
                    ):
                        slices[name].append(
                            drive(
                                transport,
                                target,
                                model_id,
                                rows,
                                processes=args.processes,
                                threads=args.threads,
                                duration=args.duration / args.rounds,
                            )
                        )
                case: dict[str, Any] = {"points": n}
                for name, runs in slices.items():
                    case[name] = {
                        "rps": float(np.mean([r["rps"] for r in runs])),
                        "p50_ms": float(np.median([r["p50_ms"] for r in runs])),
                        "p99_ms": float(np.median([r["p99_ms"] for r in runs])),
                        "errors": float(sum(r["errors"] for r in runs)),
                    }
                if shutil.which("wrk") is not None:
                    url = f"{base}/v2/models/{model_id}/infer"
                    endpoint = Endpoint(
                        url, infer_body(rows), {"Content-Type": "application/json"}, Path(tmp)
                    )
                    wrk = measure(
                        {"rest-wrk": endpoint},
                        concurrency=concurrency,
                        duration=args.duration,
                        rounds=args.rounds,
                    )
                    case["rest-wrk"] = wrk["rest-wrk"]
                results["cases"].append(case)
        finally:
            server.stop()
    _report(results)
    return results


def _report(results: dict[str, Any]) -> None:
    print(
        f"v2 infer over gRPC and REST, {results['workers']} worker(s), "
        f"{results['processes']} client processes x {results['threads']} clients "
        f"(answers equal sklearn's predict_proba: {results['same_answers']})"
    )
    for case in results["cases"]:
        grpc, rest = case["grpc"], case["rest"]
        line = (
            f"  {case['points']:>4} point(s): gRPC {grpc['rps']:7.0f} req/s "
            f"p99 {grpc['p99_ms']:6.2f} ms | REST {rest['rps']:7.0f} req/s "
            f"p99 {rest['p99_ms']:6.2f} ms | gRPC/REST {grpc['rps'] / rest['rps']:.2f}x"
        )
        if "rest-wrk" in case:
            line += f" | REST with wrk (JSON) {case['rest-wrk']['rps']:7.0f} req/s"
        errors = int(grpc["errors"] + rest["errors"] + case.get("rest-wrk", {}).get("non_2xx", 0))
        print(f"{line} | errors {errors}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
