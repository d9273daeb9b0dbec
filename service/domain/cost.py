"""How long a fit may take, estimated before it starts, to decide whether to answer it
as a job.

The cost model counts the arithmetic one iteration does and multiplies it by the
iterations the fit may run:

- mixtures: an EM iteration evaluates every point under every component: about
  ``n_samples * n_components * w`` multiply-adds, where ``w`` is ``d**2 + d + 20``
  for ``full`` and ``tied`` covariances (a triangular solve per point and component,
  and the covariance update) and ``d + 20`` for ``diag`` and ``spherical`` (the 20
  stands for the per-element overhead of the numpy calls, which dominates for small
  ``d``). It may run ``max_iter`` iterations for each of ``n_init`` inits: the
  estimate is of that upper bound, because a fit that does not converge runs them all.
  ``BayesianGaussianMixture`` does about half as much again per iteration.
- k-means: a Lloyd iteration is ``n_samples * n_clusters * (d + 4)`` in compiled
  code; k-means usually converges long before its default ``max_iter=300``, so at
  most ``KMEANS_ITERATIONS`` of them are counted per init (``n_init="auto"`` counts 1
  init for k-means++ and 10 for random, as sklearn runs).

Both are then multiplied by ``SECONDS_PER_OPERATION``, measured with
``GaussianMixture`` and ``KMeans`` on 20,000-100,000 points of 2-30 features on one
core of a small shared machine: the estimate is right to within a factor of about
three, which is what choosing between answering now and answering with a job needs.
"""

from __future__ import annotations

from typing import Any

#: Seconds per counted operation (see above); a faster machine only makes the
#: estimate cautious.
SECONDS_PER_OPERATION = 3e-8
#: Seconds per counted k-means operation: Lloyd's loop is compiled and vectorised.
KMEANS_SECONDS_PER_OPERATION = 1.5e-8
#: Most Lloyd iterations counted per k-means init.
KMEANS_ITERATIONS = 100
#: A Bayesian mixture's variational updates cost about this much more than EM's.
BAYESIAN_FACTOR = 1.5


def _n_init(params: dict[str, Any]) -> int:
    n_init = params.get("n_init", 1)
    if isinstance(n_init, int):
        return max(n_init, 1)
    # "auto": sklearn runs 1 init for k-means++ (or an array init), 10 for random.
    return 10 if params.get("init") == "random" else 1


def fit_seconds(algorithm: str, params: dict[str, Any], n_samples: int, n_features: int) -> float:
    """Estimated wall-clock seconds of ``algorithm(**params).fit(X)`` for X of that shape."""
    d = n_features
    if algorithm in ("gaussian_mixture", "bayesian_gaussian_mixture"):
        k = int(params.get("n_components", 1))
        wide = params.get("covariance_type", "full") in ("full", "tied")
        per_point = d * d + d + 20 if wide else d + 20
        iterations = max(int(params.get("max_iter", 100)), 1) * _n_init(params)
        seconds = n_samples * k * per_point * iterations * SECONDS_PER_OPERATION
        return seconds * (BAYESIAN_FACTOR if algorithm == "bayesian_gaussian_mixture" else 1.0)
    k = int(params.get("n_clusters", 8))
    iterations = min(max(int(params.get("max_iter", 300)), 1), KMEANS_ITERATIONS)
    return n_samples * k * (d + 4) * iterations * _n_init(params) * KMEANS_SECONDS_PER_OPERATION
