"""Each private scikit-learn name the service relies on still does what we rely on.

One row per name in ``sklearn_compat.PRIVATE_NAMES`` (plus the one the client uses on
its own): each calls the name through ``service/domain/sklearn_compat.py`` on a tiny
model and compares it with sklearn's public API wherever there is an equivalent. A
failure names the symbol and the file to update. ``.ci/run`` runs this file against
the oldest and the newest scikit-learn pyproject.toml allows; raising the upper bound
there is safe once it passes.

Needs nothing but numpy, scipy, scikit-learn and the compat module: no fixtures from
conftest.py, so it also runs in a bare venv (``pytest --noconftest``).
"""

from __future__ import annotations

import copy
import functools
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import sklearn
from scipy.special import logsumexp as scipy_logsumexp
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from service.domain import sklearn_compat as compat

COMPAT = "service/domain/sklearn_compat.py"
CLIENT = "client/src/gmm_client/sklearn.py"
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@functools.cache
def _X() -> np.ndarray:
    X, _ = make_blobs(n_samples=60, centers=3, n_features=2, random_state=0)
    return np.asarray(X, dtype=np.float64)


@functools.cache
def _gmm(covariance_type: str = "full") -> GaussianMixture:
    return GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(_X())


@functools.cache
def _bgmm(prior_type: str) -> BayesianGaussianMixture:
    return BayesianGaussianMixture(
        n_components=3, weight_concentration_prior_type=prior_type, random_state=0
    ).fit(_X())


@functools.cache
def _kmeans() -> KMeans:
    return KMeans(3, n_init=1, algorithm="lloyd", random_state=0).fit(_X())


def _minibatch(**params: Any) -> MiniBatchKMeans:
    defaults: dict[str, Any] = {"batch_size": 16, "n_init": 1, "random_state": 0}
    return MiniBatchKMeans(3, **{**defaults, **params})


def _message_of(call: Callable[[], Any]) -> str:
    with pytest.raises(ValueError) as caught:
        call()
    return str(caught.value)


def _tracked(base: type, hooks: dict[str, Callable[..., Any]], **params: Any) -> Any:
    """``base(**params)`` as an instance of a subclass with ``hooks``, as
    ``service.domain.training.progress`` builds it."""
    return type(f"Tracked{base.__name__}", (base,), hooks)(**params)


# --- sklearn.mixture._gaussian_mixture ---------------------------------------------------


def check_weights() -> None:
    weights = np.array([0.2, 0.3, 0.5])
    np.testing.assert_array_equal(compat.check_weights(weights, 3), weights)
    bad = np.array([0.2, 0.2, 0.2])
    ours = _message_of(lambda: compat.check_weights(bad, 3))
    public = _message_of(lambda: GaussianMixture(3, weights_init=bad).fit(_X()))
    assert ours == public, (ours, public)


def check_means() -> None:
    means = _gmm().means_
    np.testing.assert_array_equal(compat.check_means(means, 3, 2), means)
    bad = np.zeros((2, 2))
    ours = _message_of(lambda: compat.check_means(bad, 3, 2))
    public = _message_of(lambda: GaussianMixture(3, means_init=bad).fit(_X()))
    assert ours == public, (ours, public)


def check_precisions() -> None:
    for kind in COVARIANCE_TYPES:
        precisions = _gmm(kind).precisions_
        np.testing.assert_array_equal(compat.check_precisions(precisions, kind, 3, 2), precisions)
    not_positive = np.array([np.eye(2), np.eye(2), -np.eye(2)])
    ours = _message_of(lambda: compat.check_precisions(not_positive, "full", 3, 2))
    public = _message_of(lambda: GaussianMixture(3, precisions_init=not_positive).fit(_X()))
    assert ours == public, (ours, public)


def compute_precision_cholesky() -> None:
    for kind in COVARIANCE_TYPES:
        gm = _gmm(kind)
        np.testing.assert_array_equal(
            compat.compute_precision_cholesky(gm.covariances_, kind),
            gm.precisions_cholesky_,
            err_msg=f"covariance_type={kind!r}: not the factors fit computed",
        )
    singular = np.zeros((3, 2, 2))
    message = _message_of(lambda: compat.compute_precision_cholesky(singular, "full"))
    assert "ill-defined empirical covariance" in message, message


def compute_precision_cholesky_from_precisions() -> None:
    for kind in COVARIANCE_TYPES:
        gm = _gmm(kind)
        np.testing.assert_allclose(
            compat.compute_precision_cholesky_from_precisions(gm.precisions_, kind),
            gm.precisions_cholesky_,
            rtol=1e-9,
            err_msg=f"covariance_type={kind!r}",
        )


# --- sklearn.utils -----------------------------------------------------------------------


def logsumexp() -> None:
    gm = _gmm()
    wlp = compat.estimate_weighted_log_prob(gm, _X())
    np.testing.assert_array_equal(compat.logsumexp(wlp, axis=1), gm.score_samples(_X()))
    np.testing.assert_allclose(compat.logsumexp(wlp, axis=1), scipy_logsumexp(wlp, axis=1))


def openmp_effective_n_threads() -> None:
    n_threads = compat.openmp_effective_n_threads()
    assert isinstance(n_threads, int) and n_threads >= 1, n_threads
    assert _kmeans()._n_threads == n_threads


# --- private methods of estimators -------------------------------------------------------


def validate_params() -> None:
    compat.validate_params(GaussianMixture(3))
    compat.validate_params(KMeans(3))
    for bad in (GaussianMixture(n_components=0), KMeans(3, tol=-1.0)):
        ours = _message_of(lambda bad=bad: compat.validate_params(bad))
        public = _message_of(lambda bad=bad: bad.fit(_X()))
        assert ours == public, (ours, public)


def check_mixture_parameters() -> None:
    no_rows = np.empty((0, 2))
    compat.check_mixture_parameters(GaussianMixture(3, means_init=_gmm().means_), no_rows)
    for bad in (
        GaussianMixture(3, weights_init=[0.2, 0.2, 0.2]),
        GaussianMixture(3, means_init=np.zeros((3, 5))),
    ):
        ours = _message_of(lambda bad=bad: compat.check_mixture_parameters(bad, no_rows))
        public = _message_of(lambda bad=bad: copy.deepcopy(bad).fit(_X()))
        assert ours == public, (ours, public)


def estimate_weighted_log_prob() -> None:
    gm, X = _gmm(), _X()
    wlp = compat.estimate_weighted_log_prob(gm, X)
    assert wlp.shape == (X.shape[0], 3)
    np.testing.assert_array_equal(wlp.argmax(axis=1), gm.predict(X))
    log_norm = compat.logsumexp(wlp, axis=1)
    with np.errstate(under="ignore"):
        np.testing.assert_array_equal(np.exp(wlp - log_norm[:, np.newaxis]), gm.predict_proba(X))
    # fit's closing E-step goes through the method, so an observer sees it on X itself.
    seen: list[tuple[Any, np.ndarray]] = []
    fresh = GaussianMixture(3, random_state=0)
    with compat.observed_weighted_log_prob(fresh, lambda data, out: seen.append((data, out))):
        fresh.fit(X)
    assert seen, "fit's E-steps did not go through _estimate_weighted_log_prob"
    np.testing.assert_array_equal(seen[-1][0], X, err_msg="the last E-step was not on X")
    np.testing.assert_array_equal(seen[-1][1], compat.estimate_weighted_log_prob(fresh, X))
    assert "_estimate_weighted_log_prob" not in vars(fresh)
    pickle.dumps(fresh)


def estimate_log_prob_resp() -> None:
    gm, X = _gmm(), _X()
    shell = GaussianMixture(3)  # what the out-of-core E-step builds: three arrays only
    shell.weights_, shell.means_ = gm.weights_, gm.means_
    shell.precisions_cholesky_ = gm.precisions_cholesky_
    log_prob_norm, log_resp = compat.estimate_log_prob_resp(shell, X)
    np.testing.assert_array_equal(log_prob_norm, gm.score_samples(X))
    np.testing.assert_array_equal(np.exp(log_resp), gm.predict_proba(X))


def set_mixture_parameters() -> None:
    X = _X()
    for kind in COVARIANCE_TYPES:
        gm = _gmm(kind)
        built = GaussianMixture(3, covariance_type=kind)
        params = (gm.weights_, gm.means_, gm.covariances_, gm.precisions_cholesky_)
        compat.set_mixture_parameters(built, params)
        built.n_features_in_ = 2
        np.testing.assert_array_equal(built.precisions_, gm.precisions_, err_msg=kind)
        np.testing.assert_array_equal(built.predict_proba(X), gm.predict_proba(X), err_msg=kind)
    for prior_type in ("dirichlet_process", "dirichlet_distribution"):
        bgm = _bgmm(prior_type)
        built_b = BayesianGaussianMixture(
            n_components=3, weight_concentration_prior_type=prior_type
        )
        compat.set_mixture_parameters(
            built_b,
            (
                bgm.weight_concentration_,
                bgm.mean_precision_,
                bgm.means_,
                bgm.degrees_of_freedom_,
                bgm.covariances_,
                bgm.precisions_cholesky_,
            ),
        )
        built_b.n_features_in_ = 2
        np.testing.assert_array_equal(built_b.weights_, bgm.weights_, err_msg=prior_type)
        np.testing.assert_array_equal(
            built_b.predict_proba(X), bgm.predict_proba(X), err_msg=prior_type
        )


def _mixture_calls(base: type, **params: Any) -> tuple[Any, dict[str, list[Any]]]:
    """A fit of ``base(**params)`` with the progress hooks, and what they saw."""
    calls: dict[str, list[Any]] = {"init": [], "bound": [], "iter": [], "change": [], "self": []}

    def init_begun(est: Any, n_init: int) -> None:
        calls["init"].append(n_init)
        calls["self"].append(est)

    hooks = compat.mixture_progress_hooks(
        base,
        init_begun=init_begun,
        lower_bound=lambda est, bound: calls["bound"].append(float(bound)),
        iteration_done=lambda est, n_iter, change: (
            calls["iter"].append(n_iter),
            calls["change"].append(float(np.squeeze(change))),
        ),
    )
    tracked = _tracked(base, hooks, **params).fit(_X())
    plain = base(**params).fit(_X())
    np.testing.assert_array_equal(tracked.means_, plain.means_, err_msg="hooks changed the fit")
    assert all(est is tracked for est in calls["self"])
    return tracked, calls


def print_verbose_msg_init_beg() -> None:
    _, calls = _mixture_calls(GaussianMixture, n_components=3, n_init=3, random_state=0)
    assert calls["init"] == [0, 1, 2], calls["init"]


def print_verbose_msg_iter_end() -> None:
    gm, calls = _mixture_calls(GaussianMixture, n_components=3, n_init=2, random_state=0)
    # 1, 2, ..., n for each init, in order; the best init's n is n_iter_.
    runs = np.split(np.array(calls["iter"]), np.flatnonzero(np.diff(calls["iter"]) < 1) + 1)
    assert len(runs) == 2 and all(list(r) == list(range(1, len(r) + 1)) for r in runs), runs
    assert gm.n_iter_ in [len(r) for r in runs]
    # The change it passes is the lower bound's since the last iteration (what tol meets).
    bounds, changes = np.array(calls["bound"]), np.array(calls["change"])
    steps = np.flatnonzero(np.array(calls["iter"]) > 1)
    np.testing.assert_allclose(changes[steps], bounds[steps] - bounds[steps - 1])


def compute_lower_bound() -> None:
    for base, params in (
        (GaussianMixture, {"n_components": 3}),
        (BayesianGaussianMixture, {"n_components": 3}),
    ):
        est, calls = _mixture_calls(base, n_init=2, random_state=0, **params)
        assert len(calls["bound"]) == len(calls["iter"]), base.__name__
        assert float(est.lower_bound_) in calls["bound"], base.__name__


def n_parameters() -> None:
    X = _X()
    for kind in COVARIANCE_TYPES:
        gm = _gmm(kind)
        n, score = X.shape[0], gm.score(X)
        assert -2 * score * n + compat.n_parameters(gm) * np.log(n) == gm.bic(X), kind
        assert -2 * score * n + 2 * compat.n_parameters(gm) == gm.aic(X), kind


def _kmeans_inits(**params: Any) -> tuple[KMeans, list[int]]:
    seen: list[int] = []
    hooks = compat.kmeans_progress_hooks(
        KMeans, before_init=lambda est: seen.append(compat.resolved_n_init(est, -1))
    )
    tracked = _tracked(KMeans, hooks, n_clusters=3, random_state=0, **params).fit(_X())
    plain = KMeans(n_clusters=3, random_state=0, **params).fit(_X())
    np.testing.assert_array_equal(tracked.cluster_centers_, plain.cluster_centers_)
    return tracked, seen


def init_centroids() -> None:
    _, seen = _kmeans_inits(n_init=3)
    assert len(seen) == 3, seen


def kmeans_n_init() -> None:
    for params, resolved in (
        ({"n_init": 3}, 3),
        ({"n_init": "auto", "init": "k-means++"}, 1),
        ({"n_init": "auto", "init": "random"}, 10),
    ):
        km, seen = _kmeans_inits(**params)
        assert seen == [resolved] * resolved, (params, seen)
        assert compat.resolved_n_init(km, -1) == resolved, params
    assert compat.resolved_n_init(KMeans(3), 7) == 7  # before fit: the default


def _built_kmeans(**state: Any) -> KMeans:
    """A KMeans built from a fitted one's numbers, as imports and out-of-core fits do."""
    fitted = _kmeans()
    built = KMeans(3, n_init=1, algorithm="lloyd")
    built.cluster_centers_ = fitted.cluster_centers_
    built.n_features_in_ = 2
    compat.set_centroid_fitted_state(built, 3)
    if state:
        compat.set_kmeans_fit_state(built, **state)
    return built


def kmeans_tol() -> None:
    fitted, X = _kmeans(), _X()
    np.testing.assert_allclose(fitted._tol, np.mean(np.var(X, axis=0)) * fitted.tol, rtol=1e-12)
    built = _built_kmeans(tol=fitted._tol, n_init=1, algorithm="lloyd")
    assert built._tol == fitted._tol


def kmeans_algorithm() -> None:
    fitted = _kmeans()
    assert fitted._algorithm == "lloyd", fitted._algorithm
    built = _built_kmeans(tol=fitted._tol, n_init=1, algorithm="lloyd")
    private = {k: v for k, v in vars(fitted).items() if k in ("_tol", "_n_init", "_algorithm")}
    assert private == {k: getattr(built, k) for k in private}, private


def kmeans_n_threads() -> None:
    fitted, X = _kmeans(), _X()
    assert fitted._n_threads == compat.openmp_effective_n_threads()
    built = _built_kmeans()
    np.testing.assert_array_equal(built.predict(X), fitted.predict(X))
    np.testing.assert_array_equal(built.transform(X), fitted.transform(X))


def kmeans_n_features_out() -> None:
    fitted = _kmeans()
    assert fitted._n_features_out == 3
    assert list(_built_kmeans().get_feature_names_out()) == list(fitted.get_feature_names_out())


def mini_batch_convergence() -> None:
    seen: list[tuple[int, int]] = []
    hooks = compat.minibatch_progress_hooks(
        MiniBatchKMeans, step_done=lambda est, step, n_steps: seen.append((step, n_steps))
    )
    params = {"n_clusters": 3, "batch_size": 16, "n_init": 1, "max_iter": 5, "random_state": 0}
    tracked = _tracked(MiniBatchKMeans, hooks, **params).fit(_X())
    plain = MiniBatchKMeans(**params).fit(_X())
    np.testing.assert_array_equal(tracked.cluster_centers_, plain.cluster_centers_)
    assert [step for step, _ in seen] == list(range(tracked.n_steps_)), seen
    assert {n_steps for _, n_steps in seen} == {(5 * 60) // 16}, seen


def minibatch_counts() -> None:
    X = _X()
    fitted = _minibatch(reassignment_ratio=0.0).fit(X)
    assert fitted._counts.shape == (3,), fitted._counts
    perm = np.array([2, 0, 1])
    permuted = copy.deepcopy(fitted)
    permuted.cluster_centers_ = permuted.cluster_centers_[perm]
    compat.permute_minibatch_counts(permuted, perm)
    np.testing.assert_array_equal(permuted._counts, fitted._counts[perm])
    # partial_fit continues from the counts: permuted, it continues identically.
    fitted.partial_fit(X[:16])
    permuted.partial_fit(X[:16])
    np.testing.assert_allclose(permuted.cluster_centers_, fitted.cluster_centers_[perm])
    compat.permute_minibatch_counts(_built_kmeans(), perm)  # no counts: nothing to do


def check_sample_weight() -> None:
    """The client's own use (it cannot import the service)."""
    from sklearn.utils.validation import _check_sample_weight

    X = _X()
    np.testing.assert_array_equal(_check_sample_weight(None, X, dtype=np.float64), np.ones(60))
    weights = _check_sample_weight(list(range(60)), X, dtype=np.float64)
    assert weights.dtype == np.float64 and weights.shape == (60,)
    with pytest.raises(ValueError, match=r"sample_weight\.shape"):
        _check_sample_weight(np.ones(3), X, dtype=np.float64)


def param_interval() -> None:
    """The client's constraint of the remote estimators' ``ttl_seconds``."""
    from numbers import Integral

    from sklearn.utils._param_validation import Interval

    interval = Interval(Integral, 1, None, closed="left")
    assert interval.is_satisfied_by(1) and interval.is_satisfied_by(86_400)
    assert not interval.is_satisfied_by(0) and not interval.is_satisfied_by(1.5)


@dataclass(frozen=True)
class Case:
    name: str  # as in sklearn_compat.PRIVATE_NAMES
    check: Callable[[], None]
    update: str = COMPAT


#: The client (a distribution of its own) calls these too; it is named in the hint.
_ALSO_CLIENT = f"{COMPAT} and {CLIENT}"

CASES = [
    Case("sklearn.mixture._gaussian_mixture._check_weights", check_weights),
    Case("sklearn.mixture._gaussian_mixture._check_means", check_means),
    Case("sklearn.mixture._gaussian_mixture._check_precisions", check_precisions),
    Case(
        "sklearn.mixture._gaussian_mixture._compute_precision_cholesky",
        compute_precision_cholesky,
    ),
    Case(
        "sklearn.mixture._gaussian_mixture._compute_precision_cholesky_from_precisions",
        compute_precision_cholesky_from_precisions,
    ),
    Case("sklearn.utils._array_api._logsumexp", logsumexp),
    Case("sklearn.utils._openmp_helpers._openmp_effective_n_threads", openmp_effective_n_threads),
    Case("BaseEstimator._validate_params", validate_params, _ALSO_CLIENT),
    Case("BaseMixture._check_parameters", check_mixture_parameters, _ALSO_CLIENT),
    Case("BaseMixture._estimate_weighted_log_prob", estimate_weighted_log_prob),
    Case("BaseMixture._estimate_log_prob_resp", estimate_log_prob_resp),
    Case("BaseMixture._set_parameters", set_mixture_parameters),
    Case("BaseMixture._print_verbose_msg_init_beg", print_verbose_msg_init_beg),
    Case("BaseMixture._print_verbose_msg_iter_end", print_verbose_msg_iter_end),
    Case("BaseMixture._compute_lower_bound", compute_lower_bound),
    Case("GaussianMixture._n_parameters", n_parameters),
    Case("KMeans._init_centroids", init_centroids),
    Case("KMeans._n_init", kmeans_n_init),
    Case("KMeans._tol", kmeans_tol),
    Case("KMeans._algorithm", kmeans_algorithm),
    Case("KMeans._n_threads", kmeans_n_threads),
    Case("KMeans._n_features_out", kmeans_n_features_out, _ALSO_CLIENT),
    Case("MiniBatchKMeans._mini_batch_convergence", mini_batch_convergence),
    Case("MiniBatchKMeans._counts", minibatch_counts),
    Case("sklearn.utils.validation._check_sample_weight", check_sample_weight, CLIENT),
    Case("sklearn.utils._param_validation.Interval", param_interval, CLIENT),
]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_private_name_still_does_what_we_rely_on(case: Case) -> None:
    try:
        case.check()
    except Exception as exc:
        pytest.fail(
            f"scikit-learn {sklearn.__version__} removed or changed {case.name} "
            f"({type(exc).__name__}: {exc}); update {case.update}",
            pytrace=False,
        )


def test_every_private_name_has_a_case() -> None:
    """A name added to sklearn_compat without a row here would go unchecked."""
    ours = {case.name for case in CASES if case.update != CLIENT}
    assert ours == set(compat.PRIVATE_NAMES), ours ^ set(compat.PRIVATE_NAMES)
