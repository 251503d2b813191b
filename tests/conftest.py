"""Fixtures shared by all tests: the real tritonserver and the real redis-server, started once per
test session on free loopback ports, and small media made by the tests themselves."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from emomesh.procs import RedisServer, free_port
from emomesh.server import GrpcServer
from emomesh.tracing import install_tracer_provider, tracing_active
from emomesh.triton_repo import RenderOptions, render_repository
from emomesh.tritonserver import TritonPorts, TritonServer


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The bundled tritonserver binary serving the project's ONNX models through the Python backend."""
    state = tmp_path_factory.mktemp("triton")
    render_repository(state / "repo", RenderOptions("local"))
    server = TritonServer(
        state / "repo", state, TritonPorts(free_port(), free_port(), free_port()), state / "triton.log"
    )
    server.start()
    try:
        server.wait_ready(180)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    state = tmp_path_factory.mktemp("redis")
    server = RedisServer(free_port(), state / "data", state / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def service_env(service: str, triton: TritonServer | None = None, **overrides: str) -> dict[str, str]:
    """Environment of one service run in-process by a test: a free loopback port, no metrics port
    (many servers start in one session), Triton if given, then the test's own settings."""
    env = {
        f"EMOMESH_{service.upper()}_LISTEN": f"127.0.0.1:{free_port()}",
        f"EMOMESH_{service.upper()}_METRICS_PORT": "0",
    }
    if triton is not None:
        env["EMOMESH_TRITON_URL"] = triton.grpc_url
    env.update(overrides)
    return env


@asynccontextmanager
async def serving(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    """Starts a built service, yields a real gRPC channel to it, then closes both."""
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield channel
    finally:
        await server.stop()


_RECORDED_SPANS = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans finished during the test, kept in memory. Its first use installs the SDK's
    TracerProvider as the process's global one (OpenTelemetry allows one per process, which the
    in-process services share), so tests after it run traced too, which changes nothing they see."""
    if not tracing_active():
        provider = TracerProvider(resource=Resource.create({"service.name": "emomesh-tests"}))
        provider.add_span_processor(SimpleSpanProcessor(_RECORDED_SPANS))
        assert install_tracer_provider(provider)
    # Installed by anything else, it would not record into _RECORDED_SPANS.
    installed = trace.get_tracer_provider()
    assert isinstance(installed, TracerProvider)
    assert installed.resource.attributes.get("service.name") == "emomesh-tests"
    _RECORDED_SPANS.clear()
    yield _RECORDED_SPANS
    _RECORDED_SPANS.clear()


def encode(image: np.ndarray, ext: str = ".jpg") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="session")
def astronaut_jpeg() -> bytes:
    """A real photograph with one frontal, smiling face (skimage's astronaut, public domain)."""
    from skimage import data

    return encode(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="session")
def faceless_png() -> bytes:
    """A drawn image with shapes but no face."""
    image = np.full((240, 320, 3), 230, np.uint8)
    cv2.rectangle(image, (20, 30), (120, 200), (40, 90, 200), -1)
    cv2.circle(image, (230, 120), 60, (20, 160, 60), -1)
    return encode(image, ".png")


def fixture_path(name: str) -> Path:
    return Path(__file__).parent / "fixtures" / name


__all__ = ["encode", "fixture_path", "io"]
