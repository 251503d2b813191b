"""The embedded stack that the e2e modules analyse through: vision, audio, text and fusion as their
own processes on free ports, started once per module. Modules that need another stack (chaos,
security) define their own `stack` fixture, which overrides this one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emomesh.stack import Stack, StackConfig


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    wanted = ("vision", "audio", "text", "fusion")
    with Stack(StackConfig.ephemeral(tmp_path_factory.mktemp("stack"), services=wanted)) as running:
        yield running
