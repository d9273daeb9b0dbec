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
