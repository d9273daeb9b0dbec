"""The one module that touches scikit-learn's private names.

Giving sklearn's exact numbers sometimes means calling what sklearn calls: its
initial-value checks, its Cholesky factors, its E-step, the hooks its fit loops call.
None of that is public, so none of it is promised to survive a release. Keeping every
such use here means that a scikit-learn upgrade breaks one file, and that
``tests/domain/test_sklearn_compat.py`` (one test per name in ``PRIVATE_NAMES``, run by
``.ci/run`` against the oldest and the newest scikit-learn pyproject.toml allows)
says which name moved before anything else does. ``tests/test_layering.py`` checks
that no other module under ``service/`` uses one.

Every name below exists, with the signature used here, in scikit-learn 1.5 (the floor
in pyproject.toml) through 1.9; where a release changed a signature the wrapper says
how both are called.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from sklearn.mixture import _gaussian_mixture as _gm
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

try:  # scikit-learn >= 1.8: the array-API port its mixtures' score_samples uses
    from sklearn.utils._array_api import _logsumexp
except ImportError:  # 1.5 to 1.7: scipy's, which their mixtures use
    from scipy.special import logsumexp as _logsumexp

#: Every private scikit-learn name the service relies on, as tested one by one in
#: tests/domain/test_sklearn_compat.py.
PRIVATE_NAMES: tuple[str, ...] = (
    "sklearn.mixture._gaussian_mixture._check_weights",
    "sklearn.mixture._gaussian_mixture._check_means",
    "sklearn.mixture._gaussian_mixture._check_precisions",
    "sklearn.mixture._gaussian_mixture._compute_precision_cholesky",
    "sklearn.mixture._gaussian_mixture._compute_precision_cholesky_from_precisions",
    "sklearn.utils._array_api._logsumexp",
    "sklearn.utils._openmp_helpers._openmp_effective_n_threads",
    "BaseEstimator._validate_params",
    "BaseMixture._check_parameters",
    "BaseMixture._estimate_weighted_log_prob",
    "BaseMixture._estimate_log_prob_resp",
    "BaseMixture._set_parameters",
    "BaseMixture._print_verbose_msg_init_beg",
    "BaseMixture._print_verbose_msg_iter_end",
    "BaseMixture._compute_lower_bound",
    "GaussianMixture._n_parameters",
    "KMeans._init_centroids",
    "KMeans._n_init",
    "KMeans._tol",
    "KMeans._algorithm",
    "KMeans._n_threads",
    "KMeans._n_features_out",
    "MiniBatchKMeans._mini_batch_convergence",
    "MiniBatchKMeans._counts",
)


def _xp_kwargs(function: Callable[..., Any]) -> dict[str, Any]:
    """scikit-learn 1.8 added an array-namespace argument ``xp`` to its mixtures'
    helpers, and its checks fail without it; 1.5 to 1.7 have no such argument."""
    return {"xp": np} if "xp" in inspect.signature(function).parameters else {}


_CHECK_WEIGHTS_XP = _xp_kwargs(_gm._check_weights)
_CHECK_MEANS_XP = _xp_kwargs(_gm._check_means)
_CHECK_PRECISIONS_XP = _xp_kwargs(_gm._check_precisions)
_FROM_PRECISIONS_XP = _xp_kwargs(_gm._compute_precision_cholesky_from_precisions)


# --- sklearn.mixture._gaussian_mixture: initial values and Cholesky factors -----------


def check_weights(weights: np.ndarray, n_components: int) -> np.ndarray:
    """``_gaussian_mixture._check_weights`` (1.5+; ``xp`` from 1.8).

    Run before the fit so that a bad ``weights_init`` is refused with sklearn's own
    message but naming the request field, not after the data were parsed and sent.
    """
    return np.asarray(_gm._check_weights(weights, n_components, **_CHECK_WEIGHTS_XP))


def check_means(means: np.ndarray, n_components: int, n_features: int) -> np.ndarray:
    """``_gaussian_mixture._check_means`` (1.5+; ``xp`` from 1.8): ``means_init`` refused
    up front with sklearn's message, as ``check_weights``."""
    return np.asarray(_gm._check_means(means, n_components, n_features, **_CHECK_MEANS_XP))


def check_precisions(
    precisions: np.ndarray, covariance_type: str, n_components: int, n_features: int
) -> np.ndarray:
    """``_gaussian_mixture._check_precisions`` (1.5+; ``xp`` from 1.8): the symmetry and
    positive-definiteness sklearn demands of ``precisions_init``, in its words, up front."""
    return np.asarray(
        _gm._check_precisions(
            precisions, covariance_type, n_components, n_features, **_CHECK_PRECISIONS_XP
        )
    )


def compute_precision_cholesky(covariances: np.ndarray, covariance_type: str) -> np.ndarray:
    """``_gaussian_mixture._compute_precision_cholesky`` (1.5+).

    The out-of-core M-step must factor its covariances exactly as sklearn's does, and
    raise sklearn's "ill-defined empirical covariance" error where sklearn would.
    Called without ``xp`` in every release, as sklearn's own M-step on numpy input is.
    """
    return np.asarray(_gm._compute_precision_cholesky(covariances, covariance_type))


def compute_precision_cholesky_from_precisions(
    precisions: np.ndarray, covariance_type: str
) -> np.ndarray:
    """``_gaussian_mixture._compute_precision_cholesky_from_precisions`` (1.5+; ``xp``
    from 1.8): the out-of-core fit starts from ``precisions_init`` with the very factors
    sklearn's ``_initialize`` would compute from it."""
    return np.asarray(
        _gm._compute_precision_cholesky_from_precisions(
            precisions, covariance_type, **_FROM_PRECISIONS_XP
        )
    )


# --- sklearn.utils private helpers ----------------------------------------------------


def logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    """The logsumexp of the installed mixtures' ``score_samples``: sklearn's
    ``utils._array_api._logsumexp`` from 1.8, scipy's before (1.5 to 1.7 call scipy).

    Labels, probabilities and log-likelihoods are derived from one weighted-log-prob
    array; to equal ``score_samples`` bit for bit they must reduce it with the same
    function.
    """
    return np.asarray(_logsumexp(values, axis=axis))


def openmp_effective_n_threads() -> int:
    """``utils._openmp_helpers._openmp_effective_n_threads`` (1.5+): the thread count a
    fitted k-means keeps as ``_n_threads``, which its ``predict`` reads; estimators
    built from numbers (imports, out-of-core fits) need it set as ``fit`` sets it."""
    return int(_openmp_effective_n_threads())


# --- private methods of estimators ----------------------------------------------------


def validate_params(estimator: Any) -> None:
    """``BaseEstimator._validate_params`` (1.2+): the constructor-parameter checks ``fit``
    starts with, for fits that never call sklearn's ``fit`` (out-of-core)."""
    estimator._validate_params()


def check_mixture_parameters(estimator: Any, X: np.ndarray) -> None:
    """``BaseMixture._check_parameters(X)`` (1.5+; ``xp`` from 1.8): sklearn's checks of a
    mixture's initial values against the data's width, for out-of-core fits, which
    never call sklearn's ``fit``. ``X`` may have no rows; only its width is read."""
    check = estimator._check_parameters
    check(X, **_xp_kwargs(check))


def estimate_weighted_log_prob(estimator: Any, X: np.ndarray) -> np.ndarray:
    """``BaseMixture._estimate_weighted_log_prob(X)`` (1.5+): log(weight) + log N(x | k),
    (n_samples, n_components), what ``predict``, ``predict_proba`` and
    ``score_samples`` each compute. The service needs several of them at once, so it
    computes this once and derives them all, as sklearn does, to the last bit."""
    return np.asarray(estimator._estimate_weighted_log_prob(X))


@contextlib.contextmanager
def observed_weighted_log_prob(
    estimator: Any, observer: Callable[[Any, np.ndarray], None]
) -> Iterator[None]:
    """Within the block, every ``_estimate_weighted_log_prob(data)`` the estimator makes
    (1.5+) is also handed to ``observer(data, result)``.

    A mixture's ``fit`` ends with an E-step under its final parameters; seeing it spares
    computing the same array again. An instance attribute shadows the method and is
    removed after, so the estimator pickles as an ordinary one.
    """
    name = "_estimate_weighted_log_prob"
    original = getattr(estimator, name)

    def observed(data: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(data, *args, **kwargs)
        observer(data, out)
        return out

    setattr(estimator, name, observed)
    try:
        yield
    finally:
        estimator.__dict__.pop(name, None)


def estimate_log_prob_resp(estimator: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``BaseMixture._estimate_log_prob_resp(X)`` (1.5+): sklearn's own E-step, log p(x)
    and log responsibilities, run by the out-of-core fit on each chunk so that its
    numbers are sklearn's."""
    log_prob_norm, log_resp = estimator._estimate_log_prob_resp(X)
    return np.asarray(log_prob_norm), np.asarray(log_resp)


def set_mixture_parameters(estimator: Any, params: tuple[Any, ...]) -> None:
    """``BaseMixture._set_parameters(params)`` (1.5+): how ``fit`` installs its final
    parameters and derives ``precisions_`` (and a Bayesian mixture's ``weights_``) from
    them. Estimators built from numbers (imports, out-of-core fits) must get them the
    same way to predict as a fitted one does. ``params`` is ``_get_parameters()``'s
    tuple: GaussianMixture (weights, means, covariances, precisions_cholesky);
    BayesianGaussianMixture (weight_concentration, mean_precision, means,
    degrees_of_freedom, covariances, precisions_cholesky)."""
    estimator._set_parameters(params)


def n_parameters(estimator: Any) -> int:
    """``GaussianMixture._n_parameters()`` (1.5+): the free-parameter count in sklearn's
    ``bic`` and ``aic``, which the service evaluates on log-likelihoods it already has
    instead of letting each recompute ``score(X)``."""
    return int(estimator._n_parameters())


# --- fitted state that sklearn's fit sets and later methods read -----------------------


def set_centroid_fitted_state(estimator: Any, n_clusters: int) -> None:
    """``_n_features_out`` (read by ``get_feature_names_out``, 1.5+) and ``_n_threads``
    (read by ``predict``, ``transform``, ``score``, 1.5+), which ``fit`` sets on
    KMeans and MiniBatchKMeans, for estimators built from numbers instead."""
    estimator._n_features_out = n_clusters
    estimator._n_threads = openmp_effective_n_threads()


def set_kmeans_fit_state(estimator: Any, *, tol: float, n_init: int, algorithm: str) -> None:
    """``KMeans._tol`` (tol scaled by the data's mean variance), ``_n_init`` (``n_init``
    resolved) and ``_algorithm`` (1.5+): what ``fit`` leaves besides the public
    attributes, so that an out-of-core k-means is indistinguishable from a fitted one."""
    estimator._tol = tol
    estimator._n_init = n_init
    estimator._algorithm = algorithm


def resolved_n_init(estimator: Any, default: int) -> int:
    """``KMeans._n_init`` (1.5+): ``n_init`` with "auto" resolved, set inside ``fit``
    before the first init; ``default`` until then. The number of inits a fit's progress
    counts."""
    return int(getattr(estimator, "_n_init", default))


def permute_minibatch_counts(estimator: Any, perm: np.ndarray) -> None:
    """``MiniBatchKMeans._counts`` (1.5+), the per-centre counts that ``partial_fit``
    continues from, reordered with the centres so that new centre i is old
    ``perm[i]``; nothing when the estimator has none (KMeans, an imported model)."""
    counts = getattr(estimator, "_counts", None)
    if counts is not None:
        estimator._counts = counts[perm]


# --- hooks of sklearn's fit loops ------------------------------------------------------


def mixture_progress_hooks(
    base: type,
    *,
    init_begun: Callable[[Any, int], None],
    lower_bound: Callable[[Any, Any], None],
    iteration_done: Callable[[Any, int, float], None],
) -> dict[str, Callable[..., Any]]:
    """Methods for a subclass of the mixture ``base`` that see its fit advance.

    ``BaseMixture.fit_predict`` (1.5+) calls ``_print_verbose_msg_init_beg(init)`` before
    each initialisation, ``_compute_lower_bound(...)`` and then
    ``_print_verbose_msg_iter_end(n_iter, diff_ll)`` in each EM iteration. Overriding
    just those, each calling sklearn's first, counts a fit and can stop it (a callback
    raising) without changing a number. Callbacks get the estimator first.
    """

    def _print_verbose_msg_init_beg(self: Any, n_init: int) -> None:
        base._print_verbose_msg_init_beg(self, n_init)
        init_begun(self, n_init)

    def _compute_lower_bound(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = base._compute_lower_bound(self, *args, **kwargs)
        lower_bound(self, bound)
        return bound

    def _print_verbose_msg_iter_end(self: Any, n_iter: int, diff_ll: float) -> None:
        base._print_verbose_msg_iter_end(self, n_iter, diff_ll)
        iteration_done(self, n_iter, diff_ll)

    return {
        "_print_verbose_msg_init_beg": _print_verbose_msg_init_beg,
        "_compute_lower_bound": _compute_lower_bound,
        "_print_verbose_msg_iter_end": _print_verbose_msg_iter_end,
    }


def kmeans_progress_hooks(
    base: type, *, before_init: Callable[[Any], None]
) -> dict[str, Callable[..., Any]]:
    """Methods for a subclass of KMeans: ``before_init(estimator)`` runs before each of
    the ``_init_centroids`` calls ``fit`` makes, one per init (1.5+); its Lloyd or Elkan
    iterations run in compiled code, so an init is the finest step there is."""

    def _init_centroids(self: Any, *args: Any, **kwargs: Any) -> Any:
        before_init(self)
        return base._init_centroids(self, *args, **kwargs)

    return {"_init_centroids": _init_centroids}


def minibatch_progress_hooks(
    base: type, *, step_done: Callable[[Any, int, int], None]
) -> dict[str, Callable[..., Any]]:
    """Methods for a subclass of MiniBatchKMeans: ``step_done(estimator, step, n_steps)``
    after each ``_mini_batch_convergence(step, n_steps, ...)`` call, one per mini-batch
    step of ``fit`` (1.5+), the only place its fit loop calls back into Python."""

    def _mini_batch_convergence(self: Any, step: int, n_steps: int, *args: Any) -> Any:
        stop = base._mini_batch_convergence(self, step, n_steps, *args)
        step_done(self, step, n_steps)
        return stop

    return {"_mini_batch_convergence": _mini_batch_convergence}
