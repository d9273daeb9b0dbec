"""The only module that fits: scikit-learn in, plain numpy arrays and dicts out.

Every algorithm is one row of ``ALGORITHMS``. Parameters arrive already checked
against sklearn's constraints by ``service.schemas.params``; here they are checked
against the service's limits and the data's shape, then handed to sklearn untouched,
so that a fit equals the in-process one to the last bit.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from service.domain import sklearn_compat
from service.domain.inference.compiled import kmeans_distances
from service.domain.limits import Limits
from service.domain.training.progress import FitProgress, fit_tracked, progress_plan
from service.domain.training.warnings_capture import capture_warnings
from service.errors import FitFailed, InvalidInput, LimitExceeded

PARAMS_LOC: tuple[str, ...] = ("body", "params")
SAMPLE_WEIGHT_LOC: tuple[str, ...] = ("body", "sample_weight")


@dataclass(frozen=True)
class Algorithm:
    name: str
    estimator: type
    family: Literal["mixture", "centroid"]
    k_param: str  # the parameter naming the number of components / clusters
    min_samples: int  # sklearn's ensure_min_samples for fit


ALGORITHMS: dict[str, Algorithm] = {
    "gaussian_mixture": Algorithm(
        "gaussian_mixture", GaussianMixture, "mixture", "n_components", 2
    ),
    "bayesian_gaussian_mixture": Algorithm(
        "bayesian_gaussian_mixture", BayesianGaussianMixture, "mixture", "n_components", 2
    ),
    "kmeans": Algorithm("kmeans", KMeans, "centroid", "n_clusters", 1),
    "minibatch_kmeans": Algorithm("minibatch_kmeans", MiniBatchKMeans, "centroid", "n_clusters", 1),
}

#: The shape of covariances (and of precisions, their Cholesky factors, and the
#: ``precisions_init`` parameter) for each covariance_type, given (k, d).
COVARIANCE_SHAPES = {
    "full": lambda k, d: (k, d, d),
    "tied": lambda k, d: (d, d),
    "diag": lambda k, d: (k, d),
    "spherical": lambda k, d: (k,),
}


_COV_PRIOR_SHAPES = {
    "full": lambda d: (d, d),
    "tied": lambda d: (d, d),
    "diag": lambda d: (d,),
    "spherical": lambda d: (),
}


def _shape_of(value: Any) -> tuple[int, ...] | None:
    """The shape of a nested list, or None when it is ragged."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except ValueError:
        return None
    return arr.shape


def _expect_shape(
    name: str, value: Any, shape: tuple[int, ...], why: str, sklearn_says: str | None = None
) -> None:
    """A 422 naming ``name`` unless ``value`` has ``shape``.

    ``sklearn_says(got)``, when given, is scikit-learn's own message for the mistake
    (``%s`` is the shape received), put first: code written against sklearn matches it.
    """
    got = _shape_of(value)
    if got != shape:
        got_text = "a ragged array" if got is None else f"shape {got}"
        detail = f"{name} must have shape {shape} ({why}), got {got_text}."
        if sklearn_says is not None and got is not None:
            detail = f"{sklearn_says % (got,)}: {detail}"
        raise InvalidInput.at([*PARAMS_LOC, name], detail, "wrong_shape")


def _sklearn_shape_message(label: str, shape: tuple[int, ...]) -> str:
    """``BaseMixture``'s wording for an initial value of the wrong shape."""
    return f"The parameter '{label}' should have the shape of {shape}, but got %s"


def _kmeans_init_message(k: int, n_features: int, got: tuple[int, ...] | None) -> str:
    """``KMeans``'s wording for initial centers of the wrong shape."""
    if got is not None and got and got[0] != k:
        return f"The shape of the initial centers %s does not match the number of clusters {k}"
    return (
        "The shape of the initial centers %s does not match the number of features of the "
        f"data {n_features}"
    )


def model_parameters(algorithm: str, params: dict[str, Any], n_features: int) -> int:
    """How many numbers the fitted model's weights, means (centers) and covariances
    hold: what storing it, loading it and answering GET cost, before it exists."""
    algo = ALGORITHMS[algorithm]
    k = int(params[algo.k_param])
    if algo.family != "mixture":
        return k * n_features
    d = n_features
    covariances = {
        "full": k * d * d,
        "tied": d * d,
        "diag": k * d,
        "spherical": k,
    }[params.get("covariance_type") or "full"]
    return k + k * d + covariances


def check_params(
    algorithm: str, params: dict[str, Any], n_samples: int, n_features: int, limits: Limits
) -> None:
    """Check limits, sample counts and array shapes before any work, naming the field."""
    algo = ALGORITHMS[algorithm]
    k = params[algo.k_param]
    if k > limits.max_components:
        raise LimitExceeded.at(
            [*PARAMS_LOC, algo.k_param],
            f"{algo.k_param}={k} exceeds the limit of {limits.max_components} "
            "(GMM_MAX_COMPONENTS).",
        )
    size = model_parameters(algorithm, params, n_features)
    if size > limits.max_model_parameters:
        raise LimitExceeded.at(
            [*PARAMS_LOC, algo.k_param],
            f"The fitted model would hold {size} numbers ({algo.k_param}={k}, "
            f"{n_features} features"
            + (
                f", covariance_type={params.get('covariance_type', 'full')!r}"
                if algo.family == "mixture"
                else ""
            )
            + f"), more than the limit of {limits.max_model_parameters} "
            "(GMM_MAX_MODEL_PARAMETERS). Use fewer components or features, or a "
            "covariance_type with fewer numbers (diag, spherical).",
        )
    for name, limit, env in (
        ("max_iter", limits.max_iter, "GMM_MAX_ITER"),
        ("n_init", limits.max_n_init, "GMM_MAX_N_INIT"),
    ):
        value = params.get(name)
        if isinstance(value, int) and value > limit:
            raise LimitExceeded.at(
                [*PARAMS_LOC, name], f"{name}={value} exceeds the limit of {limit} ({env})."
            )
    needed = max(k, algo.min_samples)
    if n_samples < needed:
        # scikit-learn's own wording first, so code written against sklearn matches it.
        if n_samples < algo.min_samples:
            sklearn_says = (
                f"Found array with {n_samples} sample(s) (shape=({n_samples}, {n_features})) "
                f"while a minimum of {algo.min_samples} is required"
            )
        elif algo.family == "mixture":
            sklearn_says = (
                f"Expected n_samples >= n_components but got n_components = {k}, "
                f"n_samples = {n_samples}"
            )
        else:
            sklearn_says = f"n_samples={n_samples} should be >= n_clusters={k}"
        raise InvalidInput.at(
            [*PARAMS_LOC, algo.k_param],
            f"{sklearn_says}: {algo.k_param}={k} needs at least {needed} samples, but the "
            f"data has {n_samples}. Give more points or ask for fewer "
            f"{algo.k_param.split('_')[1]}.",
            "too_few_samples",
        )
    why_k = f"{algo.k_param}={k}, n_features={n_features}"
    if algo.family == "mixture":
        cov_type = params["covariance_type"]
        if params.get("mean_prior") is not None:
            _expect_shape("mean_prior", params["mean_prior"], (n_features,), why_k)
        prior = params.get("covariance_prior")
        if isinstance(prior, list):
            shape = _COV_PRIOR_SHAPES[cov_type](n_features)
            _expect_shape("covariance_prior", prior, shape, f"covariance_type={cov_type!r}")
        dof = params.get("degrees_of_freedom_prior")
        if dof is not None and dof <= n_features - 1:
            raise InvalidInput.at(
                [*PARAMS_LOC, "degrees_of_freedom_prior"],
                # sklearn's wording, then which n_features the bound comes from
                f"The parameter 'degrees_of_freedom_prior' should be greater than "
                f"{n_features - 1}, but got {dof:.3f}. (It must be greater than "
                f"n_features - 1, and the data has {n_features} features.)",
            )
        if params.get("weights_init") is not None:
            _expect_shape(
                "weights_init",
                params["weights_init"],
                (k,),
                why_k,
                _sklearn_shape_message("weights", (k,)),
            )
        if params.get("means_init") is not None:
            _expect_shape(
                "means_init",
                params["means_init"],
                (k, n_features),
                why_k,
                _sklearn_shape_message("means", (k, n_features)),
            )
        if params.get("precisions_init") is not None:
            shape = COVARIANCE_SHAPES[cov_type](k, n_features)
            _expect_shape(
                "precisions_init",
                params["precisions_init"],
                shape,
                f"{why_k}, covariance_type={cov_type!r}",
                _sklearn_shape_message(f"{cov_type} precision", shape),
            )
        _check_init_values(params, k, n_features)
    elif isinstance(params.get("init"), list):
        message = _kmeans_init_message(k, n_features, _shape_of(params["init"]))
        _expect_shape("init", params["init"], (k, n_features), why_k, message)


def _check_init_values(params: dict[str, Any], k: int, n_features: int) -> None:
    """sklearn's own checks of initial values (weights sum to 1, precisions positive
    definite...), run up front so that the problem names the parameter at fault."""
    checks = {
        "weights_init": lambda v: sklearn_compat.check_weights(v, k),
        "means_init": lambda v: sklearn_compat.check_means(v, k, n_features),
        "precisions_init": lambda v: sklearn_compat.check_precisions(
            v, params["covariance_type"], k, n_features
        ),
    }
    for name, check in checks.items():
        value = params.get(name)
        if value is None:
            continue
        try:
            check(np.asarray(value, dtype=np.float64))
        except ValueError as exc:
            raise InvalidInput.at([*PARAMS_LOC, name], f"{name}: {exc}") from exc


def build(algorithm: str, params: dict[str, Any]) -> Any:
    """An unfitted estimator; nested lists become the arrays sklearn expects."""
    kwargs = {
        key: np.asarray(value, dtype=np.float64) if isinstance(value, list) else value
        for key, value in params.items()
    }
    return ALGORITHMS[algorithm].estimator(**kwargs)


@dataclass
class Fitted:
    estimator: Any
    warnings: list[dict[str, str]]
    fit_seconds: float
    #: Mixtures: ``_estimate_weighted_log_prob`` of the training points under the
    #: fitted parameters, (n_samples, n_components), as sklearn's final E-step computed
    #: it; None when it could not be kept (see ``_final_e_step_of``).
    training_wlp: np.ndarray | None = None


def _final_e_step_of(X: np.ndarray, kept: dict[str, Any]) -> Callable[[Any, np.ndarray], None]:
    """An observer (``sklearn_compat.observed_weighted_log_prob``) that keeps in ``kept``
    the last ``_estimate_weighted_log_prob`` a mixture's fit computes.

    ``fit`` ends with an E-step under the final parameters ("to guarantee that the
    labels returned by fit_predict(X) are always consistent with fit(X).predict(X)"):
    the very array that labels, ``score_samples`` and hence bic/aic of the training
    points are made of. Keeping it spares computing it again, which costs as much as
    one EM iteration. It is kept only when sklearn worked on ``X``'s own memory, so
    that it is bit for bit what a new computation on ``X`` would give.
    """

    def remember(data: Any, out: np.ndarray) -> None:
        same = (
            isinstance(data, np.ndarray)
            and data.shape == X.shape
            and data.dtype == X.dtype
            and data.strides == X.strides
            and data.ctypes.data == X.ctypes.data
        )
        kept["wlp"] = out if same else None

    return remember


def check_sample_weight(
    algorithm: str, sample_weight: list[float] | None, n_samples: int
) -> np.ndarray | None:
    """``sample_weight`` as the float64 array sklearn's ``fit`` takes, or None.

    The schema has already refused negative and non-finite weights (and the field
    on mixtures, whose sklearn ``fit`` has no ``sample_weight``); here come the checks
    that need the data: one weight per point, and not all of them zero. The messages
    start with those of sklearn's ``_check_sample_weight``, so that code written
    against sklearn matches them.
    """
    if sample_weight is None:
        return None
    if ALGORITHMS[algorithm].family != "centroid":  # the schema forbids it: a bug here
        raise InvalidInput.at(
            list(SAMPLE_WEIGHT_LOC), f"{algorithm} takes no sample_weight.", "extra_forbidden"
        )
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.shape != (n_samples,):
        raise InvalidInput.at(
            list(SAMPLE_WEIGHT_LOC),
            f"sample_weight.shape == {weights.shape}, expected {(n_samples,)}!: give one "
            f"weight per training point; the data has {n_samples} samples, sample_weight "
            f"has {weights.shape[0]} weights.",
            "wrong_shape",
        )
    if not weights.any():
        raise InvalidInput.at(
            list(SAMPLE_WEIGHT_LOC),
            "Sample weights must contain at least one non-zero number: every weight is 0, "
            "so no point counts; give at least one point a positive weight, or omit "
            "sample_weight for equal weights.",
            "all_zero",
        )
    return weights


def fit(
    algorithm: str,
    params: dict[str, Any],
    X: np.ndarray,
    progress: FitProgress | None = None,
    *,
    sample_weight: np.ndarray | None = None,
) -> Fitted:
    """Fit exactly as ``Estimator(**params).fit(X, sample_weight=sample_weight)`` would
    in-process. ``sample_weight`` (n_samples,), k-means only, is checked already
    (``check_sample_weight``); None fits as sklearn does without it.

    With ``progress`` the fit reports its steps there and stops (``FitCancelled``) when
    it says so; the numbers are the same to the last bit (``progress.fit_tracked``).
    """
    estimator = build(algorithm, params)
    kept: dict[str, Any] = {}
    watch: contextlib.AbstractContextManager[None] = (
        sklearn_compat.observed_weighted_log_prob(estimator, _final_e_step_of(X, kept))
        if ALGORITHMS[algorithm].family == "mixture"
        else contextlib.nullcontext()
    )
    # Mixtures' fit has no sample_weight argument: it is passed only when there is one.
    fit_kwargs = {} if sample_weight is None else {"sample_weight": sample_weight}
    start = time.perf_counter()
    with capture_warnings() as caught:
        try:
            with watch:
                if progress is None:
                    estimator.fit(X, **fit_kwargs)
                else:
                    progress.total, progress.unit = progress_plan(estimator)
                    fit_tracked(estimator, X, progress, **fit_kwargs)
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise FitFailed(f"scikit-learn could not fit {algorithm}: {exc}") from exc
    return Fitted(estimator, caught, time.perf_counter() - start, kept.get("wlp"))


def finite_or_none(value: Any) -> float | None:
    """A number JSON can hold, or None (-inf after ``max_iter=0``, an overflowed BIC)."""
    # sklearn keeps some scalars as shape-(1,) arrays (tied BayesianGaussianMixture)
    value = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
    return value if np.isfinite(value) else None


def information_criteria(est: Any, X: np.ndarray, log_likelihood: np.ndarray) -> dict[str, Any]:
    """``bic`` and ``aic`` from per-point log-likelihoods already at hand.

    sklearn's ``bic(X)`` and ``aic(X)`` each recompute ``score(X)``; this is their
    formula on the same numbers, so the results are bit-identical at a third of the cost.
    """
    n = X.shape[0]
    score = log_likelihood.mean()
    return {
        "bic": finite_or_none(-2 * score * n + sklearn_compat.n_parameters(est) * np.log(n)),
        "aic": finite_or_none(-2 * score * n + 2 * sklearn_compat.n_parameters(est)),
    }


def large_attributes(est: Any) -> dict[str, Any]:
    """A fitted mixture's attributes of up to n_components x n_features^2 numbers, and
    its convergence trace (``schemas.models.LIST_OMITS``). They are part of its
    resource, but a stored model keeps them in its artifact only (the estimator holds
    them anyway): its catalogue row stays small whatever the model's size, and GET of
    one model reads them back from here (``Catalogue.get``)."""
    return {
        "covariances": est.covariances_,
        "precisions": est.precisions_,
        # The convergence trace of the best init, as sklearn's lower_bounds_.
        "lower_bounds": [finite_or_none(v) for v in getattr(est, "lower_bounds_", [])],
    }


#: sklearn's fitted ``*_prior_`` attributes of a Bayesian mixture, under the resource's
#: names: the priors as the fit resolved them (a default is computed from the data).
BAYESIAN_PRIORS = (
    "weight_concentration_prior",
    "mean_precision_prior",
    "mean_prior",
    "degrees_of_freedom_prior",
    "covariance_prior",
)


def bayesian_priors(est: Any) -> dict[str, Any]:
    """The priors a Bayesian mixture was fitted with, as sklearn resolved them; None
    each for one that holds none (an import builds the posterior, not the prior)."""
    return {name: getattr(est, f"{name}_", None) for name in BAYESIAN_PRIORS}


def describe(
    algorithm: str, est: Any, X: np.ndarray | None, log_likelihood: np.ndarray | None = None
) -> dict[str, Any]:
    """The fitted attributes a model resource shows, under sklearn's names.

    ``log_likelihood`` (``score_samples(X)``), when given, spares recomputing it.
    """
    algo = ALGORITHMS[algorithm]
    if algo.family == "mixture":
        out: dict[str, Any] = {
            "n_components": int(est.n_components),
            "covariance_type": est.covariance_type,
            "means": est.means_,
            "weights": est.weights_,
            "converged": bool(est.converged_),
            "n_iter": int(est.n_iter_),
            "lower_bound": finite_or_none(est.lower_bound_),
            **large_attributes(est),
        }
        if algorithm == "gaussian_mixture":
            if X is None:
                out.update(bic=None, aic=None)
            else:
                ll = log_likelihood if log_likelihood is not None else log_likelihood_of(est, X)
                out.update(information_criteria(est, X, ll))
        else:
            wc = est.weight_concentration_
            out["weight_concentration"] = np.vstack(wc) if isinstance(wc, tuple) else wc
            out["mean_precision"] = est.mean_precision_
            out["degrees_of_freedom"] = est.degrees_of_freedom_
            out.update(bayesian_priors(est))
        return out
    out = {
        "n_components": int(est.n_clusters),
        "means": est.cluster_centers_,
        "inertia": float(est.inertia_),
        "n_iter": int(est.n_iter_),
    }
    if algorithm == "minibatch_kmeans":
        out["n_steps"] = int(est.n_steps_)
    return out


def effective_n_components(weights: np.ndarray, threshold: float) -> int:
    return int(np.sum(np.asarray(weights) > threshold))


def per_point(
    algorithm: str,
    est: Any,
    X: np.ndarray,
    include: set[str],
    *,
    training: bool = False,
    wlp: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Labels and probabilities (mixtures) or distances (KMeans) for the rows of ``X``.

    Mixtures compute the weighted log-probabilities once (or take ``wlp``, the fit's
    own final E-step) and derive labels, responsibilities and (``"log_likelihood"`` in
    ``include``) ``score_samples`` from them exactly as ``predict``,
    ``predict_proba`` and ``score_samples`` do.
    """
    out: dict[str, np.ndarray] = {}
    if ALGORITHMS[algorithm].family == "mixture":
        if wlp is None:
            wlp = sklearn_compat.estimate_weighted_log_prob(est, X)
        if "labels" in include:
            out["labels"] = wlp.argmax(axis=1)
        if "probabilities" in include or "log_likelihood" in include:
            log_norm = sklearn_compat.logsumexp(wlp, axis=1)
            if "log_likelihood" in include:
                out["log_likelihood"] = log_norm
        if "probabilities" in include:
            with np.errstate(under="ignore"):
                out["probabilities"] = np.exp(wlp - log_norm[:, np.newaxis])
        return out
    if "labels" in include:
        has_labels = training and getattr(est, "labels_", None) is not None
        out["labels"] = est.labels_ if has_labels else est.predict(X)
    if "distances" in include:
        out["distances"] = kmeans_distances(X, np.asarray(est.cluster_centers_))
    return out


def per_point_fields(algorithm: str) -> set[str]:
    if ALGORITHMS[algorithm].family == "mixture":
        return {"labels", "probabilities"}
    return {"labels", "distances"}


def default_include(algorithm: str) -> set[str]:
    if ALGORITHMS[algorithm].family == "mixture":
        return {"labels", "probabilities"}
    return {"labels"}


def is_mixture(algorithm: str) -> bool:
    return ALGORITHMS[algorithm].family == "mixture"


def means_of(algorithm: str, est: Any) -> np.ndarray:
    """Component means (mixtures) or cluster centers (k-means), (n_components, n_features)."""
    return np.asarray(est.means_ if is_mixture(algorithm) else est.cluster_centers_)


def log_likelihood_of(est: Any, X: np.ndarray) -> np.ndarray:
    """``score_samples``: log p(x) per row, (n_samples,)."""
    return sklearn_compat.logsumexp(sklearn_compat.estimate_weighted_log_prob(est, X), axis=1)


def sample(est: Any, n_samples: int, random_state: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``est.sample(n)`` with ``random_state`` set as ``set_params`` would.

    The cached estimator is shared between threads, so a shallow copy carries the seed.
    """
    import copy

    est = copy.copy(est)
    if random_state is not None:
        est.random_state = random_state
    X, y = est.sample(n_samples)
    return X, y


def full_covariances(est: Any) -> np.ndarray:
    """Each component's covariance as a full (n_components, d, d) matrix, any covariance_type."""
    k, d = est.means_.shape
    cov = np.asarray(est.covariances_)
    kind = est.covariance_type
    if kind == "full":
        return cov
    if kind == "tied":
        return np.broadcast_to(cov, (k, d, d)).copy()
    if kind == "diag":
        return np.stack([np.diag(c) for c in cov])
    return np.stack([np.eye(d) * c for c in cov])
