"""Chaos: redis-server killed with SIGKILL under the dialog service, then restarted on the same port and
directory. The service keeps answering without history and logs the outage a bounded number of
times; afterwards history resumes, and what Redis acknowledged before the kill was replayed from the
append-only file. Its own redis-server (the session's is shared with other tests)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import grpc
import pytest

from emomesh.procs import RedisServer, free_port
from emotion.dialog.v1 import dialog_pb2
from tests.integration.test_dialog import chat, dialog_service, new_session, settings

pytestmark = pytest.mark.integration

HISTORY_LOGGER = "services.dialog.history"
# Turn pairs (user + assistant) written well before the kill, and right before it.
EARLY_PAIRS = 15
LAST_PAIRS = 5
CALLS_WHILE_DOWN = 200


def kill_9(server: RedisServer) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()


async def test_redis_kill_9_degrades_to_no_history_then_resumes_from_the_aof(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=HISTORY_LOGGER)
    redis = RedisServer(free_port(), tmp_path / "data", tmp_path / "redis.log")
    redis.start()
    session = new_session()
    try:
        async with dialog_service(settings(redis.url, None, api_key=None)) as stub:
            for i in range(EARLY_PAIRS):
                _, info = await chat(stub, session_id=session, message=f"early message {i}")
                assert info.history_available
            early = [
                (t.role, t.text)
                for t in (await stub.GetHistory(dialog_pb2.GetHistoryRequest(session_id=session))).turns
            ]
            assert len(early) == 2 * EARLY_PAIRS
            # Older than the AOF's fsync interval by the time of the kill.
            await asyncio.sleep(1.1)
            for i in range(LAST_PAIRS):
                await chat(stub, session_id=session, message=f"last message {i}")

            kill_9(redis)
            for i in range(CALLS_WHILE_DOWN):
                deltas, info = await chat(stub, session_id=session, message=f"while down {i}")
                assert deltas and not info.history_available and info.history_turns == 0
            with pytest.raises(grpc.aio.AioRpcError) as down:
                await stub.GetHistory(dialog_pb2.GetHistoryRequest(session_id=session))
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE
            warnings = [r for r in caplog.records if r.name == HISTORY_LOGGER and r.levelno >= logging.WARNING]
            # One line for the outage, not one per failed call (a summary only after 10 s).
            assert len(warnings) <= 2, [r.getMessage() for r in warnings]
            assert warnings[0].getMessage() == "redis unavailable"

            redis.start()  # the same port and directory
            _, info = await chat(stub, session_id=session, message="after the restart")
            assert info.history_available and info.history_turns > 0
            stored = [
                (t.role, t.text)
                for t in (await stub.GetHistory(dialog_pb2.GetHistoryRequest(session_id=session))).turns
            ]
    finally:
        redis.stop()

    # Everything written at least a second before the kill is back, in order; nothing written
    # while Redis was down is (those replies said history_available=false).
    assert stored[: 2 * EARLY_PAIRS] == early
    assert stored[-2][1] == "after the restart"
    assert not any(text.startswith("while down") for _, text in stored)
    recovered = [r for r in caplog.records if r.name == HISTORY_LOGGER and r.getMessage() == "redis available again"]
    assert len(recovered) == 1 and recovered[0].levelno == logging.INFO
