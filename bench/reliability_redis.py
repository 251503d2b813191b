"""Redis reliability under the dialog service: how much history survives a SIGKILL of redis-server, and
how many log lines an outage costs.

    python -m bench.reliability_redis --out runs/bench/reliability_redis.json

1. starts redis-server (emomesh.procs.RedisServer: the project's own settings) in a temporary
   directory and the dialog service in this process (offline replies: no LLM), on free ports;
2. writes --turns turns into one session through Chat (a user and an assistant turn per call),
   spread over --spread-s seconds (0: as fast as possible), and kills redis-server with SIGKILL right
   after the last reply;
3. keeps --concurrency Chat calls in flight for --down-s seconds while Redis is down, counting the
   replies, how many said history_available=false, and every log record of WARNING or above;
4. restarts redis-server on the same port and directory, and counts the session's turns it has (and
   how long the first Chat with history took to come back).

To measure other code (say main's, before a change), put its checkout first on the path and run the
file rather than the module, so the service and RedisServer come from there:

    PYTHONPATH=/path/to/main/src:/path/to/main python bench/reliability_redis.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
from redis import Redis

import services.dialog.history
from bench.common import write_results
from emomesh.procs import RedisServer, free_port
from emotion.dialog.v1 import dialog_pb2, dialog_pb2_grpc
from services.dialog.config import DialogSettings
from services.dialog.server import build_server

SESSION = "bench-reliability"
# Which checkout's dialog service and RedisServer are measured.
CODE = str(Path(services.dialog.history.__file__).resolve().parents[2])


class CountingHandler(logging.Handler):
    """Counts records by level and logger instead of printing thousands of lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.by_level: Counter[str] = Counter()
        self.warnings_by_logger: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.by_level[record.levelname] += 1
        if record.levelno >= logging.WARNING:
            self.warnings_by_logger[record.name] += 1
            self.messages[record.getMessage()] += 1

    def reset(self) -> None:
        self.by_level.clear()
        self.warnings_by_logger.clear()
        self.messages.clear()


def dialog_settings(redis_url: str, turns: int) -> DialogSettings:
    return DialogSettings.from_env(
        {
            "EMOMESH_DIALOG_LISTEN": f"127.0.0.1:{free_port()}",
            "EMOMESH_DIALOG_METRICS_PORT": "0",
            "EMOMESH_DIALOG_GRACE_S": "0",
            "EMOMESH_REDIS_URL": redis_url,
            "EMOMESH_DIALOG_HISTORY_MAX_STORED_TURNS": str(max(turns, 2)),
        }
    )


async def chat(stub: dialog_pb2_grpc.DialogServiceStub, message: str) -> dialog_pb2.ReplyInfo:
    info = dialog_pb2.ReplyInfo()
    async for chunk in stub.Chat(dialog_pb2.ChatRequest(session_id=SESSION, message=message)):
        if chunk.WhichOneof("chunk") == "done":
            info = chunk.done
    return info


async def outage_load(stub: dialog_pb2_grpc.DialogServiceStub, concurrency: int, seconds: float) -> dict[str, int]:
    calls = without_history = 0
    deadline = time.monotonic() + seconds

    async def worker(index: int) -> None:
        nonlocal calls, without_history
        n = 0
        while time.monotonic() < deadline:
            info = await chat(stub, f"while down {index}.{n}")
            calls += 1
            without_history += not info.history_available
            n += 1

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return {"calls": calls, "history_available_false": without_history}


def stored_turns(server: RedisServer) -> int:
    client = Redis.from_url(server.url, socket_timeout=5)
    try:
        return sum(int(client.llen(key)) for key in client.scan_iter(match=f"*{SESSION}*"))
    finally:
        client.close()


def persistence_config(server: RedisServer) -> dict[str, str]:
    client = Redis.from_url(server.url, socket_timeout=5, decode_responses=True)
    try:
        return {name: str(client.config_get(name).get(name)) for name in ("appendonly", "appendfsync", "save")}
    finally:
        client.close()


async def run(turns: int, spread_s: float, down_s: float, concurrency: int, state: Path) -> dict[str, Any]:
    counter = CountingHandler()
    root = logging.getLogger()
    root.addHandler(counter)
    root.setLevel(logging.INFO)
    redis = RedisServer(free_port(), state / "redis", state / "redis.log")
    redis.start()
    result: dict[str, Any] = {
        "code": CODE,
        "redis": persistence_config(redis),
        "turns_written": 0,
    }
    server = build_server(dialog_settings(redis.url, turns))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = dialog_pb2_grpc.DialogServiceStub(channel)
            pairs = max(turns // 2, 1)
            begin = time.monotonic()
            for i in range(pairs):
                info = await chat(stub, f"message {i}")
                result["turns_written"] += 2 if info.history_available else 0
                pause = begin + spread_s * (i + 1) / pairs - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
            assert redis.process is not None
            os.kill(redis.process.pid, signal.SIGKILL)
            redis.process.wait()

            counter.reset()
            started = time.monotonic()
            result["outage"] = await outage_load(stub, concurrency, down_s)
            result["outage"]["seconds"] = round(time.monotonic() - started, 2)
            result["outage"]["log_lines"] = dict(counter.by_level)
            result["outage"]["warnings"] = sum(counter.warnings_by_logger.values())
            result["outage"]["warnings_by_logger"] = dict(counter.warnings_by_logger)
            result["outage"]["warning_messages"] = dict(counter.messages.most_common(5))

            counter.reset()
            redis.start()
            result["turns_kept_after_kill_9"] = stored_turns(redis)
            restarted = time.monotonic()
            for _ in range(200):  # 10 s at most
                if (await chat(stub, "after the restart")).history_available:
                    result["history_back_after_restart_s"] = round(time.monotonic() - restarted, 3)
                    break
                await asyncio.sleep(0.05)
            result["recovery_log_lines"] = dict(counter.by_level)
    finally:
        await server.stop()
        redis.stop()
        root.removeHandler(counter)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200, help="turns written before the kill (two per Chat)")
    parser.add_argument("--spread-s", type=float, default=0.0, help="seconds over which to spread the writes")
    parser.add_argument("--down-s", type=float, default=13.0, help="seconds of load while Redis is down")
    parser.add_argument("--concurrency", type=int, default=8, help="Chat calls in flight while Redis is down")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="emomesh-redis-chaos-") as state:
        result = asyncio.run(run(args.turns, args.spread_s, args.down_s, args.concurrency, Path(state)))
    print(json.dumps(result, indent=2))
    write_results(args.out, result)


if __name__ == "__main__":
    main()
