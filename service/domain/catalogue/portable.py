"""Portable models: export a fitted estimator as a JSON document, import one back.

The document (``service.schemas.portable``) holds sklearn's fitted attributes as
numbers, so an import builds the estimator by constructing the sklearn class with the
document's params and setting those attributes: nothing is ever unpickled. Every
array is checked before it is used (shape for the covariance_type, weights on the
simplex, covariances symmetric positive-definite, ``precisions_cholesky`` the
Cholesky factor of their inverse), and each failure names the field.

``precisions_cholesky`` is used exactly as given rather than recomputed from the
covariances: it is what prediction and scoring multiply by, so an imported model
answers bit-for-bit what the exported one did.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import linalg

from service.domain import sklearn_compat
from service.domain.catalogue.service import Catalogue
from service.domain.limits import Limits
from service.domain.training import estimators
from service.domain.training.estimators import COVARIANCE_SHAPES
from service.errors import InvalidInput, PayloadTooLarge, ServiceError
from service.schemas.models import EFFECTIVE_WEIGHT_THRESHOLD
from service.schemas.portable import (
    FORMAT,
    FORMAT_VERSION,
    BayesianGaussianMixtureDocument,
    MiniBatchKMeansDocument,
    ModelDocument,
)

#: Weights must sum to 1 within this (sklearn's own weights are off by ~1e-16).
WEIGHT_SUM_TOL = 1e-6
#: Largest asymmetry of a covariance matrix, relative to its largest entry.
SYMMETRY_TOL = 1e-7
#: Largest difference between the given and the recomputed precisions_cholesky,
#: relative to the largest entry of the recomputed one (per component).
PRECISION_TOL = 1e-6
#: Bayesian weights are derived from weight_concentration; how far the given ones may be.
BAYES_WEIGHT_RTOL = 1e-6


# -- export ------------------------------------------------------------------------
def export_model(catalogue: Catalogue, model_id: str) -> dict[str, Any]:
    """The document for a stored model, read from its fitted estimator (not its resource),
    so that what is exported is exactly what predicts."""
    resource, bundle = catalogue.load_bundle(model_id)
    est = bundle["estimator"]
    algorithm = resource["algorithm"]
    meta = catalogue.get_metadata(model_id)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "algorithm": algorithm,
        "name": resource.get("name"),
        "tags": resource.get("tags", {}),
        "params": resource["params"],
        "n_features": int(resource["n_features"]),
        "n_components": int(resource["n_components"]),
        "n_iter": int(est.n_iter_),
    }
    if estimators.is_mixture(algorithm):
        # BayesianGaussianMixture with covariance_type='tied' keeps it as a (1,) array.
        lower_bound = float(np.asarray(est.lower_bound_, dtype=np.float64).reshape(-1)[0])
        doc.update(
            covariance_type=est.covariance_type,
            weights=est.weights_,
            means=est.means_,
            covariances=est.covariances_,
            precisions_cholesky=est.precisions_cholesky_,
            converged=bool(est.converged_),
            lower_bound=lower_bound if np.isfinite(lower_bound) else None,
            lower_bounds=[estimators.finite_or_none(v) for v in getattr(est, "lower_bounds_", [])],
        )
        if algorithm == "bayesian_gaussian_mixture":
            wc = est.weight_concentration_
            dof = est.degrees_of_freedom_
            doc.update(
                weight_concentration=np.vstack(wc) if isinstance(wc, tuple) else wc,
                mean_precision=est.mean_precision_,
                degrees_of_freedom=float(dof) if np.ndim(dof) == 0 else dof,
                effective_weight_threshold=float(
                    resource.get("effective_weight_threshold", EFFECTIVE_WEIGHT_THRESHOLD)
                ),
            )
    else:
        doc.update(cluster_centers=est.cluster_centers_, inertia=float(est.inertia_))
        if algorithm == "minibatch_kmeans":
            doc["n_steps"] = int(est.n_steps_)
    doc["source"] = {
        "model_id": resource["id"],
        "created_at": resource["created_at"],
        "n_samples": resource["n_samples"],
        "versions": meta.get("versions", {}),
    }
    return doc


# -- import ------------------------------------------------------------------------
def _at(*loc: str | int) -> list[str | int]:
    return ["body", *loc]


def _array(value: Any, field: str, shape: tuple[int, ...], why: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except ValueError:
        arr = None
    if arr is None or arr.shape != shape:
        got = "a ragged array" if arr is None else f"shape {arr.shape}"
        raise InvalidInput.at(
            _at(field), f"{field} must have shape {shape} ({why}), got {got}.", "wrong_shape"
        )
    return arr


def _first_bad(mask: np.ndarray) -> list[int]:
    return [int(i) for i in np.argwhere(mask)[0]]


def _check_limits(doc: Any, limits: Limits) -> None:
    k, d = doc.n_components, doc.n_features
    if k > limits.max_components:
        raise PayloadTooLarge.at(
            _at("n_components"),
            f"n_components={k} exceeds the limit of {limits.max_components} (GMM_MAX_COMPONENTS).",
        )
    if d > limits.max_features:
        raise PayloadTooLarge.at(
            _at("n_features"),
            f"n_features={d} exceeds the limit of {limits.max_features} (GMM_MAX_FEATURES).",
        )
    if estimators.is_mixture(doc.algorithm):
        field, size = "covariances", int(np.prod(COVARIANCE_SHAPES[doc.covariance_type](k, d)))
    else:
        field, size = "cluster_centers", k * d
    if size > limits.max_values:
        raise PayloadTooLarge.at(
            _at(field),
            f"{field} would hold {size} numbers, over the limit of {limits.max_values} "
            "(GMM_MAX_VALUES).",
        )


def _check_params(doc: Any, limits: Limits) -> dict[str, Any]:
    """The document's params, consistent with its shape and within the service's limits."""
    algo = estimators.ALGORITHMS[doc.algorithm]
    params: dict[str, Any] = doc.params.model_dump()
    k, d = doc.n_components, doc.n_features
    if params[algo.k_param] != k:
        raise InvalidInput.at(
            _at("params", algo.k_param),
            f"params.{algo.k_param}={params[algo.k_param]} but the document has "
            f"n_components={k}; they must agree.",
        )
    if algo.family == "mixture" and params["covariance_type"] != doc.covariance_type:
        raise InvalidInput.at(
            _at("params", "covariance_type"),
            f"params.covariance_type={params['covariance_type']!r} but the document's "
            f"covariance_type is {doc.covariance_type!r}; they must agree.",
        )
    # Initial arrays and iteration limits are checked as for a fit; the sample count is
    # unknown here, so it is given as just enough.
    estimators.check_params(doc.algorithm, params, max(k, algo.min_samples), d, limits)
    return params


def _index(idx: list[int]) -> str:
    return "".join(f"[{i}]" for i in idx)


def _check_weights(weights: np.ndarray, *, positive: bool) -> None:
    bad = weights <= 0 if positive else weights < 0
    if bad.any():
        i = _first_bad(bad)[0]
        need = "positive" if positive else "non-negative"
        raise InvalidInput.at(
            _at("weights", i), f"weights must be {need}; weights[{i}] is {weights[i]!r}."
        )
    with np.errstate(over="ignore"):
        total = float(weights.sum())
    if not abs(total - 1.0) <= WEIGHT_SUM_TOL:
        raise InvalidInput.at(
            _at("weights"),
            f"weights must sum to 1 (within {WEIGHT_SUM_TOL}); they sum to {total!r}.",
        )


def _not_invertible(loc: list[str | int], what: str) -> ServiceError:
    return InvalidInput.at(
        loc,
        f"{what} is not positive-definite in float64 (its Cholesky factorisation fails "
        "or overflows).",
        "not_positive_definite",
    )


def _check_covariances(cov: np.ndarray, kind: str) -> None:
    """Symmetric positive-definite, component by component, naming the first bad one."""
    if kind in ("diag", "spherical"):
        bad = cov <= 0
        if bad.any():
            idx = _first_bad(bad)
            raise InvalidInput.at(
                _at("covariances", *idx),
                f"{kind} covariances are variances and must be positive; "
                f"covariances{_index(idx)} is {float(cov[tuple(idx)])!r}.",
                "not_positive_definite",
            )
        return
    matrices = cov[np.newaxis] if kind == "tied" else cov
    for i, m in enumerate(matrices):
        loc = _at("covariances") if kind == "tied" else _at("covariances", i)
        what = "the tied covariance" if kind == "tied" else f"covariances[{i}]"
        scale = float(np.max(np.abs(m)))
        if scale == 0.0:
            raise _not_invertible(loc, what)
        unit = m / scale  # compared at unit scale, so that huge entries cannot overflow
        asym = float(np.max(np.abs(unit - unit.T)))
        if asym > SYMMETRY_TOL:
            raise InvalidInput.at(
                loc,
                f"{what} is not symmetric (largest |C - C.T| is {asym * scale:.3g}).",
                "not_symmetric",
            )
        try:
            with np.errstate(all="ignore"):
                finite = bool(np.isfinite(np.linalg.cholesky(m)).all())
        except np.linalg.LinAlgError:
            finite = False
        if not finite:
            raise _not_invertible(loc, what)


def _expected_precision_cholesky(cov: np.ndarray, kind: str) -> np.ndarray:
    """sklearn's definition: the upper factor U with U @ U.T the inverse covariance."""
    with np.errstate(all="ignore"):
        if kind in ("diag", "spherical"):
            expected = 1.0 / np.sqrt(cov)
            bad = ~np.isfinite(expected)
            if bad.any():
                raise _not_invertible(_at("covariances", *_first_bad(bad)), "a variance")
            return expected
        matrices = cov[np.newaxis] if kind == "tied" else cov
        out = np.empty_like(matrices)
        eye = np.eye(cov.shape[-1])
        for i, m in enumerate(matrices):
            loc = _at("covariances") if kind == "tied" else _at("covariances", i)
            what = "the tied covariance" if kind == "tied" else f"covariances[{i}]"
            try:
                lower = linalg.cholesky(m, lower=True)
                out[i] = linalg.solve_triangular(lower, eye, lower=True).T
            except (ValueError, np.linalg.LinAlgError):
                raise _not_invertible(loc, what) from None
            if not np.isfinite(out[i]).all():
                raise _not_invertible(loc, what)
    return out[0] if kind == "tied" else out


def _check_precisions_cholesky(pc: np.ndarray, cov: np.ndarray, kind: str) -> None:
    expected = _expected_precision_cholesky(cov, kind)
    if kind in ("diag", "spherical"):
        with np.errstate(over="ignore"):
            bad = ~(np.abs(pc - expected) <= PRECISION_TOL * np.abs(expected))
        if bad.any():
            idx = _first_bad(bad)
            raise InvalidInput.at(
                _at("precisions_cholesky", *idx),
                f"precisions_cholesky{_index(idx)} is {float(pc[tuple(idx)])!r} but the "
                f"covariances give 1/sqrt(variance) = {float(expected[tuple(idx)])!r}.",
                "inconsistent",
            )
        return
    given = pc[np.newaxis] if kind == "tied" else pc
    wanted = expected[np.newaxis] if kind == "tied" else expected
    for i, (g, w) in enumerate(zip(given, wanted, strict=True)):
        with np.errstate(over="ignore"):
            err = float(np.max(np.abs(g - w)))
        if not err <= PRECISION_TOL * float(np.max(np.abs(w))):
            loc = _at("precisions_cholesky") if kind == "tied" else _at("precisions_cholesky", i)
            raise InvalidInput.at(
                loc,
                "precisions_cholesky must be the upper Cholesky factor of the inverse "
                f"covariance (U @ U.T = inv(C)); component {i} differs from it by up to "
                f"{err:.3g}.",
                "inconsistent",
            )


def _positive(arr: np.ndarray, field: str, floor: float = 0.0) -> None:
    bad = arr <= floor
    if bad.any():
        idx = _first_bad(bad) if arr.ndim else []
        value = float(arr[tuple(idx)]) if idx else float(arr)
        raise InvalidInput.at(
            _at(field, *idx), f"{field} must be greater than {floor:g}; got {value!r}."
        )


def _build_mixture(doc: Any, params: dict[str, Any]) -> Any:
    k, d, kind = doc.n_components, doc.n_features, doc.covariance_type
    why = f"n_components={k}, n_features={d}, covariance_type={kind!r}"
    weights = _array(doc.weights, "weights", (k,), why)
    means = _array(doc.means, "means", (k, d), why)
    cov = _array(doc.covariances, "covariances", COVARIANCE_SHAPES[kind](k, d), why)
    pc = _array(doc.precisions_cholesky, "precisions_cholesky", COVARIANCE_SHAPES[kind](k, d), why)
    bayesian = isinstance(doc, BayesianGaussianMixtureDocument)
    # A zero weight is a log-weight of -inf for gaussian_mixture; Bayesian mixtures
    # predict from weight_concentration and only sample from weights.
    _check_weights(weights, positive=not bayesian)
    _check_covariances(cov, kind)
    _check_precisions_cholesky(pc, cov, kind)

    est = estimators.build(doc.algorithm, params)
    if bayesian:
        dp = params["weight_concentration_prior_type"] == "dirichlet_process"
        wc_shape = (2, k) if dp else (k,)
        wc = _array(
            doc.weight_concentration,
            "weight_concentration",
            wc_shape,
            f"n_components={k}, weight_concentration_prior_type="
            f"{params['weight_concentration_prior_type']!r}",
        )
        _positive(wc, "weight_concentration")
        mean_precision = _array(doc.mean_precision, "mean_precision", (k,), why)
        _positive(mean_precision, "mean_precision")
        dof = _array(
            doc.degrees_of_freedom, "degrees_of_freedom", () if kind == "tied" else (k,), why
        )
        _positive(dof, "degrees_of_freedom", floor=d - 1.0)
        with np.errstate(all="ignore"):  # extreme concentrations fail the check below
            sklearn_compat.set_mixture_parameters(
                est,
                (
                    (wc[0].copy(), wc[1].copy()) if dp else wc,
                    mean_precision,
                    means,
                    np.float64(dof) if kind == "tied" else dof,
                    cov,
                    pc,
                ),
            )
        if not np.allclose(est.weights_, weights, rtol=BAYES_WEIGHT_RTOL, atol=0.0):
            raise InvalidInput.at(
                _at("weights"),
                "weights disagree with weight_concentration, which they are derived from "
                f"(expected {est.weights_.tolist()}).",
                "inconsistent",
            )
        est.weights_ = weights
    else:
        with np.errstate(all="ignore"):
            sklearn_compat.set_mixture_parameters(est, (weights, means, cov, pc))
    est.converged_ = doc.converged
    est.n_iter_ = doc.n_iter
    est.lower_bound_ = -np.inf if doc.lower_bound is None else doc.lower_bound
    est.lower_bounds_ = [-np.inf if v is None else v for v in doc.lower_bounds]
    est.n_features_in_ = d
    return est


def _build_centroids(doc: Any, params: dict[str, Any]) -> Any:
    k, d = doc.n_components, doc.n_features
    centers = _array(
        doc.cluster_centers, "cluster_centers", (k, d), f"n_clusters={k}, n_features={d}"
    )
    est = estimators.build(doc.algorithm, params)
    est.cluster_centers_ = centers
    est.inertia_ = doc.inertia
    est.n_iter_ = doc.n_iter
    est.n_features_in_ = d
    sklearn_compat.set_centroid_fitted_state(est, k)
    if isinstance(doc, MiniBatchKMeansDocument):
        est.n_steps_ = doc.n_steps
    return est


def import_model(catalogue: Catalogue, doc: ModelDocument) -> dict[str, Any]:
    """Check the document, build the estimator from its numbers, and store it as a model.

    The stored bundle has no training data, so plots and score percentiles of an
    imported model say so instead of inventing it.
    """
    _check_limits(doc, catalogue.limits)
    params = _check_params(doc, catalogue.limits)
    algorithm = doc.algorithm
    if estimators.is_mixture(algorithm):
        est = _build_mixture(doc, params)
    else:
        est = _build_centroids(doc, params)
    attributes = estimators.describe(algorithm, est, None)
    if isinstance(doc, BayesianGaussianMixtureDocument):
        attributes["effective_weight_threshold"] = doc.effective_weight_threshold
        attributes["effective_n_components"] = estimators.effective_n_components(
            est.weights_, doc.effective_weight_threshold
        )
    source = doc.source
    return catalogue.save(
        algorithm=algorithm,
        params=params,
        name=doc.name,
        tags=doc.tags,
        # null says "unknown" when the document does not tell.
        n_samples=source.n_samples if source else None,
        n_features=doc.n_features,
        fit_seconds=0.0,
        warnings=[],
        attributes=attributes,
        bundle={"estimator": est, "X": None, "labels": None, "train_log_likelihood": None},
        imported=True,
        imported_from=source.model_dump() if source is not None else None,
    )
