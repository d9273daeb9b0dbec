"""scikit-learn's own tests of GaussianMixture, BayesianGaussianMixture, KMeans and
MiniBatchKMeans, run with the remote estimators in their place against a real server.

Each sklearn test module is imported, its module globals naming the estimator are
rebound to the remote class (the test functions read them at call time), the classes
baked into ``parametrize`` marks at import are swapped the same way, and every
``test_*`` function is exposed here, marks included, for pytest to collect. The
tests left out, with their reasons, are in ``excluded.py``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest
from _pytest.mark.structures import Mark, ParameterSet
from gmm_client.sklearn import (
    RemoteBayesianGaussianMixture,
    RemoteGaussianMixture,
    RemoteKMeans,
    RemoteMiniBatchKMeans,
)
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

#: short prefix -> (sklearn test module, {global name: remote class}).
SUITES: dict[str, tuple[str, dict[str, type]]] = {
    "gm": (
        "sklearn.mixture.tests.test_gaussian_mixture",
        {"GaussianMixture": RemoteGaussianMixture},
    ),
    "bgm": (
        "sklearn.mixture.tests.test_bayesian_mixture",
        {"BayesianGaussianMixture": RemoteBayesianGaussianMixture},
    ),
    "km": (
        "sklearn.cluster.tests.test_k_means",
        {"KMeans": RemoteKMeans, "MiniBatchKMeans": RemoteMiniBatchKMeans},
    ),
}

_LOCAL: dict[str, type] = {
    "GaussianMixture": GaussianMixture,
    "BayesianGaussianMixture": BayesianGaussianMixture,
    "KMeans": KMeans,
    "MiniBatchKMeans": MiniBatchKMeans,
}


def _swap(value: Any, swaps: dict[type, type]) -> Any:
    """``value`` with every local estimator class in it replaced by its remote one."""
    if isinstance(value, type):
        return swaps.get(value, value)
    if isinstance(value, ParameterSet):
        return pytest.param(*_swap(value.values, swaps), marks=value.marks, id=value.id)
    if isinstance(value, tuple):
        return tuple(_swap(v, swaps) for v in value)
    if isinstance(value, list):
        return [_swap(v, swaps) for v in value]
    return value


def _swapped_marks(marks: list[Mark], swaps: dict[type, type]) -> list[Mark]:
    out = []
    for mark in marks:
        if mark.name == "parametrize":
            names, values = mark.args[0], mark.args[1]
            if not isinstance(values, list | tuple):
                values = list(values)  # sklearn passes a few iterators (product, zip)
            mark = pytest.mark.parametrize(names, _swap(values, swaps), **mark.kwargs).mark
        out.append(mark)
    return out


def _expose(prefix: str, module: ModuleType, remote: dict[str, type]) -> None:
    swaps = {_LOCAL[name]: cls for name, cls in remote.items()}
    for name, cls in remote.items():
        setattr(module, name, cls)
    for name, obj in vars(module).items():
        if name.startswith("test_") and callable(obj):
            marks = getattr(obj, "pytestmark", None)
            if marks and not getattr(obj, "_gmm_swapped", False):
                obj.pytestmark = _swapped_marks(list(marks), swaps)
                obj._gmm_swapped = True
            globals()[f"test_{prefix}__{name[len('test_') :]}"] = obj


for _prefix, (_module_name, _remote) in SUITES.items():
    _expose(_prefix, importlib.import_module(_module_name), _remote)
