"""Per-session conversation history in Redis: one list per session, oldest turn first, each turn a
JSON object with its role, text, perceived emotion and time.

A session belongs to the caller that created it: the key holds the authenticated caller's name
(emomesh.security.current_caller(); "anonymous" for every caller of a service without token auth),
so one caller cannot read or clear another's session even when it knows the session id.

Every call is bounded by a timeout and traced (a client span each); any Redis failure becomes
HistoryUnavailable, which the servicer turns into "reply without history" (Chat, Greeting) or
UNAVAILABLE (GetHistory, ClearHistory)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from google.protobuf import json_format
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from emomesh.logs import OutageLog
from emomesh.metrics import REDIS_ERRORS
from emomesh.tracing import DB_OPERATION, DB_SYSTEM, client_span
from emotion.common.v1 import common_pb2
from services.dialog.config import HistorySettings

log = logging.getLogger(__name__)

OUTAGE_LOG_INTERVAL_S = 10.0

# Versioned so that a change of the stored format can live next to old sessions. v2: keys are
# <prefix><caller>:<session id>; v1 keys (no caller) are no longer read and expire with their TTL.
KEY_PREFIX = "emomesh:dialog:v2:history:"

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


def history_key(caller: str, session_id: str) -> str:
    # Caller names cannot contain ":" (emomesh.security.CALLER_NAME), so the key is unambiguous.
    return f"{KEY_PREFIX}{caller}:{session_id}"


class TurnHistory(Protocol):
    """What the dialog servicer needs from the history store: HistoryStore (Redis), or a fake in
        unit tests. Sessions belong to the authenticated caller (emomesh.security.current_caller): the
    same session id of two callers is two sessions. Every method raises HistoryUnavailable when the
    store cannot answer."""

    async def recent(self, caller: str, session_id: str) -> list[StoredTurn]: ...

    async def all(self, caller: str, session_id: str) -> list[StoredTurn]: ...

    async def append(self, caller: str, session_id: str, turns: Sequence[StoredTurn]) -> None: ...

    async def clear(self, caller: str, session_id: str) -> bool: ...


class HistoryStore:
    def __init__(self, settings: HistorySettings, client: Redis | None = None) -> None:
        self.settings = settings
        self.client = client or Redis.from_url(
            settings.redis_url,
            # A password in the URL wins over this one.
            password=settings.redis_password,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
            # No client-side retries: the caller degrades (reply without history) instead of waiting.
            retry=Retry(NoBackoff(), 0),
        )
        # While Redis is down every call fails: one warning when it goes down, then a summary at most
        # every OUTAGE_LOG_INTERVAL_S, not a line per call (REDIS_ERRORS counts each one).
        self.outage = OutageLog(log, "redis", OUTAGE_LOG_INTERVAL_S)

    async def _call(self, operation: str, call: Awaitable[T]) -> T:
        with client_span(f"redis {operation}", {DB_SYSTEM: "redis", DB_OPERATION: operation}):
            try:
                result = await asyncio.wait_for(call, self.settings.redis_timeout_s)
            except (RedisError, OSError, TimeoutError) as exc:
                REDIS_ERRORS.labels(operation).inc()
                self.outage.failure(exc, operation=operation)
                raise HistoryUnavailable(f"history store unavailable ({type(exc).__name__})") from exc
        self.outage.success()
        return result

    async def recent(self, caller: str, session_id: str) -> list[StoredTurn]:
        """The last window_turns turns, oldest first. Only the window is read, so a session with a
        huge stored history costs no more than a short one."""
        if self.settings.window_turns == 0:
            return []
        key = history_key(caller, session_id)
        raw = await self._call("read", self.client.lrange(key, -self.settings.window_turns, -1))
        return [turn for turn in map(StoredTurn.from_json, raw) if turn is not None]

    async def all(self, caller: str, session_id: str) -> list[StoredTurn]:
        """Every stored turn (at most max_stored_turns), oldest first."""
        key = history_key(caller, session_id)
        raw = await self._call("read", self.client.lrange(key, -self.settings.max_stored_turns, -1))
        return [turn for turn in map(StoredTurn.from_json, raw) if turn is not None]

    async def append(self, caller: str, session_id: str, turns: Sequence[StoredTurn]) -> None:
        """Appends turns, trims the list to max_stored_turns and renews the TTL, in one transaction."""
        key = history_key(caller, session_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(key, *(turn.to_json() for turn in turns))
        pipe.ltrim(key, -self.settings.max_stored_turns, -1)
        pipe.expire(key, self.settings.ttl_s)
        await self._call("write", pipe.execute())

    async def clear(self, caller: str, session_id: str) -> bool:
        """Deletes the session's history; False when there was none (unknown or expired session)."""
        deleted = await self._call("delete", self.client.delete(history_key(caller, session_id)))
        return bool(deleted)

    async def close(self) -> None:
        await self.client.aclose()
