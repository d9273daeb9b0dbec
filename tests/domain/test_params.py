"""Our parameter schemas against scikit-learn's own constructor and constraint table.

The service promises sklearn's names and defaults, and refuses bad values with a 422
naming the field before any fit starts. Both halves hold only while the pydantic
schemas track sklearn: these tests read sklearn's signature and
``_parameter_constraints`` so that an sklearn upgrade which moves a default or a
bound fails here, not in a client's fit.
"""

from __future__ import annotations

import inspect
import math
from numbers import Integral
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions

from service.schemas.params import (
    BayesianGaussianMixtureParams,
    GaussianMixtureParams,
    KMeansParams,
    MiniBatchKMeansParams,
)

PAIRS: list[tuple[type[BaseModel], type]] = [
    (GaussianMixtureParams, GaussianMixture),
    (BayesianGaussianMixtureParams, BayesianGaussianMixture),
    (KMeansParams, KMeans),
    (MiniBatchKMeansParams, MiniBatchKMeans),
]
PAIR_IDS = [estimator.__name__ for _, estimator in PAIRS]

#: sklearn parameters the service deliberately does not offer: they change logging,
#: memory copies or incremental refits, none of which an HTTP client controls.
NOT_OFFERED = {
    GaussianMixture: {"warm_start", "verbose", "verbose_interval"},
    BayesianGaussianMixture: {"warm_start", "verbose", "verbose_interval"},
    KMeans: {"verbose", "copy_x"},
    MiniBatchKMeans: {"verbose"},
}

HYPOTHESIS = settings(max_examples=15, deadline=None)


def sklearn_defaults(estimator: type) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(estimator).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def accepted_by_sklearn(estimator: type, params: dict[str, Any]) -> None:
    """Raise unless sklearn's own constraint table takes ``params``."""
    estimator(**params)._validate_params()
    check_random_state(params.get("random_state"))


# -- names and defaults -------------------------------------------------------------------


@pytest.mark.parametrize(("schema", "estimator"), PAIRS, ids=PAIR_IDS)
def test_every_param_is_an_sklearn_constructor_param(
    schema: type[BaseModel], estimator: type
) -> None:
    ours = set(schema.model_fields)
    theirs = set(inspect.signature(estimator).parameters)
    assert ours <= theirs, ours - theirs
    # Whatever sklearn adds in a new release is a decision to make, not to miss.
    assert theirs - ours == NOT_OFFERED[estimator]


@pytest.mark.parametrize(("schema", "estimator"), PAIRS, ids=PAIR_IDS)
def test_every_default_is_sklearns_default(schema: type[BaseModel], estimator: type) -> None:
    defaults = sklearn_defaults(estimator)
    for name, field in schema.model_fields.items():
        assert field.default == defaults[name], name
        assert type(field.default) is type(defaults[name]), name
    # And the model as a whole dumps to what sklearn's get_params() says.
    params = estimator().get_params()
    assert schema().model_dump() == {name: params[name] for name in schema.model_fields}


# -- the boundaries of sklearn's constraint table --------------------------------------------


#: Known gaps: bounds sklearn enforces that service/schemas/params.py does not (yet).
#: (estimator, param) pairs our schema knowingly accepts beyond sklearn's range, with why.
LOOSER_THAN_SKLEARN: dict[tuple[type, str], str] = {}


def _outside(constraint: Any) -> list[Any]:
    """Values just outside one of sklearn's constraints."""
    if isinstance(constraint, Interval):
        values: list[Any] = []
        integral = constraint.type is Integral
        if constraint.left is not None:
            step = 1 if integral else 0.5
            values.append(constraint.left - step)
            if constraint.closed in ("right", "neither"):
                values.append(int(constraint.left) if integral else float(constraint.left))
        if constraint.right is not None:
            values.append(constraint.right + (1 if integral else 0.5))
        if not integral:
            values.append(math.nan)
        return values
    if isinstance(constraint, StrOptions):
        return ["not-an-option"]
    return []


def _boundary_cases() -> list[Any]:
    cases = []
    for schema, estimator in PAIRS:
        constraints = estimator._parameter_constraints
        for name in schema.model_fields:
            for constraint in constraints[name]:
                for value in _outside(constraint):
                    try:  # only values that *every* constraint of the param refuses
                        accepted_by_sklearn(estimator, {name: value})
                    except (InvalidParameterError, ValueError):
                        pass
                    else:
                        continue
                    marks = []
                    nan = isinstance(value, float) and math.isnan(value)
                    if (estimator, name) in LOOSER_THAN_SKLEARN and not nan:
                        reason = LOOSER_THAN_SKLEARN[estimator, name]
                        marks.append(pytest.mark.xfail(reason=reason, strict=True))
                    cases.append(
                        pytest.param(
                            schema,
                            estimator,
                            name,
                            value,
                            id=f"{estimator.__name__}-{name}={value!r}",
                            marks=marks,
                        )
                    )
    return cases


@pytest.mark.parametrize(("schema", "estimator", "name", "value"), _boundary_cases())
def test_what_sklearn_refuses_our_schema_refuses(
    schema: type[BaseModel], estimator: type, name: str, value: Any
) -> None:
    """A value sklearn would refuse at fit time must be a 422 naming the field instead."""
    with pytest.raises(ValidationError) as info:
        schema.model_validate({name: value})
    assert any(e["loc"][:1] == (name,) for e in info.value.errors())


@pytest.mark.parametrize("seed", [0, 2**32 - 1])
def test_seeds_numpy_takes_are_valid(seed: int) -> None:
    assert GaussianMixtureParams(random_state=seed).random_state == seed
    check_random_state(seed)


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seeds_numpy_refuses_are_invalid(seed: int) -> None:
    with pytest.raises(ValidationError):
        GaussianMixtureParams(random_state=seed)
    with pytest.raises(ValueError):
        check_random_state(seed)


# -- property: what our schema accepts, sklearn accepts ------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
non_negative = st.floats(min_value=0, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=0, exclude_min=True, allow_nan=False, allow_infinity=False)
vector = st.lists(finite, min_size=1, max_size=4)
matrix = st.lists(vector, min_size=1, max_size=3)
tensor = st.lists(matrix, min_size=1, max_size=2)
seeds = st.none() | st.integers(0, 2**32 - 1)
counts = st.integers(1, 10**6)

MIXTURE = {
    "n_components": counts,
    "covariance_type": st.sampled_from(["full", "tied", "diag", "spherical"]),
    "tol": non_negative,
    "reg_covar": non_negative,
    "max_iter": st.integers(0, 10**6),
    "n_init": counts,
    "init_params": st.sampled_from(["kmeans", "k-means++", "random", "random_from_data"]),
    "random_state": seeds,
}
VALID: dict[type, dict[str, st.SearchStrategy[Any]]] = {
    GaussianMixture: {
        **MIXTURE,
        "weights_init": st.none() | vector,
        "means_init": st.none() | matrix,
        "precisions_init": st.none() | vector | matrix | tensor,
    },
    BayesianGaussianMixture: {
        **MIXTURE,
        "weight_concentration_prior_type": st.sampled_from(
            ["dirichlet_process", "dirichlet_distribution"]
        ),
        "weight_concentration_prior": st.none() | positive,
        "mean_precision_prior": st.none() | positive,
        "mean_prior": st.none() | vector,
        # Drawn from sklearn's range: our schema's looser bound is the xfail above.
        "degrees_of_freedom_prior": st.none() | positive,
        "covariance_prior": st.none() | positive | vector | matrix,
    },
    KMeans: {
        "n_clusters": counts,
        "init": st.sampled_from(["k-means++", "random"]) | matrix,
        "n_init": st.just("auto") | counts,
        "max_iter": counts,
        "tol": non_negative,
        "random_state": seeds,
        "algorithm": st.sampled_from(["lloyd", "elkan"]),
    },
    MiniBatchKMeans: {
        "n_clusters": counts,
        "init": st.sampled_from(["k-means++", "random"]) | matrix,
        "max_iter": counts,  # sklearn's range: our schema's 0 is the xfail above
        "batch_size": counts,
        "compute_labels": st.booleans(),
        "random_state": seeds,
        "tol": non_negative,
        "max_no_improvement": st.none() | st.integers(0, 10**6),
        "init_size": st.none() | counts,
        "n_init": st.just("auto") | counts,
        "reassignment_ratio": non_negative,
    },
}


def test_valid_strategies_cover_every_field() -> None:
    for schema, estimator in PAIRS:
        assert set(VALID[estimator]) == set(schema.model_fields), estimator.__name__


@pytest.mark.parametrize(("schema", "estimator"), PAIRS, ids=PAIR_IDS)
@HYPOTHESIS
@given(data=st.data())
def test_params_our_schema_accepts_sklearn_accepts(
    schema: type[BaseModel], estimator: type, data: st.DataObject
) -> None:
    strategies = VALID[estimator]
    drawn = data.draw(st.fixed_dictionaries({}, optional=strategies))
    params = schema.model_validate(drawn).model_dump()
    accepted_by_sklearn(estimator, params)


# -- property: what our schema refuses (by value), sklearn refuses -------------------------

negative = st.floats(max_value=0, exclude_max=True, allow_nan=False)
negative_or_nan = negative | st.just(math.nan)


def not_one_of(*options: str) -> st.SearchStrategy[str]:
    return st.text(max_size=20).filter(lambda s: s not in options)


#: Values outside sklearn's ranges. Type strictness (``true`` or ``2.0`` for a count)
#: is ours alone: sklearn takes ``True`` as the integer 1, JSON clients should not.
INVALID: dict[type, dict[str, st.SearchStrategy[Any]]] = {
    GaussianMixture: {
        "n_components": st.integers(max_value=0),
        "covariance_type": not_one_of("full", "tied", "diag", "spherical"),
        "tol": negative_or_nan,
        "reg_covar": negative_or_nan,
        "max_iter": st.integers(max_value=-1),
        "n_init": st.integers(max_value=0),
        "init_params": not_one_of("kmeans", "k-means++", "random", "random_from_data"),
    },
    KMeans: {
        "n_clusters": st.integers(max_value=0),
        "init": not_one_of("k-means++", "random"),
        "n_init": st.integers(max_value=0) | not_one_of("auto"),
        "max_iter": st.integers(max_value=0),
        "tol": negative_or_nan,
        "algorithm": not_one_of("lloyd", "elkan"),
    },
}
INVALID_CASES = [
    pytest.param(schema, estimator, name, id=f"{estimator.__name__}-{name}")
    for schema, estimator in PAIRS
    for name in INVALID.get(estimator, {})
]


@pytest.mark.parametrize(("schema", "estimator", "name"), INVALID_CASES)
@HYPOTHESIS
@given(data=st.data())
def test_values_our_schema_refuses_sklearn_refuses(
    schema: type[BaseModel], estimator: type, name: str, data: st.DataObject
) -> None:
    value = data.draw(INVALID[estimator][name], label=name)
    with pytest.raises(ValidationError):
        schema.model_validate({name: value})
    with pytest.raises(InvalidParameterError):
        estimator(**{name: value})._validate_params()


def test_array_params_keep_their_values() -> None:
    """Nested lists reach sklearn unchanged (no rounding through pydantic)."""
    means = [[0.1, 1e-300], [-2.5, 1e300]]
    params = GaussianMixtureParams(n_components=2, means_init=means).model_dump()
    assert params["means_init"] == means
    np.testing.assert_array_equal(np.asarray(params["means_init"]), np.asarray(means))


@pytest.mark.parametrize("value", [2.5, True, "2", None])
def test_counts_must_be_json_integers(value: Any) -> None:
    with pytest.raises(ValidationError):
        KMeansParams.model_validate({"n_clusters": value})


def test_integral_numbers_are_integers() -> None:
    """JSON has one number type and JSON Schema's ``integer`` admits ``2.0``."""
    params = KMeansParams.model_validate({"n_clusters": 2.0})
    assert params.n_clusters == 2
    assert isinstance(params.n_clusters, int)
