"""Run the benchmarks: fit overhead and predict throughput, one table, one JSON file.

``python bench/run.py`` (or ``make bench``) starts the service (``python -m service``)
and the reference app (``../shared/bench/minimal_app.py``, the hand-written FastAPI
wrapper the goals name) on free 127.0.0.1 ports, each with one worker, the same
uvicorn options, and the service's store in a temporary folder, runs both
measurements against them, and always stops them. Every figure is a ratio to a
reference measured in the same run, because absolute numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

from bench import fit_overhead, predict_throughput  # noqa: E402
from service.config import Settings  # noqa: E402

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "latest.json"
#: The hand-written wrapper the goals compare against, beside the repository.
SHARED_REFERENCE = ROOT.parent / "shared" / "bench" / "minimal_app.py"
#: Where that app reads its joblib file from (its docstring).
REFERENCE_MODEL_ENV = "MINIMAL_MODEL_PATH"


def free_port() -> int:
    """A port the kernel just handed out; free again by the time uvicorn binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without its ``GMM_*`` settings (a stray API key or
    limit must not change the figures); BLAS variables such as OPENBLAS_CORETYPE stay."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GMM_")}
    # This checkout's service, whatever the venv has installed (servers run in an
    # empty folder, where a relative PYTHONPATH would name nothing).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


class Server:
    """One server process on 127.0.0.1, started at once and waited for separately,
    so that two servers boot side by side instead of one after the other."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, ready_path: str) -> None:
        self.argv = argv
        self.base = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        # An empty cwd, so that no .env file of the caller's is read.
        self._cwd = tempfile.TemporaryDirectory(prefix="gmm-bench-srv-")
        self._log = Path(self._cwd.name) / "server.log"
        with self._log.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=self._cwd.name, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float = 60.0) -> str:
        """The base URL, once ``ready_path`` answers 200."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.argv} exited with {self.proc.returncode}:\n"
                    f"{self._log.read_text()[-2000:]}"
                )
            try:
                if httpx.get(self.base + self.ready_path, timeout=1.0).status_code == 200:
                    return self.base
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.argv} not ready after {timeout} s")
            time.sleep(0.1)

    def log_text(self) -> str:
        """What the server wrote so far: its tracebacks, read before ``stop`` removes them."""
        return self._log.read_text(errors="replace")

    def stop(self) -> None:
        """Terminate, then kill if it lingers; safe to call on a process already gone."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._cwd.cleanup()


def service_server(
    store_dir: Path, env: dict[str, str] | None = None
) -> tuple[list[str], dict[str, str], int, str]:
    """``python -m service`` with default settings (the JSON access line and metrics on),
    one worker, a store in ``store_dir``, plus ``env``."""
    port = free_port()
    settings = {
        "GMM_HOST": "127.0.0.1",
        "GMM_PORT": str(port),
        "GMM_WORKERS": "1",
        "GMM_STORE_DIR": str(store_dir),
        # Replicas of one store (other workers' counts, keys) share one signing key.
        "GMM_SECRET_KEY": "bench-secret-key",
    }
    return (
        [sys.executable, "-m", "service"],
        _clean_env({**settings, **(env or {})}),
        port,
        "/healthz",
    )


def uvicorn_options() -> list[str]:
    """The uvicorn options ``python -m service`` runs with by default, as command-line
    flags for another app: one worker, the same keep-alive, connection cap and log
    level, httptools, no uvicorn access log (the service writes its own line)."""
    default = {name: field.default for name, field in Settings.model_fields.items()}
    return [
        *("--workers", "1"),
        *("--timeout-keep-alive", str(default["timeout_keep_alive"])),
        *("--limit-concurrency", str(default["max_connections"])),
        *("--log-level", default["log_level"]),
        *("--http", "httptools"),
        "--no-access-log",
    ]


def reference_server(
    model_path: Path, reference: Path = SHARED_REFERENCE
) -> tuple[list[str], dict[str, str], int, str]:
    """The reference app started as its docstring says (``MINIMAL_MODEL_PATH=... uvicorn
    minimal_app:app``), with the service's uvicorn options."""
    if not reference.is_file():
        raise SystemExit(
            f"the reference app {reference} is missing: the predict benchmarks compare "
            "against ../shared/bench/minimal_app.py (or pass --reference PATH)"
        )
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        f"{reference.stem}:app",
        *("--app-dir", str(reference.parent)),
        *("--host", "127.0.0.1", "--port", str(port)),
        *uvicorn_options(),
    ]
    return argv, _clean_env({REFERENCE_MODEL_ENV: str(model_path)}), port, "/healthz"


def machine_info() -> dict[str, Any]:
    """What the figures depend on: cores, load, versions, and the BLAS kernel in use."""
    blas = [
        {
            k: info.get(k)
            for k in ("user_api", "internal_api", "version", "architecture", "num_threads")
        }
        for info in threadpool_info()
    ]
    return {
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "threadpools": blas,
    }


def format_table(results: dict[str, Any]) -> str:
    """The figures a person reads first; the JSON file has every run."""
    m = results["machine"]
    lines = [
        f"machine: {m['cpu_count']} CPUs, load average {m['load_average'][0]:.2f} at start, "
        f"{results['load_average_end'][0]:.2f} at end; python {m['python']}, "
        f"numpy {m['numpy']}, sklearn {m['sklearn']}",
        f"OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE'] or '(unset)'}",
    ]
    for pool in m["threadpools"]:
        lines.append(
            f"threadpool: {pool['internal_api']} {pool['version']} "
            f"kernel={pool['architecture']} threads={pool['num_threads']}"
        )
    fit = results.get("fit")
    if fit:
        lines += [
            "",
            f"Fit overhead: POST /v1/models, gaussian_mixture n_components={fit['n_components']}, "
            f"{fit['n_samples']} x {fit['n_features']} points, median of {fit['repeats']}",
            f"{'':<26}{'total s':>9}{'ratio':>8}{'serialize':>11}{'request':>9}"
            f"{'parse':>8}{'fit_seconds':>13}{'server other':>14}",
            f"{'sklearn .fit in-process':<26}{fit['sklearn_seconds']['median']:>9.3f}{1.0:>8.2f}",
        ]
        for name, v in fit["service"].items():
            md = v["median"]
            lines.append(
                f"{'service ' + name:<26}{md['total']:>9.3f}{v['ratio_to_sklearn']:>8.2f}"
                f"{md['serialize']:>11.3f}{md['request']:>9.3f}{md['parse']:>8.3f}"
                f"{md['fit_seconds']:>13.3f}{md['server_other']:>14.3f}"
            )
        lines += [
            "server other = request - fit_seconds; of which reading, decoding and validating "
            f"the body (a 422 probe): {fit['validation_probe_seconds']['median']:.3f} s",
            f"service means equal sklearn's (rtol 1e-10): {fit['matches_sklearn']}",
        ]
    pred = results.get("predict")
    if pred:
        lines += [
            "",
            f"Predict throughput: single point, concurrency {pred['concurrency']}, "
            f"{pred['duration']:g} s each in {pred['rounds']} alternating rounds, "
            f"after {pred['warmup']:g} s warm-up",
            f"{'':<26}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'requests':>10}{'errors':>8}",
        ]
        for name, label in (("minimal", "reference (shared)"), ("service", "service")):
            r = pred[name]
            lines.append(
                f"{label:<26}{r['requests_per_second']:>9.1f}{r['p50_ms']:>9.2f}"
                f"{r['p99_ms']:>9.2f}{r['requests']:>10.0f}{r['errors']:>8.0f}"
            )
        lines += [
            f"ratio service/minimal (req/s): {pred['ratio_service_to_minimal']:.2f}",
            f"both answer sklearn's predict_proba (rtol 1e-10): {pred['same_answers']}",
        ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("fit", "predict"), help="Run one measurement only.")
    p.add_argument("--n-samples", type=int, default=100_000, help="Fit: rows of data.")
    p.add_argument("--n-features", type=int, default=8, help="Fit: columns of data.")
    p.add_argument("--n-components", type=int, default=8, help="Fit: mixture components.")
    p.add_argument("--repeats", type=int, default=3, help="Fit: runs of each variant.")
    p.add_argument("--concurrency", type=int, default=16, help="Predict: concurrent clients.")
    p.add_argument("--duration", type=float, default=10.0, help="Predict: seconds per server.")
    p.add_argument("--rounds", type=int, default=2, help="Predict: alternating slices per server.")
    p.add_argument("--warmup", type=float, default=1.0, help="Predict: discarded seconds.")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file.")
    p.add_argument(
        "--reference", type=Path, default=SHARED_REFERENCE, help="Predict: the reference app."
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    results: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_info(),
    }
    with tempfile.TemporaryDirectory(prefix="gmm-bench-") as tmp:
        tmp_path = Path(tmp)
        model_path = tmp_path / "seed.joblib"
        gm, X_seed = predict_throughput.fit_reference(model_path)
        servers: list[Server] = []
        try:
            service = Server(*service_server(tmp_path / "store"))
            servers.append(service)
            if args.only != "fit":
                minimal = Server(*reference_server(model_path, args.reference))
                servers.append(minimal)
            for server in servers:
                server.wait_ready()
            if args.only != "predict":
                results["fit"] = fit_overhead.run(
                    service.base,
                    n_samples=args.n_samples,
                    n_features=args.n_features,
                    n_components=args.n_components,
                    repeats=args.repeats,
                )
            if args.only != "fit":
                model_id = predict_throughput.register_model(service.base)
                results["predict"] = predict_throughput.run(
                    service.base,
                    minimal.base,
                    model_id,
                    gm,
                    X_seed,
                    concurrency=args.concurrency,
                    duration=args.duration,
                    warmup=args.warmup,
                    rounds=args.rounds,
                )
        finally:
            for server in servers:
                server.stop()
    results["load_average_end"] = list(os.getloadavg())
    print(format_table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {args.output}")
    return results


if __name__ == "__main__":
    main()
