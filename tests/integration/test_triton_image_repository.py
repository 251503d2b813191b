"""The warm-up that deploy/docker/triton.Dockerfile adds to every model runs in the real tritonserver:
the models load with it and report it in their configuration."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from emomesh.procs import free_port
from emomesh.triton_repo import RenderOptions, render_repository
from emomesh.tritonserver import TritonPorts, TritonServer
from tests.unit.deploy.test_docker import triton_repository

pytestmark = pytest.mark.integration


def test_models_load_with_their_warmup_samples(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    # The local variant (Python backend on CPU): the only backend the bundled tritonserver has.
    render_repository(repository, RenderOptions("local"))
    names = triton_repository.prepare_repository(repository)
    assert names
    server = TritonServer(repository, tmp_path, TritonPorts(free_port(), free_port(), free_port()), tmp_path / "log")
    server.start()
    try:
        server.wait_ready(180)
        for name in names:
            url = f"http://127.0.0.1:{server.ports.http}/v2/models/{name}/config"
            with urllib.request.urlopen(url, timeout=10) as response:
                config = json.loads(response.read())
            assert [w["batch_size"] for w in config["model_warmup"]] == sorted({1, config["max_batch_size"]})
    finally:
        server.stop()
