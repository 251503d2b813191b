"""tests/tools.py: a missing test tool fails under EMOMESH_STRICT_TESTS (what scripts/test.sh and CI
set) and is skipped otherwise, always with the reason."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.tools import STRICT_ENV, require_module, require_tool

ABSENT_TOOL = "emomesh-no-such-tool"


def test_a_present_tool_and_module_are_returned() -> None:
    assert require_tool(Path(sys.executable).name, "unused")
    assert require_module("json", "unused").dumps([]) == "[]"


@pytest.mark.parametrize("value", ["1", "yes"])
def test_strict_mode_fails_with_the_reason(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(STRICT_ENV, value)
    with pytest.raises(pytest.fail.Exception, match=f"{ABSENT_TOOL} is not installed \\(apt-get it\\); {STRICT_ENV}"):
        require_tool(ABSENT_TOOL, "apt-get it")
    with pytest.raises(pytest.fail.Exception, match="the emomesh_no_such_module module is not installed"):
        require_module("emomesh_no_such_module", "pip install it")


@pytest.mark.parametrize("value", [None, "", "0"])
def test_otherwise_a_missing_tool_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv(STRICT_ENV, raising=False)
    else:
        monkeypatch.setenv(STRICT_ENV, value)
    with pytest.raises(pytest.skip.Exception, match=f"{ABSENT_TOOL} is not installed \\(apt-get it\\)$"):
        require_tool(ABSENT_TOOL, "apt-get it")
