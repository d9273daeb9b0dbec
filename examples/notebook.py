"""Replay the seed notebook ("Gaussian Mixture Models") against a running gmm-service.

Every cell of the notebook that used numpy, scikit-learn or matplotlib in-process is
one HTTP call here: generate the blobs, fit a 4-component mixture, predict, draw it;
then the two elongated Gaussians, k-means against a mixture, and finally the
notebook's "Cons: have to select number of clusters" answered by model selection.
Plots are written to a folder; a summary is printed as it goes.

Usage::

    python examples/notebook.py [BASE_URL] [--out DIR] [--api-key KEY]

``BASE_URL`` defaults to ``$GMM_BASE_URL`` or ``http://127.0.0.1:8000``. Endpoints the
server does not offer (an older version) are reported and skipped; the exit status is
non-zero only when a step the notebook itself needs fails.

The notebook draws its data without a seed; here every generator and fit takes
``random_state`` so that two runs (and a run against sklearn in-process) agree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_OUT = Path(__file__).resolve().parent / "out"

#: In[2]: make_blobs(n_samples=200, n_features=2, centers=4, cluster_std=1.6, random_state=10)
BLOBS = {
    "kind": "blobs",
    "n_samples": 200,
    "n_features": 2,
    "centers": 4,
    "cluster_std": 1.6,
    "random_state": 10,
}

#: In[8]: the notebook's covariances are neither symmetric nor positive semi-definite;
#: numpy warns and draws anyway. The service refuses them unless asked to warn.
ELONGATED_COMPONENTS = [
    {"mean": [0, 1], "cov": [[1, 2], [0.7, 2]], "n_samples": 1000},
    {"mean": [1, -2], "cov": [[2, 1], [-2, 1]], "n_samples": 1000},
]


class StepFailed(Exception):
    """A request the notebook needs did not answer as it should."""


class Replay:
    """One run of the notebook: an HTTP client, the output folder and what happened."""

    def __init__(self, client: httpx.Client, out: Path) -> None:
        self.client = client
        self.out = out
        self.paths: set[str] | None = None
        self.written: list[Path] = []
        self.skipped: list[str] = []
        self.failed: list[str] = []

    # -- plumbing -----------------------------------------------------------------
    def discover(self) -> None:
        """Learn which endpoints this server offers from its OpenAPI document."""
        try:
            r = self.client.get("/openapi.json")
            if r.status_code == 200:
                self.paths = set(r.json().get("paths", {}))
        except (httpx.HTTPError, ValueError):
            self.paths = None

    def offers(self, method: str, path: str) -> bool:
        if self.paths is None:  # unknown: try, and let the answer tell
            return True
        return path in self.paths

    def skip(self, what: str, path: str) -> None:
        note = f"{what}: the server has no {path} endpoint"
        if note not in self.skipped:
            self.skipped.append(note)
        print(f"    (skipped) {note}")

    def call(
        self, method: str, path: str, *, expect: int | tuple[int, ...] = 200, **kwargs: Any
    ) -> httpx.Response:
        """One request; anything but the expected status is reported with its problem."""
        r = self.client.request(method, path, **kwargs)
        wanted = (expect,) if isinstance(expect, int) else expect
        if r.status_code not in wanted:
            raise StepFailed(f"{method} {path} answered {r.status_code}: {_problem_text(r)}")
        return r

    def save(self, name: str, content: bytes) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / name
        path.write_bytes(content)
        self.written.append(path)
        print(f"    wrote {path} ({len(content):,} bytes)")
        return path

    def plot_model(self, model_id: str, name: str) -> None:
        path = "/v1/models/{model_id}/plot"
        if not self.offers("GET", path):
            self.skip("model plot", path)
            return
        r = self.client.get(f"/v1/models/{model_id}/plot", params={"format": "png"})
        if r.status_code == 404 and "No route" in _problem_text(r):
            self.skip("model plot", path)
            return
        if r.status_code != 200:
            raise StepFailed(f"GET {path} answered {r.status_code}: {_problem_text(r)}")
        self.save(name, r.content)

    def plot_dataset(self, generator: dict[str, Any], name: str) -> None:
        path = "/v1/datasets/plot"
        if not self.offers("POST", path):
            self.skip("dataset plot", path)
            return
        r = self.call("POST", path, json=generator, params={"format": "png"})
        self.save(name, r.content)

    def fit(self, algorithm: str, params: dict[str, Any], data: dict[str, Any], name: str) -> Any:
        body = {"algorithm": algorithm, "params": params, "data": data, "name": name}
        model = self.call("POST", "/v1/models", json=body, expect=201).json()
        print(
            f"    fitted {algorithm} {name!r} -> model {model['id']} "
            f"({model['n_samples']} points, {model['fit_seconds'] * 1000:.0f} ms)"
        )
        return model

    # -- the notebook ---------------------------------------------------------------
    def blobs(self) -> str:
        _title("Generating data (In[2]-In[4])")
        data = self.call("POST", "/v1/datasets/generate", json=BLOBS).json()
        points, labels = data["points"], data["labels"]
        print(f"    make_blobs: {len(points)} points, true labels {sorted(set(labels))}")
        self.plot_dataset(BLOBS, "01-blobs-true-labels.png")

        _title("Applying GMM (In[5]-In[7])")
        # GaussianMixture(n_components=4).fit(points), on the very points just generated.
        model = self.fit(
            "gaussian_mixture",
            {"n_components": 4, "random_state": 0},
            {"points": points},
            "notebook-blobs",
        )
        predicted = self.call(
            "POST", f"/v1/models/{model['id']}/predict", json={"points": points}
        ).json()["labels"]
        if predicted != model["labels"]:
            raise StepFailed("predict(points) disagrees with the labels of the fit itself")
        print("    predict(points) == the fit's labels: yes")
        print(f"    converged: {model['converged']} after {model['n_iter']} iterations")
        print(f"    BIC {model['bic']:.2f}, AIC {model['aic']:.2f}")
        _table(
            ["component", "weight", "mean x", "mean y", "points"],
            [
                [i, w, m[0], m[1], predicted.count(i)]
                for i, (w, m) in enumerate(zip(model["weights"], model["means"], strict=True))
            ],
        )
        self.plot_model(model["id"], "02-gmm-blobs.png")
        return str(model["id"])

    def elongated(self) -> dict[str, Any] | None:
        _title("Comparing to K-Means: generate data (In[8]-In[11])")
        strict = {"kind": "gaussian_mixture", "random_state": 0, "components": ELONGATED_COMPONENTS}
        r = self.call("POST", "/v1/datasets/generate", json=strict, expect=422)
        problem = r.json()
        print(f"    the notebook's covariances, as given: {r.status_code} {problem['title']}")
        for err in problem.get("errors") or []:
            print(f"      at {'.'.join(map(str, err['loc']))}: {err['msg']}")

        generator = {**strict, "check_valid": "warn"}
        data = self.call("POST", "/v1/datasets/generate", json=generator).json()
        print(f"    with check_valid='warn' (numpy's behaviour): {len(data['points'])} points")
        for warning in data.get("warnings") or []:
            print(f"      warning {warning['category']}: {warning['message']}")
        self.plot_dataset(generator, "03-elongated-true-labels.png")

        _title("K-Means (In[12]-In[14])")
        kmeans = self.fit(
            "kmeans",
            {"n_clusters": 2, "init": "random", "n_init": 10, "random_state": 0},
            {"generator": generator},
            "notebook-kmeans",
        )
        print(f"    inertia {kmeans['inertia']:.2f}, centers {_rounded(kmeans['means'])}")
        self.plot_model(kmeans["id"], "04-kmeans-elongated.png")

        _title("GMM (In[15]-In[17])")
        gmm = self.fit(
            "gaussian_mixture",
            {"n_components": 2, "random_state": 0},
            {"generator": generator},
            "notebook-gmm-elongated",
        )
        print(f"    weights {_rounded(gmm['weights'])}, means {_rounded(gmm['means'])}")
        if gmm.get("recovery"):
            ari = gmm["recovery"]["adjusted_rand_score"]
            print(f"    recovery of the true components: adjusted Rand {ari:.3f}")
        self.plot_model(gmm["id"], "05-gmm-elongated.png")
        return generator

    def compare(self, generator: dict[str, Any]) -> None:
        _title("K-Means vs GMM, one request (POST /v1/comparisons)")
        if not self.offers("POST", "/v1/comparisons"):
            self.skip("comparison", "/v1/comparisons")
            return
        body = {
            "data": {"generator": generator},
            "algorithms": [
                {
                    "algorithm": "kmeans",
                    "params": {"n_clusters": 2, "init": "random", "n_init": 10, "random_state": 0},
                },
                {"algorithm": "gaussian_mixture", "params": {"n_components": 2, "random_state": 0}},
            ],
        }
        results = self.call("POST", "/v1/comparisons", json=body).json()["results"]
        metrics = [
            "silhouette_score",
            "adjusted_rand_score",
            "adjusted_mutual_info_score",
            "v_measure_score",
        ]
        _table(
            ["algorithm", *metrics],
            [[res["algorithm"], *(res.get(m) for m in metrics)] for res in results],
        )

    def select(self) -> None:
        _title("Cons: have to select number of clusters (POST /v1/model-selection)")
        if not self.offers("POST", "/v1/model-selection"):
            self.skip("model selection", "/v1/model-selection")
            return
        body = {
            "data": {"generator": BLOBS},
            "grid": {
                "n_components": {"min": 1, "max": 8},
                "covariance_type": ["full", "tied", "diag", "spherical"],
            },
            "criterion": "bic",
            "params": {"random_state": 0},
        }
        result = self.call("POST", "/v1/model-selection", json=body).json()
        best = result["best"]
        print(
            f"    {len(result['scores'])} fits; lowest BIC: n_components={best['n_components']}, "
            f"covariance_type={best['covariance_type']!r} (BIC {best['bic']:.2f})"
        )
        full = [s for s in result["scores"] if s["covariance_type"] == "full"]
        _table(
            ["n_components", "bic (full)", "aic (full)"],
            [[s["n_components"], s["bic"], s["aic"]] for s in full],
        )
        if self.offers("POST", "/v1/model-selection/plot"):
            r = self.call("POST", "/v1/model-selection/plot", json=body, params={"format": "png"})
            self.save("06-model-selection-bic.png", r.content)
        else:
            self.skip("model-selection plot", "/v1/model-selection/plot")

    def portable(self, model_id: str) -> None:
        _title("Take the model elsewhere (GET /export, POST /v1/models/import)")
        if not self.offers("GET", "/v1/models/{model_id}/export"):
            self.skip("export", "/v1/models/{model_id}/export")
            return
        doc = self.call("GET", f"/v1/models/{model_id}/export").json()
        self.save("gmm-blobs.model.json", json.dumps(doc, indent=1).encode())
        imported = self.call("POST", "/v1/models/import", json=doc, expect=201).json()
        probe = {"points": [[0.0, 0.0], [-5.0, 5.0], [5.0, -8.0]]}
        a = self.call("POST", f"/v1/models/{model_id}/predict", json=probe).json()
        b = self.call("POST", f"/v1/models/{imported['id']}/predict", json=probe).json()
        same = "identical" if a == b else "DIFFERENT"
        print(f"    imported as {imported['id']}; its predictions are {same}")
        if a != b:
            raise StepFailed("the imported model predicts differently from the original")

    def step(self, name: str, action: Callable[[], Any]) -> Any:
        """Run one part of the notebook; a failure is recorded and the next part runs."""
        try:
            return action()
        except (StepFailed, httpx.HTTPError) as exc:
            self.failed.append(f"{name}: {exc}")
            print(f"    FAILED: {exc}")
            return None

    def run(self) -> int:
        blobs_model = self.step("blobs", self.blobs)
        generator = self.step("elongated", self.elongated)
        if generator is not None:
            self.step("compare", lambda: self.compare(generator))
        self.step("select", self.select)
        if blobs_model is not None:
            self.step("portable", lambda: self.portable(blobs_model))
        _title("Summary")
        print(f"    files written to {self.out}: {len(self.written)}")
        for path in self.written:
            print(f"      {path.name}")
        for note in self.skipped:
            print(f"    skipped: {note}")
        for note in self.failed:
            print(f"    failed: {note}")
        return 1 if self.failed else 0


def _problem_text(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:200]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return json.dumps(body)[:200]


def _title(text: str) -> None:
    print(f"\n== {text}")


def _rounded(value: Any, digits: int = 3) -> Any:
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return round(value, digits) if isinstance(value, float) else value


def _table(header: list[str], rows: list[list[Any]]) -> None:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(header)]
    print("    " + "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in text:
        print("    " + "  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "base_url",
        nargs="?",
        default=os.environ.get("GMM_BASE_URL", DEFAULT_BASE_URL),
        help=f"service URL (default $GMM_BASE_URL or {DEFAULT_BASE_URL})",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"folder (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("GMM_API_KEY"),
        help="sent as X-API-Key when the service has GMM_API_KEYS set (default $GMM_API_KEY)",
    )
    args = parser.parse_args(argv)
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    with httpx.Client(base_url=args.base_url, timeout=120.0, headers=headers) as client:
        try:
            client.get("/healthz").raise_for_status()
        except httpx.HTTPError as exc:
            print(f"gmm-service is not answering at {args.base_url}: {exc}", file=sys.stderr)
            print("start it with:  python -m service", file=sys.stderr)
            return 2
        print(f"gmm-service at {args.base_url}; output folder {args.out}")
        replay = Replay(client, args.out)
        replay.discover()
        start = time.perf_counter()
        status = replay.run()
        print(f"    done in {time.perf_counter() - start:.1f} s")
        return status


if __name__ == "__main__":
    sys.exit(main())
