"""The external tools some tests run (promtool, prometheus, hadolint, kubectl, espeak-ng) and the
optional modules they import (kubernetes_validate).

scripts/setup.sh --dev installs every one of them, and scripts/test.sh (what CI runs) sets
EMOMESH_STRICT_TESTS=1: there a missing tool FAILS the test with the reason, so CI can never pass
with less tested. Outside it (a developer machine set up without the dev tools) the test is
skipped with the same reason, which `pytest -rs` prints."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

STRICT_ENV = "EMOMESH_STRICT_TESTS"


def strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def missing(reason: str) -> NoReturn:
    """Fails the test under EMOMESH_STRICT_TESTS (CI), skips it otherwise; always with the reason.
    Called while a module is imported, it fails (a collection error) or skips the whole module."""
    if strict():
        pytest.fail(f"{reason}; {STRICT_ENV} is set, so a missing test tool is an error", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def find_tool(name: str) -> str | None:
    """The executable on PATH, or next to this Python (where the dev extra installs hadolint and
    kubectl when the virtualenv is not activated)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def require_tool(name: str, install: str) -> str:
    """Path of the executable `name`; `install` says how to get it."""
    path = find_tool(name)
    if path is None:
        missing(f"{name} is not installed ({install})")
    return path


def require_module(name: str, install: str) -> ModuleType:
    """The imported module `name`; `install` says how to get it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"the {name} module is not installed ({install})")
