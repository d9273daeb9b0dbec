"""scikit-learn estimators that fit and predict on gmm-service.

``RemoteGaussianMixture``, ``RemoteBayesianGaussianMixture``, ``RemoteKMeans`` and
``RemoteMiniBatchKMeans`` take exactly the constructor parameters of the scikit-learn
class they stand for (same names, same defaults), plus ``base_url`` and ``api_key``
(defaults: ``$GMM_URL`` and ``$GMM_API_KEY``), and ``keep`` and ``ttl_seconds`` (see
below). They are real estimators, so
``clone``, ``get_params``/``set_params``, ``Pipeline`` and ``GridSearchCV`` work;
``fit`` stores a model on the service (``model_id_`` names it) and every prediction
asks the service. The fitted attributes (``means_``, ``covariances_``...) are the
service's, which are scikit-learn's to the last bit::

    from gmm_client.sklearn import RemoteGaussianMixture
    gm = RemoteGaussianMixture(n_components=4, random_state=0).fit(X)
    gm.predict(X), gm.bic(X)

Models do not pile up on the service. A model stored by ``fit`` is deleted by the
service ``ttl_seconds`` after it was stored (default 86,400: a day;
``model_expires_at_`` says when), so the hundreds of fits of a ``GridSearchCV`` leave
nothing behind, and a refit deletes the model it replaces at once. ``keep=True``
stores models without an expiry, and a refit then leaves the model it replaces
(``Client().delete_model(model_id_)`` deletes one). An estimator that is to be
pickled and used after a day wants ``keep=True``. Copies of a fitted estimator
(``pickle``, ``copy.deepcopy``; not ``clone``, which is unfitted) share its model: a
refit of one deletes it for the others too, unless it was kept.

What cannot travel over HTTP, and what is done instead:

- ``random_state`` as a ``RandomState`` instance: an int is drawn from it for each fit
  (and each ``sample``), so repeated fits differ as they would in-process, and the
  instance advances; an int or None travels as is.
- sparse ``X`` is made dense before it is sent (the service fits dense arrays).
- ``verbose``, ``verbose_interval`` and ``copy_x`` change nothing the service returns
  and are not sent; ``warm_start=True`` on a fitted ``RemoteGaussianMixture`` sends
  the fitted weights, means and precisions as the new fit's initial values (the
  service keeps no in-process state); ``RemoteBayesianGaussianMixture`` refits.
- a callable ``init`` (k-means) cannot be sent: ``fit`` raises ``ValueError``.
- ``sample_weight`` of a k-means ``fit`` travels with the request (the service fits
  ``fit(X, sample_weight=...)``); ``score(X, sample_weight)`` weighs the squared
  distances the service answers, here (sklearn's ``score`` is that weighted sum).
  Weights are checked locally as sklearn checks them; negative weights, which sklearn
  takes but which make the objective unbounded, are refused by the service.

Input is checked locally, as scikit-learn checks it (``validate_data``), so a NaN or
a wrong number of features fails with scikit-learn's message before any request.
Parameter constraints are scikit-learn's own table. A 422 or 413 problem of the
service becomes ``ValueError`` with the service's detail as its message (the
``ProblemError`` is kept as ``__cause__``); the warnings a fit raised on the service
(``ConvergenceWarning``...) are raised again locally with the same category.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import warnings
import weakref
from collections.abc import Iterator
from numbers import Integral
from typing import Any, ClassVar

import httpx
import numpy as np
import scipy.sparse as sp
import sklearn.exceptions
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    DensityMixin,
    TransformerMixin,
)
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from gmm_client.client import Client
from gmm_client.errors import InvalidInput, NotFound, PayloadTooLarge, ProblemError

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "RemoteBayesianGaussianMixture",
    "RemoteGaussianMixture",
    "RemoteKMeans",
    "RemoteMiniBatchKMeans",
]

#: How long a model stored by ``fit`` lives on the service unless ``keep=True``: a day
#: covers an interactive session or a long search, and then it is gone by itself.
DEFAULT_TTL_SECONDS = 86_400

#: The parameters every remote estimator adds to scikit-learn's own.
_CONNECTION_CONSTRAINTS: dict[str, list[Any]] = {
    "base_url": [str, None],
    "api_key": [str, None],
    "keep": ["boolean"],
    "ttl_seconds": [Interval(Integral, 1, None, closed="left")],
}


def _seed(random_state: Any) -> int | None:
    """What ``random_state`` becomes on the wire: a ``RandomState`` cannot travel, so
    it gives an int (advancing it, as an in-process fit would)."""
    if random_state is None:
        return None
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    return int(random_state)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _warning_category(name: str) -> type[Warning]:
    """The class a service warning named ``name`` stands for (sklearn's, then Python's)."""
    for namespace in (sklearn.exceptions, builtins):
        category = getattr(namespace, name, None)
        if isinstance(category, type) and issubclass(category, Warning):
            return category
    return UserWarning


@contextlib.contextmanager
def _as_sklearn_errors() -> Iterator[None]:
    """Problems scikit-learn would have raised as ValueError become ValueError."""
    try:
        yield
    except (InvalidInput, PayloadTooLarge) as exc:
        raise ValueError(_problem_message(exc)) from exc


def _problem_message(exc: ProblemError) -> str:
    messages = [str(error.get("msg", "")) for error in exc.errors if error.get("msg")]
    detail = exc.detail
    if messages and (not detail or all(m not in detail for m in messages)):
        return "\n".join([detail, *messages] if detail else messages)
    return detail or str(exc)


class _RemoteEstimator(BaseEstimator):
    """Connection, pickling and the fit/ask cycle that every remote estimator shares."""

    #: The service's algorithm name.
    _algorithm: ClassVar[str]
    #: Constructor parameters the service takes, by the same names.
    _service_params: ClassVar[tuple[str, ...]]
    #: The scikit-learn class this one stands for.
    _local: ClassVar[type]

    # -- connection ---------------------------------------------------------------
    def _client(self) -> Client:
        """A client made on first use and dropped when pickled: a live connection
        belongs to one process, the estimator may travel to others (joblib, pickle)."""
        client: Client | None = self.__dict__.get("_connection")
        url = self.base_url or os.environ.get("GMM_URL")
        if client is None or self.__dict__.get("_connection_for") != (url, self.api_key):
            if client is not None:
                client.close()
            client = Client(url, api_key=self.api_key, timeout=600)
            # Closed with the estimator: an open socket left to the garbage collector
            # is a ResourceWarning (an error under strict warning filters).
            weakref.finalize(self, client.close)
            self.__dict__["_connection"] = client
            self.__dict__["_connection_for"] = (url, self.api_key)
        return client

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_connection", None)
        state.pop("_connection_for", None)
        return state

    def __sklearn_is_fitted__(self) -> bool:
        return "model_id_" in self.__dict__

    def _check_fitted(self) -> None:
        # sklearn's message, naming the class this one stands for: code written
        # against sklearn matches "This GaussianMixture instance is not fitted yet".
        check_is_fitted(
            self,
            msg=(
                f"This {self._local.__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            ),
        )

    # -- fitting ------------------------------------------------------------------
    def _wire_params(self) -> dict[str, Any]:
        params = {name: _jsonable(getattr(self, name)) for name in self._service_params}
        params["random_state"] = _seed(self.random_state)
        return params

    def _fit_remote(
        self, X: np.ndarray, params: dict[str, Any], extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Store a model fitted on ``X`` (n_samples, n_features); a model this
        estimator had before, unless it was kept, is deleted once the new one exists."""
        ttl = None if self.keep else int(self.ttl_seconds)
        with _as_sklearn_errors():
            resource = self._client().create_model(
                self._algorithm, X, params, include=["labels"], ttl_seconds=ttl, extra=extra
            )
        for item in resource.get("warnings") or []:
            warnings.warn(item["message"], _warning_category(item["category"]), stacklevel=3)
        replaced = self.__dict__.get("model_id_")
        replaced_expires = self.__dict__.get("model_expires_at_")
        self.model_id_ = resource["id"]
        self.model_expires_at_ = resource.get("expires_at")
        if replaced is not None and replaced != self.model_id_ and replaced_expires is not None:
            self._delete_replaced(replaced, replaced_expires)
        return resource

    def _delete_replaced(self, model_id: str, expires_at: str) -> None:
        """Delete the model a refit replaced: nothing names it any more, so it would
        only wait for its expiry. Failing to is no reason to fail the fit that
        succeeded: the model still goes at ``expires_at``."""
        try:
            self._client().delete_model(model_id)
        except NotFound:
            pass  # expired, or deleted by someone else, already
        except (ProblemError, httpx.HTTPError) as exc:
            warnings.warn(
                f"The model {model_id} this fit replaced could not be deleted ({exc}); "
                f"the service deletes it at {expires_at}.",
                UserWarning,
                stacklevel=4,
            )

    @contextlib.contextmanager
    def _asking(self) -> Iterator[None]:
        """Around a call on the fitted model: sklearn's errors, and a 404 that says the
        model expired when it was stored to."""
        try:
            with _as_sklearn_errors():
                yield
        except NotFound as exc:
            expires_at = self.__dict__.get("model_expires_at_")
            if expires_at is None:
                raise
            problem = {
                **exc.problem,
                "detail": (
                    f"{exc.detail} The model was stored to be deleted at {expires_at} "
                    "(ttl_seconds); fit again, with keep=True for a model that stays."
                ),
            }
            raise NotFound(problem, exc.status, method=exc.method, url=exc.url) from exc

    def _points(self, X: Any) -> np.ndarray:
        """``X`` checked as scikit-learn checks it at predict time, dense float64."""
        self._check_fitted()
        X = validate_data(self, X, reset=False, accept_sparse=True, dtype=[np.float64])
        return _dense(X)


def _dense(X: Any) -> np.ndarray:
    if sp.issparse(X):
        X = X.toarray()
    return np.ascontiguousarray(X, dtype=np.float64)


class _RemoteMixture(DensityMixin, _RemoteEstimator):
    """What GaussianMixture and BayesianGaussianMixture share: EM on the service."""

    _resource: dict[str, Any]

    def fit(self, X: Any, y: Any = None) -> _RemoteMixture:
        """Fit on the service; ``X`` is (n_samples, n_features). ``y`` is ignored."""
        self.fit_predict(X, y)
        return self

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit, and the labels of ``X`` under the final parameters, (n_samples,)."""
        self._validate_params()
        X = _dense(
            validate_data(self, X, accept_sparse=True, dtype=[np.float64], ensure_min_samples=2)
        )
        resource = self._fit_remote(X, self._fit_params())
        self._set_fitted(resource, X)
        return np.asarray(resource["labels"], dtype=np.int64)

    def _fit_params(self) -> dict[str, Any]:
        return self._wire_params()

    def _set_fitted(self, resource: dict[str, Any], X: np.ndarray) -> None:
        with self._asking():
            export = self._client().export_model(resource["id"])
        self.weights_ = np.asarray(resource["weights"], dtype=np.float64)
        self.means_ = np.asarray(resource["means"], dtype=np.float64)
        self.covariances_ = np.asarray(resource["covariances"], dtype=np.float64)
        self.precisions_ = np.asarray(resource["precisions"], dtype=np.float64)
        self.precisions_cholesky_ = np.asarray(export["precisions_cholesky"], dtype=np.float64)
        self.converged_ = bool(resource["converged"])
        self.n_iter_ = int(resource["n_iter"])
        bound = resource["lower_bound"]
        self.lower_bound_ = -np.inf if bound is None else float(bound)
        self.lower_bounds_ = [-np.inf if v is None else float(v) for v in resource["lower_bounds"]]

    def _predicted(self, X: Any) -> dict[str, np.ndarray]:
        points = self._points(X)
        with self._asking():
            return self._client().predict(self.model_id_, points)

    def predict(self, X: Any) -> np.ndarray:
        """Component labels, (n_samples,)."""
        return np.asarray(self._predicted(X)["labels"], dtype=np.int64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Each component's posterior probability, (n_samples, n_components)."""
        return np.asarray(self._predicted(X)["probabilities"], dtype=np.float64)

    def _scored(self, X: Any) -> dict[str, Any]:
        points = self._points(X)
        with self._asking():
            return self._client().score_points(self.model_id_, points)

    def score_samples(self, X: Any) -> np.ndarray:
        """log p(x) of each point, (n_samples,)."""
        return np.asarray(self._scored(X)["log_likelihood"], dtype=np.float64)

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood of ``X``."""
        return float(self._scored(X)["score"])

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``n_samples`` points drawn on the service, and their components.

        ``random_state`` is the estimator's current one, as sklearn's ``sample`` uses."""
        self._check_fitted()
        if n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples} . The sampling requires at "
                "least one sample."
            )
        seed = self.random_state
        if isinstance(seed, np.random.RandomState):
            seed = _seed(seed)
        with self._asking():
            X, y = self._client().sample_points(
                self.model_id_, int(n_samples), random_state=None if seed is None else int(seed)
            )
        return np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64)


class RemoteGaussianMixture(_RemoteMixture):
    """``sklearn.mixture.GaussianMixture``, fitted and evaluated by gmm-service."""

    _algorithm = "gaussian_mixture"
    _local = GaussianMixture
    _service_params = (
        "n_components",
        "covariance_type",
        "tol",
        "reg_covar",
        "max_iter",
        "n_init",
        "init_params",
        "weights_init",
        "means_init",
        "precisions_init",
    )
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **GaussianMixture._parameter_constraints,
        **_CONNECTION_CONSTRAINTS,
    }

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        base_url: str | None = None,
        api_key: str | None = None,
        keep: bool = False,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.base_url = base_url
        self.api_key = api_key
        self.keep = keep
        self.ttl_seconds = ttl_seconds

    def _fit_params(self) -> dict[str, Any]:
        params = self._wire_params()
        if self.warm_start and self.__sklearn_is_fitted__():
            # No in-process state on the service: start EM from the fitted values.
            params.update(
                weights_init=self.weights_.tolist(),
                means_init=self.means_.tolist(),
                precisions_init=self.precisions_.tolist(),
                n_init=1,
            )
        return params

    def bic(self, X: Any) -> float:
        """Bayesian information criterion of ``X``, computed by the service."""
        value = self._scored(X)["bic"]
        return np.inf if value is None else float(value)

    def aic(self, X: Any) -> float:
        """Akaike information criterion of ``X``, computed by the service."""
        value = self._scored(X)["aic"]
        return np.inf if value is None else float(value)


class RemoteBayesianGaussianMixture(_RemoteMixture):
    """``sklearn.mixture.BayesianGaussianMixture``, fitted and evaluated by gmm-service."""

    _algorithm = "bayesian_gaussian_mixture"
    _local = BayesianGaussianMixture
    _service_params = (
        "n_components",
        "covariance_type",
        "tol",
        "reg_covar",
        "max_iter",
        "n_init",
        "init_params",
        "weight_concentration_prior_type",
        "weight_concentration_prior",
        "mean_precision_prior",
        "mean_prior",
        "degrees_of_freedom_prior",
        "covariance_prior",
    )
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **BayesianGaussianMixture._parameter_constraints,
        **_CONNECTION_CONSTRAINTS,
    }

    def __init__(
        self,
        *,
        n_components: int = 1,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weight_concentration_prior_type: str = "dirichlet_process",
        weight_concentration_prior: float | None = None,
        mean_precision_prior: float | None = None,
        mean_prior: Any = None,
        degrees_of_freedom_prior: float | None = None,
        covariance_prior: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        base_url: str | None = None,
        api_key: str | None = None,
        keep: bool = False,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.base_url = base_url
        self.api_key = api_key
        self.keep = keep
        self.ttl_seconds = ttl_seconds

    def _set_fitted(self, resource: dict[str, Any], X: np.ndarray) -> None:
        super()._set_fitted(resource, X)
        wc = np.asarray(resource["weight_concentration"], dtype=np.float64)
        if self.weight_concentration_prior_type == "dirichlet_process":
            self.weight_concentration_: Any = (wc[0], wc[1])
        else:
            self.weight_concentration_ = wc
        self.mean_precision_ = np.asarray(resource["mean_precision"], dtype=np.float64)
        self.degrees_of_freedom_ = np.asarray(resource["degrees_of_freedom"], dtype=np.float64)
        # The priors as the service's fit resolved them. A service older than the
        # priors in the resource answers none: they are plain functions of X and the
        # parameters then, and scikit-learn's own code computes them here.
        local = None
        for name in (
            "weight_concentration_prior",
            "mean_precision_prior",
            "mean_prior",
            "degrees_of_freedom_prior",
            "covariance_prior",
        ):
            value = resource.get(name)
            if value is None:
                if local is None:
                    local = BayesianGaussianMixture(**self._local_params())
                    local._check_parameters(X)
                setattr(self, f"{name}_", getattr(local, f"{name}_"))
            elif isinstance(value, list):
                setattr(self, f"{name}_", np.asarray(value, dtype=np.float64))
            else:
                setattr(self, f"{name}_", float(value))

    def _local_params(self) -> dict[str, Any]:
        names = BayesianGaussianMixture().get_params()
        return {name: getattr(self, name) for name in names}


class _RemoteCentroids(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, _RemoteEstimator
):
    """What KMeans and MiniBatchKMeans share: Lloyd or mini-batches on the service."""

    init: Any

    def _fit_centroids(self, X: Any, sample_weight: Any) -> Any:
        self._validate_params()
        X = _dense(validate_data(self, X, accept_sparse="csr", dtype=[np.float64], order="C"))
        if callable(self.init):
            raise ValueError("A callable init cannot be sent to gmm-service; pass an array.")
        # None stays off the wire: the service then fits exactly as sklearn does without
        # weights. Otherwise sklearn's own check (a scalar is broadcast, a wrong length
        # refused with its message) and a copy: the caller's array is never touched.
        extra = None
        if sample_weight is not None:
            weights = _check_sample_weight(sample_weight, X, dtype=np.float64)
            extra = {"sample_weight": weights.tolist()}
        resource = self._fit_remote(X, self._wire_params(), extra)
        self.cluster_centers_ = np.asarray(resource["means"], dtype=np.float64)
        self.labels_ = np.asarray(resource["labels"], dtype=np.int32)
        self.inertia_ = float(resource["inertia"])
        self.n_iter_ = int(resource["n_iter"])
        if "n_steps" in resource:
            self.n_steps_ = int(resource["n_steps"])
        self._n_features_out = self.cluster_centers_.shape[0]
        return self

    def _predicted(self, X: Any) -> dict[str, np.ndarray]:
        points = self._points(X)
        with self._asking():
            return self._client().predict(self.model_id_, points)

    def predict(self, X: Any, sample_weight: Any = None) -> np.ndarray:
        """The closest cluster of each point, (n_samples,)."""
        return np.asarray(self._predicted(X)["labels"], dtype=np.int32)

    def transform(self, X: Any) -> np.ndarray:
        """Euclidean distance of each point to each center, (n_samples, n_clusters)."""
        return np.asarray(self._predicted(X)["distances"], dtype=np.float64)

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        """Fit, and the training labels, (n_samples,)."""
        return self.fit(X, sample_weight=sample_weight).labels_  # type: ignore[no-any-return]

    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        """Fit, and the distances of the training points to the centers."""
        return self.fit(X, sample_weight=sample_weight).transform(X)  # type: ignore[no-any-return]

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Opposite of the k-means objective of ``X``: the service's distances to the
        closest center, squared and weighted by ``sample_weight`` (n_samples,) here.
        Weighing locally spares the service a score endpoint that would answer the
        same distances."""
        distances = self.transform(X)
        squared = distances.min(axis=1) ** 2
        if sample_weight is None:
            return -float(np.sum(squared))
        weights = _check_sample_weight(sample_weight, distances, dtype=np.float64)
        return -float(np.sum(squared * weights))


class RemoteKMeans(_RemoteCentroids):
    """``sklearn.cluster.KMeans``, fitted and evaluated by gmm-service."""

    _algorithm = "kmeans"
    _local = KMeans
    _service_params = ("n_clusters", "init", "n_init", "max_iter", "tol", "algorithm")
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **KMeans._parameter_constraints,
        **_CONNECTION_CONSTRAINTS,
    }

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means++",
        n_init: Any = "auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        verbose: int = 0,
        random_state: Any = None,
        copy_x: bool = True,
        algorithm: str = "lloyd",
        base_url: str | None = None,
        api_key: str | None = None,
        keep: bool = False,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.base_url = base_url
        self.api_key = api_key
        self.keep = keep
        self.ttl_seconds = ttl_seconds

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> RemoteKMeans:
        """Fit on the service; ``X`` is (n_samples, n_features). ``y`` is ignored."""
        return self._fit_centroids(X, sample_weight)  # type: ignore[no-any-return]


class RemoteMiniBatchKMeans(_RemoteCentroids):
    """``sklearn.cluster.MiniBatchKMeans``, fitted and evaluated by gmm-service
    (no ``partial_fit``: the service fits a whole dataset at once)."""

    _algorithm = "minibatch_kmeans"
    _local = MiniBatchKMeans
    _service_params = (
        "n_clusters",
        "init",
        "max_iter",
        "batch_size",
        "compute_labels",
        "tol",
        "max_no_improvement",
        "init_size",
        "n_init",
        "reassignment_ratio",
    )
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **MiniBatchKMeans._parameter_constraints,
        **_CONNECTION_CONSTRAINTS,
    }

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means++",
        max_iter: int = 100,
        batch_size: int = 1024,
        verbose: int = 0,
        compute_labels: bool = True,
        random_state: Any = None,
        tol: float = 0.0,
        max_no_improvement: int | None = 10,
        init_size: int | None = None,
        n_init: Any = "auto",
        reassignment_ratio: float = 0.01,
        base_url: str | None = None,
        api_key: str | None = None,
        keep: bool = False,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.verbose = verbose
        self.compute_labels = compute_labels
        self.random_state = random_state
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.init_size = init_size
        self.n_init = n_init
        self.reassignment_ratio = reassignment_ratio
        self.base_url = base_url
        self.api_key = api_key
        self.keep = keep
        self.ttl_seconds = ttl_seconds

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> RemoteMiniBatchKMeans:
        """Fit on the service; ``X`` is (n_samples, n_features). ``y`` is ignored."""
        return self._fit_centroids(X, sample_weight)  # type: ignore[no-any-return]
