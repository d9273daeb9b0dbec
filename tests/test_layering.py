"""Imports point one way (STYLE.md): read from the source, so a shortcut fails here
before a reviewer has to spot it.

- the domain never imports the app's ``Settings`` nor HTTP (FastAPI, Starlette), not
  even for type checking;
- nothing reaches into a service's private state (its store, runner or fit slots);
- one method writes models to the store (``Catalogue.save``);
- no module imports another's private names.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest

from service.config import Settings
from service.domain.training.estimators import ALGORITHMS
from service.schemas.models import FitRequest
from service.services import limits_from

SERVICE = Path(__file__).resolve().parents[1] / "service"
DOMAIN = sorted((SERVICE / "domain").rglob("*.py"))
ALL = sorted(SERVICE.rglob("*.py"))

#: Modules the domain must not import, by their top-level or dotted name.
FORBIDDEN_IN_DOMAIN = ("service.config", "fastapi", "starlette", "pydantic_settings")
#: What a service keeps to itself; its public methods stand in for these.
SERVICE_INTERNALS = frozenset({"store", "settings", "fit_runner", "fit_slots"})
#: The names services go by where they are used (route parameters, constructor fields).
SERVICE_NAMES = frozenset(
    {"services", "catalogue", "datasets", "jobs", "training", "inference", "analysis"}
)


def _rel(path: Path) -> str:
    return str(path.relative_to(SERVICE.parent))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imported_modules(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Every module an import statement names, anywhere in the file (``TYPE_CHECKING``
    blocks and function bodies too); ``from service import config`` counts as
    ``service.config``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _forbids(module: str, forbidden: str) -> bool:
    return module == forbidden or module.startswith(forbidden + ".")


@pytest.mark.parametrize("path", DOMAIN, ids=_rel)
def test_domain_imports_neither_settings_nor_http(path: Path) -> None:
    found = [
        f"{_rel(path)}:{line} imports {module}"
        for line, module in _imported_modules(_tree(path))
        for forbidden in FORBIDDEN_IN_DOMAIN
        if _forbids(module, forbidden)
    ]
    assert not found, "the domain is built with the values it needs:\n" + "\n".join(found)


@pytest.mark.parametrize("path", ALL, ids=_rel)
def test_no_module_imports_private_names_of_another(path: Path) -> None:
    found = [
        f"{_rel(path)}:{node.lineno} imports {alias.name} from {node.module}"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.ImportFrom) and _forbids(node.module or "", "service")
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.endswith("__")
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("path", ALL, ids=_rel)
def test_no_module_reaches_into_a_service(path: Path) -> None:
    """``training._fit_runner``, ``catalogue.store`` and the like, outside the class."""
    found = [
        f"{_rel(path)}:{node.lineno} uses {node.value.id}.{node.attr}"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in SERVICE_NAMES
        and (node.attr in SERVICE_INTERNALS or node.attr.startswith("_"))
    ]
    assert not found, "use the service's public methods:\n" + "\n".join(found)


def test_one_method_puts_models_in_the_store() -> None:
    """Fits, model selection's winner and imports are all stored by
    ``Catalogue.save``, so that every stored model is described alike."""
    callers = []
    for path in ALL:
        if path.parent.name == "store":
            continue
        tree = _tree(path)
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "put"
                    and "store" in ast.unparse(node.func.value)
                ):
                    callers.append(f"{_rel(path)}:{fn.name}")
    assert callers == ["service/domain/catalogue/service.py:save"]


def test_limits_come_from_the_settings_of_the_same_names() -> None:
    settings = Settings(max_points=7, max_grid_cells=3)
    limits = limits_from(settings)
    for field in dataclasses.fields(limits):
        assert getattr(limits, field.name) == getattr(settings, field.name)
    assert (limits.max_points, limits.max_grid_cells) == (7, 3)


def test_the_schemas_know_exactly_the_fitted_algorithms() -> None:
    """``estimators.ALGORITHMS`` is the one list; the request union must offer no more
    and no fewer (problem locations strip these tags from pydantic's)."""
    union = get_args(FitRequest)[0]
    tags = {get_args(m.model_fields["algorithm"].annotation)[0] for m in get_args(union)}
    assert tags == set(ALGORITHMS)


#: The one module allowed to use scikit-learn's private names.
SKLEARN_COMPAT = SERVICE / "domain" / "sklearn_compat.py"


@functools.cache
def _sklearn_private_names() -> frozenset[str]:
    """Private attributes and methods of the estimators the service uses, as the
    installed scikit-learn has them (fitted ones included), plus those that
    ``sklearn_compat`` lists, in case a release has dropped one."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.datasets import make_blobs
    from sklearn.decomposition import PCA
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    from service.domain.sklearn_compat import PRIVATE_NAMES

    X, _ = make_blobs(n_samples=30, centers=2, random_state=0)
    fitted = [
        GaussianMixture(2, random_state=0).fit(X),
        BayesianGaussianMixture(n_components=2, random_state=0, max_iter=300).fit(X),
        KMeans(2, n_init=1, random_state=0).fit(X),
        MiniBatchKMeans(2, n_init=1, random_state=0, batch_size=10).fit(X),
        PCA(2).fit(X),
    ]
    names = {name for est in fitted for name in [*dir(type(est)), *vars(est)]}
    names |= {name.rsplit(".", 1)[1] for name in PRIVATE_NAMES}
    return frozenset(n for n in names if n.startswith("_") and not n.endswith("__"))


def _sklearn_bound_names(tree: ast.Module) -> set[str]:
    """Local names bound to sklearn modules or objects by the file's imports."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _forbids(alias.name, "sklearn"):
                    bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and _forbids(node.module or "", "sklearn"):
            bound.update(alias.asname or alias.name for alias in node.names)
    return bound


def _private_sklearn_uses(tree: ast.Module, private: frozenset[str]) -> Iterator[tuple[int, str]]:
    """Imports of private sklearn names or modules; ``sklearn.x._y`` chains (from any
    name an sklearn import bound); ``obj._name`` where ``_name`` is a private member
    of sklearn's estimators (on anything but ``self``/``cls``); and such a name as a
    string, as ``getattr(est, "_counts")`` or a dict of method overrides has it."""
    bound = _sklearn_bound_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _forbids(node.module or "", "sklearn"):
            parts = (node.module or "").split(".")
            for alias in node.names:
                if any(p.startswith("_") for p in [*parts, alias.name]):
                    yield node.lineno, f"from {node.module} import {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "sklearn" and any(p.startswith("_") for p in parts):
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.endswith("__"):
                continue
            root: ast.expr = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            from_sklearn = isinstance(root, ast.Name) and root.id in bound
            on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if from_sklearn or (node.attr in private and not on_self):
                yield node.lineno, ast.unparse(node)
        elif isinstance(node, ast.Constant) and node.value in private:
            yield node.lineno, repr(node.value)


@pytest.mark.parametrize("path", [p for p in ALL if p != SKLEARN_COMPAT], ids=_rel)
def test_only_sklearn_compat_uses_private_sklearn_names(path: Path) -> None:
    """A scikit-learn upgrade can remove any private name; service/domain/sklearn_compat.py
    wraps each one, so that its tests say which moved and one file needs changing."""
    private = _sklearn_private_names()
    found = [
        f"{_rel(path)}:{line} uses {what}"
        for line, what in _private_sklearn_uses(_tree(path), private)
    ]
    assert not found, "use (or add) a wrapper in service/domain/sklearn_compat.py:\n" + "\n".join(
        found
    )


def test_the_private_name_scan_finds_each_kind_of_use() -> None:
    """The scan above is only worth its silence if it finds what it looks for."""
    source = """
import sklearn.utils._openmp_helpers
from sklearn.mixture import _gaussian_mixture as _gm
from sklearn.utils._array_api import logsumexp
from sklearn.utils.validation import _check_sample_weight
import sklearn
from sklearn import cluster
sklearn.mixture._base
cluster._kmeans
est._estimate_weighted_log_prob(X)
km._n_threads = 1
getattr(est, "_counts", None)
self._estimate_weighted_log_prob(X)
self._lock
other._lock
"""
    found = [
        what
        for _, what in sorted(_private_sklearn_uses(ast.parse(source), _sklearn_private_names()))
    ]
    assert found == [
        "import sklearn.utils._openmp_helpers",
        "from sklearn.mixture import _gaussian_mixture",
        "from sklearn.utils._array_api import logsumexp",
        "from sklearn.utils.validation import _check_sample_weight",
        "sklearn.mixture._base",
        "cluster._kmeans",
        "est._estimate_weighted_log_prob",
        "km._n_threads",
        "'_counts'",
    ], found
