"""requirements.lock agrees with pyproject.toml. The service images (deploy/docker/service.Dockerfile) and
scripts/setup.sh install with the lock as constraints, so a requirement the lock does not satisfy would
fail the image build, and one it does not pin would be installed at whatever version is newest that day."""

from __future__ import annotations

import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from tests.dependency_tree import LOCK_FILE, declared, extras, full_tree, lock, model_wheels

# The installer's own tooling: the virtualenv provides it and `pip freeze` leaves it out.
INSTALLER_TOOLING = {"pip", "setuptools", "wheel"}


def test_every_line_pins_one_distribution_to_one_version() -> None:
    names = []
    for line in LOCK_FILE.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[^\s=;+]+", text), f"not a plain pin: {line!r}"
        name, version = text.split("==")
        try:
            Version(version)
        except InvalidVersion:
            raise AssertionError(f"{line!r}: {version!r} is not a version") from None
        names.append(canonicalize_name(name))
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert duplicates == []


def test_every_requirement_of_pyproject_is_pinned_within_its_range() -> None:
    pins = lock()
    requirements = [*declared(), *(r for extra in extras() for r in declared(extra))]
    requirements += [Requirement(name) for name in model_wheels()]
    problems = []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement} is not pinned")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement}: the lock pins {pins[name]}")
    assert problems == []


def test_the_lock_pins_the_whole_dependency_tree_and_nothing_else() -> None:
    """Through the installed distributions' metadata: everything the runtime dependencies, the extras and
    the model wheels need is pinned, and every pin is needed by one of them."""
    pins = set(lock())
    tree = full_tree() - INSTALLER_TOOLING
    assert sorted(tree - pins) == [], "in the dependency tree but not pinned"
    assert sorted(pins - tree) == [], "pinned but needed by nothing pyproject.toml declares"
