"""Dialog security with the real dialog server and real redis-servers: with token auth on, each
authenticated caller's sessions are kept apart, even under the same session id; a Redis that
requires a password is used with EMOMESH_REDIS_PASSWORD (and not without it)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
import redis as redis_lib
from redis.asyncio import Redis

from emomesh.procs import RedisServer, free_port
from emomesh.security import ClientSecurity, open_aio_channel
from emotion.dialog.v1 import dialog_pb2, dialog_pb2_grpc
from services.dialog.config import DialogSettings
from services.dialog.history import history_key
from services.dialog.server import build_server
from tests.conftest import service_env

pytestmark = pytest.mark.integration

ALICE_TOKEN = "alice-token-0123456789"
BOB_TOKEN = "bob-token-abcdefghijklmnop"


@asynccontextmanager
async def dialog_as(
    redis_server: RedisServer, tokens_file: Path, **extra_env: str
) -> AsyncIterator[tuple[str, dialog_pb2_grpc.DialogServiceStub, dialog_pb2_grpc.DialogServiceStub]]:
    """The dialog service with token auth (offline replies: no LLM key): its address and a stub per caller."""
    environ = {
        **service_env("dialog"),
        "EMOMESH_DIALOG_GRACE_S": "0",
        "EMOMESH_REDIS_URL": redis_server.url,
        "EMOMESH_DIALOG_AUTH_TOKENS_FILE": str(tokens_file),
        **extra_env,
    }
    server = build_server(DialogSettings.from_env(environ))
    await server.start()
    try:
        async with (
            open_aio_channel(server.address, ClientSecurity(token=ALICE_TOKEN)) as alice,
            open_aio_channel(server.address, ClientSecurity(token=BOB_TOKEN)) as bob,
        ):
            yield server.address, dialog_pb2_grpc.DialogServiceStub(alice), dialog_pb2_grpc.DialogServiceStub(bob)
    finally:
        await server.stop()


async def chat(stub: dialog_pb2_grpc.DialogServiceStub, session_id: str, message: str) -> dialog_pb2.ReplyInfo:
    async for chunk in stub.Chat(dialog_pb2.ChatRequest(session_id=session_id, message=message), timeout=30):
        if chunk.HasField("done"):
            return chunk.done
    raise AssertionError("the stream ended without its final chunk")


async def test_a_caller_cannot_read_or_clear_another_callers_session(redis_server: RedisServer, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{ALICE_TOKEN}\nbob:{BOB_TOKEN}\n")
    session = f"shared-{uuid.uuid4().hex[:12]}"
    async with dialog_as(redis_server, tokens) as (address, alice, bob):
        await chat(alice, session, "my secret plans for tomorrow")

        for call in (
            bob.GetHistory(dialog_pb2.GetHistoryRequest(session_id=session), timeout=10),
            bob.ClearHistory(dialog_pb2.ClearHistoryRequest(session_id=session), timeout=10),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as hidden:
                await call
            assert hidden.value.code() == grpc.StatusCode.NOT_FOUND

        # Bob's own conversation under the same id starts empty and stays his.
        info = await chat(bob, session, "hello")
        assert info.history_available and info.history_turns == 0
        bobs = await bob.GetHistory(dialog_pb2.GetHistoryRequest(session_id=session), timeout=10)
        assert [t.text for t in bobs.turns if t.role == dialog_pb2.Turn.ROLE_USER] == ["hello"]

        alices = await alice.GetHistory(dialog_pb2.GetHistoryRequest(session_id=session), timeout=10)
        assert [t.text for t in alices.turns if t.role == dialog_pb2.Turn.ROLE_USER] == ["my secret plans for tomorrow"]
        await alice.ClearHistory(dialog_pb2.ClearHistoryRequest(session_id=session), timeout=10)
        # Alice's clear left Bob's session alone.
        assert len((await bob.GetHistory(dialog_pb2.GetHistoryRequest(session_id=session), timeout=10)).turns) == 2
        # Without a token there is no caller, so no session at all.
        async with open_aio_channel(address) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
                await dialog_pb2_grpc.DialogServiceStub(anonymous).GetHistory(
                    dialog_pb2.GetHistoryRequest(session_id=session), timeout=10
                )
            assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED

    redis = Redis.from_url(redis_server.url)
    try:
        assert not await redis.exists(history_key("alice", session))
        assert await redis.exists(history_key("bob", session))
        await redis.delete(history_key("bob", session))
    finally:
        await redis.aclose()


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[tuple[RedisServer, str]]:
    """A redis-server of its own (the session's is shared) that requires a password, as in production."""
    server = RedisServer(free_port(), tmp_path / "redis", tmp_path / "redis.log")
    server.start()
    password = "redis-password-for-this-test"
    try:
        with redis_lib.Redis.from_url(server.url) as client:
            client.config_set("requirepass", password)
        yield server, password
    finally:
        server.stop()


async def test_history_reaches_a_redis_that_requires_a_password(
    redis_with_password: tuple[RedisServer, str], tmp_path: Path
) -> None:
    server, password = redis_with_password
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{ALICE_TOKEN}\nbob:{BOB_TOKEN}\n")
    session = f"pw-{uuid.uuid4().hex[:12]}"
    async with dialog_as(server, tokens, EMOMESH_REDIS_PASSWORD=password) as (_, alice, _bob):
        await chat(alice, session, "remember me")
        info = await chat(alice, session, "still there?")
        assert info.history_available and info.history_turns == 2
    async with dialog_as(server, tokens) as (_, alice, _bob):
        info = await chat(alice, session, "and now?")
        assert not info.history_available  # NOAUTH: the reply comes, without history
