"""Component identity: Hungarian matching of fitted components to reference ones.

Used twice: to report how well a fit recovered a generator's true components, and
to permute a new model so that its component ``i`` means the same thing as an older
model's component ``i``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from sklearn.metrics import adjusted_rand_score

from service.domain import sklearn_compat
from service.domain.training import estimators


def recovery_report(
    algorithm: str,
    est: Any,
    labels: np.ndarray,
    true_means: np.ndarray,
    true_covs: np.ndarray,
    true_labels: np.ndarray,
) -> dict[str, Any]:
    """Match fitted means to true means (min total Euclidean distance) and measure errors."""
    means = estimators.means_of(algorithm, est)
    rows, cols = linear_sum_assignment(cdist(true_means, means))
    covs = estimators.full_covariances(est) if estimators.is_mixture(algorithm) else None
    matching = []
    for t, c in zip(rows, cols, strict=True):
        matching.append(
            {
                "true_component": int(t),
                "component": int(c),
                "mean_error": float(np.linalg.norm(means[c] - true_means[t])),
                "covariance_error": (
                    float(np.linalg.norm(covs[c] - true_covs[t], ord="fro"))
                    if covs is not None
                    else None
                ),
            }
        )
    return {
        "matching": matching,
        "adjusted_rand_score": float(adjusted_rand_score(true_labels, labels)),
    }


def alignment_permutation(means: np.ndarray, reference_means: np.ndarray) -> np.ndarray:
    """``perm[i]`` = index of the fitted component that best matches reference component i."""
    _, cols = linear_sum_assignment(cdist(reference_means, means))
    return np.asarray(cols, dtype=np.int64)


#: Arrays with one entry (row, matrix) per component, whatever the covariance type.
_MIXTURE_PER_COMPONENT = ("weights_", "means_", "mean_precision_")
#: Per component except with ``covariance_type="tied"``, where one value is shared by
#: every component: a (d, d) matrix for the covariances, and for a Bayesian mixture a
#: single ``degrees_of_freedom_`` (sklearn's tied Wishart update pools the counts).
_MIXTURE_UNLESS_TIED = (
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
    "degrees_of_freedom_",
)


def permute(algorithm: str, est: Any, perm: np.ndarray) -> None:
    """Reorder a fitted estimator's components in place so that new i = old ``perm[i]``.

    Every per-component attribute moves together, so predictions are the same
    up to relabelling: ``new_labels = inverse[old_labels]``.
    """
    if estimators.is_mixture(algorithm):
        names = list(_MIXTURE_PER_COMPONENT)
        if est.covariance_type != "tied":
            names += _MIXTURE_UNLESS_TIED
        for attr in names:
            if hasattr(est, attr):  # mean_precision_ and degrees_of_freedom_: Bayesian only
                setattr(est, attr, np.asarray(getattr(est, attr))[perm])
        wc = getattr(est, "weight_concentration_", None)
        if isinstance(wc, tuple):
            est.weight_concentration_ = tuple(np.asarray(a)[perm] for a in wc)
        elif wc is not None:
            est.weight_concentration_ = np.asarray(wc)[perm]
        return
    inverse = np.argsort(perm)
    est.cluster_centers_ = est.cluster_centers_[perm]
    sklearn_compat.permute_minibatch_counts(est, perm)
    if getattr(est, "labels_", None) is not None:
        est.labels_ = inverse[est.labels_].astype(est.labels_.dtype)
