"""Liveness and readiness of GrpcServer (emomesh.readiness), over real gRPC on loopback: readiness
follows the check and recovers by itself, liveness stays SERVING, the reason reaches `emomesh
health`; the Triton and peer checks; the `emomesh health` command."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from emomesh import cli
from emomesh.config import ServerSettings
from emomesh.procs import free_port
from emomesh.readiness import (
    LIVENESS_SERVICE,
    ReadinessCheck,
    check_gateway,
    check_health,
    peers_readiness,
    triton_model_readiness,
)
from emomesh.server import GrpcServer

SERVICE = "emotion.example.v1.ExampleService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
INTERVAL_S = 0.05


def settings(interval_s: float = INTERVAL_S) -> ServerSettings:
    return ServerSettings(
        listen=f"127.0.0.1:{free_port()}",
        metrics_port=0,
        grace_s=0,
        max_message_bytes=1024 * 1024,
        log_level="INFO",
        readiness_interval_s=interval_s,
    )


@asynccontextmanager
async def running(readiness: ReadinessCheck | None) -> AsyncIterator[tuple[GrpcServer, health_pb2_grpc.HealthStub]]:
    server = GrpcServer("example", settings(), lambda _: None, [SERVICE], readiness=readiness)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield server, health_pb2_grpc.HealthStub(channel)
    finally:
        await server.stop()


async def status(health: health_pb2_grpc.HealthStub, service: str) -> int:
    response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(response.status)


async def eventually(condition: Callable[[], bool]) -> None:
    """Waits for the watcher's next rounds; bounded so that a bug fails instead of hanging."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(INTERVAL_S)
    raise AssertionError("condition never held")


class Switch:
    """A readiness check the test turns on and off, counting its calls."""

    def __init__(self, reason: str | None) -> None:
        self.reason = reason
        self.calls = 0

    async def __call__(self) -> str | None:
        self.calls += 1
        return self.reason


async def test_without_a_check_every_name_is_serving_until_stop() -> None:
    async with running(None) as (server, health):
        for name in ("", SERVICE, LIVENESS_SERVICE):
            assert await status(health, name) == SERVING
        await server.health.stop()
        for name in ("", SERVICE, LIVENESS_SERVICE):
            assert await status(health, name) == NOT_SERVING


async def test_readiness_follows_the_check_and_recovers_by_itself_while_liveness_stays_serving() -> None:
    check = Switch("Triton at x:8001 is not live")
    async with running(check) as (server, health):
        # Checked before the port answered: never SERVING while not ready.
        assert check.calls >= 1
        assert await status(health, "") == NOT_SERVING
        assert await status(health, SERVICE) == NOT_SERVING
        assert await status(health, LIVENESS_SERVICE) == SERVING
        check.reason = None
        await eventually(lambda: server.health.ready is True)
        assert await status(health, "") == SERVING and await status(health, SERVICE) == SERVING
        check.reason = "model m is not ready on Triton at x:8001"
        await eventually(lambda: server.health.ready is False)
        assert await status(health, SERVICE) == NOT_SERVING
        assert await status(health, LIVENESS_SERVICE) == SERVING


async def test_a_check_that_raises_or_hangs_means_not_ready() -> None:
    async def broken() -> str | None:
        raise ConnectionError("boom")

    async with running(broken) as (server, _):
        assert server.health.ready is False
        assert "readiness check failed: ConnectionError('boom')" in (server.health.reason or "")

    async def hanging() -> str | None:
        await asyncio.sleep(60)
        return None

    server = GrpcServer("example", settings(), lambda _: None, [SERVICE], readiness=hanging)
    server.health.timeout_s = 0.2
    await server.start()
    try:
        assert server.health.reason == "readiness check did not answer within 0.2s"
    finally:
        await server.stop()


async def test_emomesh_health_reads_the_reason_and_tells_down_from_not_ready(
    capsys: pytest.CaptureFixture[str],
) -> None:
    down = f"127.0.0.1:{free_port()}"
    async with running(None) as (ready, _), running(Switch("Triton at x:8001 is not live")) as (unready, _):
        assert (await asyncio.to_thread(check_health, ready.address)).serving
        report = await asyncio.to_thread(check_health, unready.address)
        assert (report.status, report.reason) == ("NOT_SERVING", "(Triton at x:8001 is not live)")
        report = await asyncio.to_thread(check_health, down, 0.5)
        assert report.status == "DOWN" and report.reason.startswith("(UNAVAILABLE")

        def health(addresses: dict[str, str]) -> int:
            return cli.main(["health", "--timeout", "0.5", *(f"--address={n}={a}" for n, a in addresses.items())])

        everything_ready = {name: ready.address for name in ("vision", "audio", "text", "fusion", "dialog")}
        assert await asyncio.to_thread(health, everything_ready) == 0
        capsys.readouterr()
        code = await asyncio.to_thread(health, {**everything_ready, "audio": unready.address, "text": down})
        out = capsys.readouterr().out
        assert code == 1
        lines = {line.split()[0]: line for line in out.splitlines()}
        assert lines["vision"].split()[1:] == [ready.address, "SERVING"]
        assert lines["audio"].endswith("NOT_SERVING  (Triton at x:8001 is not live)")
        assert lines["text"].split()[2] == "DOWN" and "(UNAVAILABLE" in lines["text"]
    assert await asyncio.to_thread(cli.main, ["health", "--address", "nope=1.2.3.4:5"]) == 2


class FakeTriton:
    def __init__(self) -> None:
        self.live = True
        self.ready_models = {"m"}

    @property
    def url(self) -> str:
        return "triton:8001"

    async def is_live(self, timeout_s: float | None = None) -> bool:
        return self.live

    async def is_ready(self, model: str, timeout_s: float | None = None) -> bool:
        return model in self.ready_models


async def test_triton_readiness_needs_the_server_live_and_the_model_ready() -> None:
    triton = FakeTriton()
    check = triton_model_readiness(triton, ["m"])
    assert await check() is None
    triton.ready_models.clear()
    assert await check() == "model m is not ready on Triton at triton:8001"
    triton.live = False
    assert await check() == "Triton at triton:8001 is not live"


async def test_peers_readiness_needs_one_peer_serving() -> None:
    down = f"127.0.0.1:{free_port()}"
    async with running(None) as (peer, _), running(Switch("no model")) as (unready, _):
        channels = {
            "vision": grpc.aio.insecure_channel(down),
            "audio": grpc.aio.insecure_channel(unready.address),
            "text": grpc.aio.insecure_channel(peer.address),
        }
        try:
            check = peers_readiness(channels, timeout_s=0.5)
            assert await check() is None
            await peer.health.stop()
            assert await check() == "none is SERVING: vision UNAVAILABLE, audio NOT_SERVING, text NOT_SERVING"
        finally:
            for channel in channels.values():
                await channel.close()
    assert await peers_readiness({})() == "no peer service is configured"


class _Readyz(http.server.BaseHTTPRequestHandler):
    """A gateway's /readyz that answers what the test put in `answer`."""

    answer: tuple[int, bytes] = (200, b"{}")

    def do_GET(self) -> None:
        status, body = self.answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        ((200, b'{"ready": true, "services": {"fusion": "SERVING", "dialog": "SERVING"}}'), "SERVING", ""),
        (
            (503, b'{"ready": false, "services": {"fusion": "SERVING", "dialog": "UNAVAILABLE", "vision": "SERVING"}}'),
            "NOT_SERVING",
            "(dialog UNAVAILABLE)",
        ),
        ((503, b"not json"), "NOT_SERVING", "(HTTP 503)"),
    ],
)
def test_the_gateway_is_checked_by_its_readyz(answer: tuple[int, bytes], status: str, reason: str) -> None:
    handler = type("Handler", (_Readyz,), {"answer": answer})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        report = check_gateway(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert (report.status, report.reason) == (status, reason)


def test_a_gateway_that_is_not_there_is_down() -> None:
    report = check_gateway(f"http://127.0.0.1:{free_port()}", timeout_s=1.0)
    assert report.status == "DOWN"
    assert "refused" in report.reason.lower()
