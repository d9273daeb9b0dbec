"""What scikit-learn's own ``conftest.py`` gives its test modules, for running them here
against a live server: the ``global_random_seed`` and ``global_dtype`` fixtures, the
server's address as ``$GMM_URL`` (where the remote estimators look for it), and the
committed exclusions (``excluded.py``) applied as skips with their reason."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from tests.client.sklearn_suite.excluded import EXCLUDED, reason_for
from tests.helpers_server import ServerProcess


@pytest.fixture(scope="session", autouse=True)
def _remote_estimators_use_the_live_server(live_server: ServerProcess) -> Iterator[None]:
    """sklearn's tests build estimators with sklearn's arguments only: the address
    comes from the environment, as a user's would."""
    previous = os.environ.get("GMM_URL")
    os.environ["GMM_URL"] = live_server.base_url
    yield
    if previous is None:
        os.environ.pop("GMM_URL", None)
    else:
        os.environ["GMM_URL"] = previous


# sklearn's float32 runs are opt-in (SKLEARN_RUN_FLOAT32_TESTS=1), and the service
# fits float64 only: the float32 parametrization is skipped as sklearn skips it.
_SKIP32 = pytest.mark.skip(reason="the service fits float64 (sklearn skips float32 by default)")


@pytest.fixture(params=[pytest.param(np.float32, marks=_SKIP32), np.float64])
def global_dtype(request: pytest.FixtureRequest) -> np.dtype:
    return request.param  # type: ignore[no-any-return]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """sklearn's default seed for ``global_random_seed`` (its conftest does the same)."""
    if "global_random_seed" in metafunc.fixturenames:
        metafunc.parametrize("global_random_seed", [42])


_SKLEARN_WARNINGS = "ignore::sklearn.exceptions.ConvergenceWarning"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        if function is None or not function.__module__.startswith("sklearn."):
            continue
        # Exposed as test_<suite>__<name>: look the test up by sklearn's own name.
        ids = item.name[len(getattr(item, "originalname", item.name)) :]
        reason = reason_for(function.__module__, function.__name__ + ids)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
        # sklearn runs its tests with ConvergenceWarning as a warning, not an error (its
        # pyproject errors on deprecations only); a remote fit re-raises the server's.
        item.add_marker(pytest.mark.filterwarnings(_SKLEARN_WARNINGS))


__all__ = ["EXCLUDED"]
