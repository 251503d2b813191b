"""GrpcServer with TLS, mutual TLS, bearer tokens and a plaintext health port, through real grpc.aio
channels made by the shared channel helpers (emomesh.security.open_channel / open_aio_channel).

The fake service answers with the caller the server authenticated (current_caller()), on a unary
method (TextService.AnalyzeText) and a streamed one (DialogService.Chat)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from emomesh.config import ServerSettings
from emomesh.procs import free_port, grpc_healthy
from emomesh.security import (
    ANONYMOUS_CALLER,
    ClientSecurity,
    ClientTls,
    current_caller,
    open_aio_channel,
    open_channel,
)
from emomesh.server import GrpcServer
from emotion.dialog.v1 import dialog_pb2, dialog_pb2_grpc
from emotion.text.v1 import text_pb2, text_pb2_grpc
from tests.pki import Pki, make_pki

SERVICE = "guarded"
ALICE_TOKEN = "alice-token-0123456789"
ALICE_NEXT_TOKEN = "alice-token-rotated-9876543210"
BOB_TOKEN = "bob-token-abcdefghijklmnop"
TEXT_SERVICE = text_pb2.DESCRIPTOR.services_by_name["TextService"].full_name
DIALOG_SERVICE = dialog_pb2.DESCRIPTOR.services_by_name["DialogService"].full_name


class WhoAmI(text_pb2_grpc.TextServiceServicer, dialog_pb2_grpc.DialogServiceServicer):
    async def AnalyzeText(
        self, request: text_pb2.AnalyzeTextRequest, context: grpc.aio.ServicerContext
    ) -> text_pb2.AnalyzeTextResponse:
        return text_pb2.AnalyzeTextResponse(note=current_caller())

    async def Chat(
        self, request: dialog_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[dialog_pb2.ChatChunk]:
        for _ in range(2):
            yield dialog_pb2.ChatChunk(delta=current_caller())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"alice:{ALICE_TOKEN}\nalice:{ALICE_NEXT_TOKEN}\nbob:{BOB_TOKEN}\n")
    return path


def settings(**env: str | Path) -> ServerSettings:
    environ = {f"EMOMESH_{SERVICE.upper()}_{k}": str(v) for k, v in env.items()}
    environ.setdefault(f"EMOMESH_{SERVICE.upper()}_LISTEN", f"127.0.0.1:{free_port()}")
    environ[f"EMOMESH_{SERVICE.upper()}_METRICS_PORT"] = "0"
    environ[f"EMOMESH_{SERVICE.upper()}_GRACE_S"] = "0"
    return ServerSettings.from_env(SERVICE, 1, environ)


@asynccontextmanager
async def running(config: ServerSettings) -> AsyncIterator[GrpcServer]:
    servicer = WhoAmI()

    def register(server: grpc.aio.Server) -> None:
        text_pb2_grpc.add_TextServiceServicer_to_server(servicer, server)
        dialog_pb2_grpc.add_DialogServiceServicer_to_server(servicer, server)

    server = GrpcServer(SERVICE, config, register, [TEXT_SERVICE, DIALOG_SERVICE])
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def who(channel: grpc.aio.Channel) -> str:
    response = await text_pb2_grpc.TextServiceStub(channel).AnalyzeText(text_pb2.AnalyzeTextRequest(), timeout=10)
    return str(response.note)


async def who_streamed(channel: grpc.aio.Channel) -> list[str]:
    call = dialog_pb2_grpc.DialogServiceStub(channel).Chat(dialog_pb2.ChatRequest(), timeout=10)
    return [chunk.delta async for chunk in call]


async def status_of(channel: grpc.aio.Channel) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await who(channel)
    return failed.value.code(), failed.value.details() or ""


def rejected_calls() -> float:
    labels = {"service": SERVICE, "method": "AnalyzeText", "code": "UNAUTHENTICATED"}
    return REGISTRY.get_sample_value("emomesh_rpc_duration_seconds_count", labels) or 0.0


async def test_without_token_auth_every_caller_is_anonymous() -> None:
    async with running(settings()) as server, open_aio_channel(server.address) as channel:
        assert await who(channel) == ANONYMOUS_CALLER
        assert await who_streamed(channel) == [ANONYMOUS_CALLER] * 2


async def test_tokens_name_the_caller_and_everything_else_is_unauthenticated(tokens_file: Path) -> None:
    async with running(settings(AUTH_TOKENS_FILE=tokens_file)) as server:
        for token, caller in ((ALICE_TOKEN, "alice"), (ALICE_NEXT_TOKEN, "alice"), (BOB_TOKEN, "bob")):
            async with open_aio_channel(server.address, ClientSecurity(token=token)) as channel:
                assert await who(channel) == caller
                assert await who_streamed(channel) == [caller] * 2

        before = rejected_calls()
        async with open_aio_channel(server.address) as channel:
            code, details = await status_of(channel)
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert details == "no credentials: send the metadata 'authorization: Bearer <token>'"
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                await who_streamed(channel)
            assert streamed.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with open_aio_channel(server.address, ClientSecurity(token="wrong-token-0123456789")) as channel:
            assert await status_of(channel) == (grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        # Rejections are counted by the observability interceptor, which runs first.
        assert rejected_calls() == before + 2


async def test_health_stays_open_and_reflection_needs_a_token(tokens_file: Path) -> None:
    async with running(settings(AUTH_TOKENS_FILE=tokens_file)) as server:
        async with open_aio_channel(server.address) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            with pytest.raises(grpc.aio.AioRpcError) as reflected:
                async for _ in reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([request]), timeout=10
                ):
                    pass
            assert reflected.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with open_aio_channel(server.address, ClientSecurity(token=BOB_TOKEN)) as channel:
            responses = [
                r
                async for r in reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([request]), timeout=10
                )
            ]
            names = {s.name for s in responses[0].list_services_response.service}
            assert {TEXT_SERVICE, DIALOG_SERVICE} <= names


async def test_tls_server_refuses_plaintext_clients(pki: Pki) -> None:
    async with running(settings(TLS_CERT=pki.server.cert, TLS_KEY=pki.server.key)) as server:
        async with open_aio_channel(server.address, ClientSecurity(ClientTls(pki.ca.read_bytes()))) as channel:
            assert await who(channel) == ANONYMOUS_CALLER
        async with open_aio_channel(server.address) as channel:
            code, _ = await status_of(channel)
            assert code == grpc.StatusCode.UNAVAILABLE
        # A client that does not trust the server's CA (the system roots) does not connect either.
        async with open_aio_channel(server.address, ClientSecurity(ClientTls())) as channel:
            code, _ = await status_of(channel)
            assert code == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_needs_a_client_certificate_from_the_configured_ca(pki: Pki) -> None:
    config = settings(TLS_CERT=pki.server.cert, TLS_KEY=pki.server.key, TLS_CLIENT_CA=pki.ca)
    ca = pki.ca.read_bytes()
    async with running(config) as server:
        good = ClientTls(ca, pki.client.cert.read_bytes(), pki.client.key.read_bytes())
        async with open_aio_channel(server.address, ClientSecurity(good)) as channel:
            assert await who(channel) == ANONYMOUS_CALLER
        rogue = ClientTls(ca, pki.rogue_client.cert.read_bytes(), pki.rogue_client.key.read_bytes())
        for tls in (ClientTls(ca), rogue):
            async with open_aio_channel(server.address, ClientSecurity(tls)) as channel:
                code, _ = await status_of(channel)
                assert code == grpc.StatusCode.UNAVAILABLE


def blocking_who(address: str, security: ClientSecurity) -> str:
    with open_channel(address, security) as channel:
        response = text_pb2_grpc.TextServiceStub(channel).AnalyzeText(text_pb2.AnalyzeTextRequest(), timeout=10)
        return str(response.note)


async def test_tls_and_tokens_together_through_the_blocking_helpers(pki: Pki, tokens_file: Path) -> None:
    """The path the CLI takes (emomesh analyze / health): blocking channels, run in a thread here
    because the server runs on this thread's event loop."""
    config = settings(TLS_CERT=pki.server.cert, TLS_KEY=pki.server.key, AUTH_TOKENS_FILE=tokens_file)
    tls = ClientTls(pki.ca.read_bytes())
    async with running(config) as server:
        assert await asyncio.to_thread(grpc_healthy, server.address, tls=tls)
        assert not await asyncio.to_thread(grpc_healthy, server.address)
        assert await asyncio.to_thread(blocking_who, server.address, ClientSecurity(tls, ALICE_TOKEN)) == "alice"
        with pytest.raises(grpc.RpcError) as unauthenticated:
            await asyncio.to_thread(blocking_who, server.address, ClientSecurity(tls))
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_plaintext_health_port_serves_probes_next_to_a_tls_port(pki: Pki) -> None:
    health_port = free_port()
    config = settings(TLS_CERT=pki.server.cert, TLS_KEY=pki.server.key, HEALTH_PORT=str(health_port))
    async with running(config) as server, open_aio_channel(f"127.0.0.1:{health_port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # Only health is served there.
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await who(channel)
        assert other.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert server.port != health_port
