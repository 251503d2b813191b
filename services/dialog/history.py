"""Per-session conversation history in Redis: one list per session, oldest turn first, each turn a
JSON object with its role, text, perceived emotion and time.

Every call is bounded by a timeout and traced (a client span each); any Redis failure becomes
HistoryUnavailable, which the servicer turns into "reply without history" (Chat, Greeting) or
UNAVAILABLE (GetHistory, ClearHistory)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from google.protobuf import json_format
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from emomesh.metrics import REDIS_ERRORS
from emomesh.tracing import DB_OPERATION, DB_SYSTEM, client_span
from emotion.common.v1 import common_pb2
from services.dialog.config import HistorySettings

log = logging.getLogger(__name__)

# Versioned so that a change of the stored format can live next to old sessions.
KEY_PREFIX = "emomesh:dialog:v1:history:"

Role = Literal["user", "assistant"]
T = TypeVar("T")


@dataclass(frozen=True)
class StoredTurn:
    role: Role
    text: str
    emotion: common_pb2.FusedEmotion | None = None
    time: float = 0.0

    def to_json(self) -> str:
        payload: dict[str, Any] = {"role": self.role, "text": self.text, "time": self.time}
        if self.emotion is not None:
            payload["emotion"] = json_format.MessageToDict(self.emotion)
        return json.dumps(payload, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredTurn | None:
        """None for an entry that is not a turn (corrupt or written by something else): one bad
        entry must not cost the whole session its history."""
        try:
            payload = json.loads(raw)
            role = payload["role"]
            if role not in ("user", "assistant") or not isinstance(payload["text"], str):
                return None
            emotion = None
            if "emotion" in payload:
                emotion = json_format.ParseDict(payload["emotion"], common_pb2.FusedEmotion())
            return cls(role, payload["text"], emotion, float(payload.get("time", 0.0)))
        except (ValueError, KeyError, TypeError, json_format.ParseError):
            return None


class HistoryUnavailable(Exception):
    """Redis could not be reached, failed or did not answer in time."""


def history_key(session_id: str) -> str:
    return KEY_PREFIX + session_id


class HistoryStore:
    def __init__(self, settings: HistorySettings, client: Redis | None = None) -> None:
        self.settings = settings
        self.client = client or Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
            # No client-side retries: the caller degrades (reply without history) instead of waiting.
            retry=Retry(NoBackoff(), 0),
        )

    async def _call(self, operation: str, call: Awaitable[T]) -> T:
        with client_span(f"redis {operation}", {DB_SYSTEM: "redis", DB_OPERATION: operation}):
            try:
                return await asyncio.wait_for(call, self.settings.redis_timeout_s)
            except (RedisError, OSError, TimeoutError) as exc:
                REDIS_ERRORS.labels(operation).inc()
                log.warning(
                    "redis call failed",
                    extra={"fields": {"operation": operation, "error": f"{type(exc).__name__}: {exc}"}},
                )
                raise HistoryUnavailable(f"history store unavailable ({type(exc).__name__})") from exc

    async def recent(self, session_id: str) -> list[StoredTurn]:
        """The last window_turns turns, oldest first. Only the window is read, so a session with a
        huge stored history costs no more than a short one."""
        if self.settings.window_turns == 0:
            return []
        raw = await self._call("read", self.client.lrange(history_key(session_id), -self.settings.window_turns, -1))
        return [turn for turn in map(StoredTurn.from_json, raw) if turn is not None]

    async def all(self, session_id: str) -> list[StoredTurn]:
        """Every stored turn (at most max_stored_turns), oldest first."""
        key = history_key(session_id)
        raw = await self._call("read", self.client.lrange(key, -self.settings.max_stored_turns, -1))
        return [turn for turn in map(StoredTurn.from_json, raw) if turn is not None]

    async def append(self, session_id: str, turns: Sequence[StoredTurn]) -> None:
        """Appends turns, trims the list to max_stored_turns and renews the TTL, in one transaction."""
        key = history_key(session_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(key, *(turn.to_json() for turn in turns))
        pipe.ltrim(key, -self.settings.max_stored_turns, -1)
        pipe.expire(key, self.settings.ttl_s)
        await self._call("write", pipe.execute())

    async def clear(self, session_id: str) -> bool:
        """Deletes the session's history; False when there was none (unknown or expired session)."""
        deleted = await self._call("delete", self.client.delete(history_key(session_id)))
        return bool(deleted)

    async def close(self) -> None:
        await self.client.aclose()
