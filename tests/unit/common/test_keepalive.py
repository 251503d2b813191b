"""Keepalive pings during a long call (emomesh.server.grpc_options / server_options) through a real
GrpcServer: a client that pings while it waits for a slow answer keeps its call, where a server with
gRPC's default ping policy cuts it with GOAWAY "too_many_pings".

The intervals are scaled down from the real 30 s / 10 s (and the ratio kept below it) so that the
cut comes within seconds."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from emomesh import server as server_module
from emomesh.config import ServerSettings
from emomesh.procs import free_port
from emomesh.server import GrpcServer, grpc_options
from emotion.text.v1 import text_pb2, text_pb2_grpc

SERVICE = "slow"
CLIENT_PING_MS = 1_000
SERVER_MIN_PING_MS = 500
ANSWER_AFTER_S = 8.0  # the default policy cuts such a call after 4-5 s
TEXT_SERVICE = text_pb2.DESCRIPTOR.services_by_name["TextService"].full_name


class SlowText(text_pb2_grpc.TextServiceServicer):
    async def AnalyzeText(
        self, request: text_pb2.AnalyzeTextRequest, context: grpc.aio.ServicerContext
    ) -> text_pb2.AnalyzeTextResponse:
        await asyncio.sleep(ANSWER_AFTER_S)
        return text_pb2.AnalyzeTextResponse(note="answered")


async def slow_call(address: str) -> str:
    options = grpc_options(1 << 20, keepalive_time_ms=CLIENT_PING_MS)
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = text_pb2_grpc.TextServiceStub(channel)
        response = await stub.AnalyzeText(text_pb2.AnalyzeTextRequest(), timeout=3 * ANSWER_AFTER_S)
    return str(response.note)


def test_servers_accept_pings_three_times_as_often_as_clients_send_them() -> None:
    assert server_module.MIN_PING_INTERVAL_MS * 3 <= server_module.KEEPALIVE_TIME_MS


async def test_a_long_call_keeps_its_connection_while_the_client_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "MIN_PING_INTERVAL_MS", SERVER_MIN_PING_MS)
    environ = {
        f"EMOMESH_{SERVICE.upper()}_LISTEN": f"127.0.0.1:{free_port()}",
        f"EMOMESH_{SERVICE.upper()}_METRICS_PORT": "0",
        f"EMOMESH_{SERVICE.upper()}_GRACE_S": "0",
    }
    settings = ServerSettings.from_env(SERVICE, 1, environ)
    servicer = SlowText()
    server = GrpcServer(
        SERVICE, settings, lambda s: text_pb2_grpc.add_TextServiceServicer_to_server(servicer, s), [TEXT_SERVICE]
    )
    await server.start()
    try:
        assert await slow_call(settings.listen) == "answered"
    finally:
        await server.stop()


async def test_without_the_ping_policy_the_same_call_is_cut() -> None:
    # The failure the policy prevents, so that the test above is known to exercise it.
    bare = grpc.aio.server()
    text_pb2_grpc.add_TextServiceServicer_to_server(SlowText(), bare)
    port = bare.add_insecure_port("127.0.0.1:0")
    await bare.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await slow_call(f"127.0.0.1:{port}")
        assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Too many pings" in (cut.value.details() or "")
    finally:
        await bare.stop(None)
