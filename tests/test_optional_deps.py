"""``require`` and ``require_executable`` (tests/conftest.py): a missing optional test
dependency skips on a developer's machine and fails under CI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import in_ci, require, require_executable

ABSENT_MODULE = "gmm_no_such_module_for_tests"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("", False),
        ("0", False),
        ("false", False),
        ("False", False),
        ("no", False),
        ("true", True),
        ("1", True),
        ("yes", True),
    ],
)
def test_in_ci_reads_the_ci_variable(
    value: str | None, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_present_module_is_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert require("json") is sys.modules["json"]


def test_missing_module_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=ABSENT_MODULE) as skipped:
        require(ABSENT_MODULE)
    assert skipped.value.allow_module_level, "test modules call it at import"


def test_missing_module_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"{ABSENT_MODULE}.*CI must run"):
        require(ABSENT_MODULE)


def test_executable_by_path_and_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert require_executable(sys.executable, "python") == sys.executable
    assert require_executable("sh", "the shell") is not None


def test_missing_or_not_executable_skips_outside_ci_and_fails_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_executable = tmp_path / "tool"
    not_executable.write_text("#!/bin/sh\n")
    for program in (tmp_path / "absent", not_executable, "gmm-no-such-program"):
        monkeypatch.delenv("CI", raising=False)
        with pytest.raises(pytest.skip.Exception, match="apt-get install it"):
            require_executable(program, "apt-get install it")
        monkeypatch.setenv("CI", "1")
        with pytest.raises(pytest.fail.Exception, match="CI must run"):
            require_executable(program, "apt-get install it")
