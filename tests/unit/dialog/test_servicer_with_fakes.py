"""DialogServicer with a fake LLM and a fake history store (both implement the servicer's Protocols,
ChatLlm and TurnHistory); the real Redis and an OpenAI-compatible server are in
tests/integration/test_dialog.py."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import cast

import grpc
import pytest

from emomesh.errors import NotFound, Unavailable
from emomesh.labels import top_label
from emotion.dialog.v1 import dialog_pb2
from services.dialog.config import DialogSettings
from services.dialog.history import HistoryUnavailable, StoredTurn
from services.dialog.llm import LlmInterrupted, LlmResult, LlmUnavailable
from services.dialog.prompts import Message
from services.dialog.servicer import DialogServicer
from tests.unit.dialog.helpers import emotion_context


class FakeLlm:
    """Streams `deltas`, then fails with `error_after` if set; records the prompts it was given."""

    configured = True
    model = "fake-llm"

    def __init__(self, deltas: Sequence[str], error_after: LlmUnavailable | None = None) -> None:
        self.deltas = list(deltas)
        self.error_after = error_after
        self.prompts: list[Sequence[Message]] = []

    async def stream_chat(
        self, messages: Sequence[Message], result: LlmResult, caller_limit_s: float | None = None
    ) -> AsyncGenerator[str, None]:
        self.prompts.append(messages)
        for delta in self.deltas:
            result.text += delta
            yield delta
        if self.error_after is not None:
            raise self.error_after
        result.model = self.model

    async def complete(
        self, messages: Sequence[Message], operation: str, caller_limit_s: float | None = None
    ) -> LlmResult:
        self.prompts.append(messages)
        return LlmResult(text="".join(self.deltas), model=self.model)


class FakeHistory:
    """Sessions in a dict; every call raises HistoryUnavailable while `down`."""

    def __init__(self) -> None:
        self.sessions: dict[str, list[StoredTurn]] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise HistoryUnavailable("history store unavailable (ConnectionError)")

    async def recent(self, caller: str, session_id: str) -> list[StoredTurn]:
        self._check()
        return self.sessions.get(session_id, [])[-10:]

    async def all(self, caller: str, session_id: str) -> list[StoredTurn]:
        self._check()
        return list(self.sessions.get(session_id, []))

    async def append(self, caller: str, session_id: str, turns: Sequence[StoredTurn]) -> None:
        self._check()
        self.sessions.setdefault(session_id, []).extend(turns)

    async def clear(self, caller: str, session_id: str) -> bool:
        self._check()
        return self.sessions.pop(session_id, None) is not None


class FakeContext:
    def time_remaining(self) -> float | None:
        return 10.0


# Chat only asks its context for the time left.
CONTEXT = cast(grpc.aio.ServicerContext, FakeContext())


def make(llm: FakeLlm, history: FakeHistory) -> DialogServicer:
    return DialogServicer(DialogSettings.from_env({}), llm, history)


async def chat(servicer: DialogServicer, message: str, session_id: str = "s1") -> tuple[str, dialog_pb2.ReplyInfo]:
    deltas, info = [], None
    async for chunk in servicer.Chat(dialog_pb2.ChatRequest(session_id=session_id, message=message), CONTEXT):
        if chunk.WhichOneof("chunk") == "delta":
            deltas.append(chunk.delta)
        else:
            info = chunk.done
    assert info is not None, "the stream ends with a ReplyInfo"
    return "".join(deltas), info


async def test_chat_streams_the_reply_stores_the_turn_and_reads_it_back() -> None:
    llm, history = FakeLlm(["Glad ", "to hear it!"]), FakeHistory()
    servicer = make(llm, history)
    reply, info = await chat(servicer, "I passed my exam")
    assert reply == "Glad to hear it!"
    assert (info.reply, info.model, info.fallback, info.history_available) == (reply, "fake-llm", False, True)
    assert [(t.role, t.text) for t in history.sessions["s1"]] == [("user", "I passed my exam"), ("assistant", reply)]
    _, again = await chat(servicer, "And now?")
    assert again.history_turns == 2
    assert any(m["content"] == "I passed my exam" for m in llm.prompts[1])


async def test_a_reply_cut_mid_stream_is_completed_by_the_fallback() -> None:
    llm = FakeLlm(["Well, "], error_after=LlmInterrupted("LLM endpoint timed out"))
    history = FakeHistory()
    reply, info = await chat(make(llm, history), "I lost my keys")
    assert reply.startswith("Well, ") and len(reply) > len("Well, ")
    assert info.fallback and info.fallback_reason == "LLM endpoint timed out"
    assert history.sessions["s1"][-1].text == reply


async def test_without_the_history_store_chat_still_answers_and_the_history_calls_are_unavailable() -> None:
    history = FakeHistory()
    history.down = True
    servicer = make(FakeLlm(["Hello!"]), history)
    reply, info = await chat(servicer, "hi")
    assert reply == "Hello!" and not info.history_available
    with pytest.raises(Unavailable, match="history store unavailable"):
        await servicer.GetHistory(dialog_pb2.GetHistoryRequest(session_id="s1"), CONTEXT)
    with pytest.raises(Unavailable, match="history store unavailable"):
        await servicer.ClearHistory(dialog_pb2.ClearHistoryRequest(session_id="s1"), CONTEXT)


async def test_history_of_an_unknown_session_is_not_found() -> None:
    servicer = make(FakeLlm(["Hello!"]), FakeHistory())
    with pytest.raises(NotFound, match="'nobody' is unknown or has expired"):
        await servicer.GetHistory(dialog_pb2.GetHistoryRequest(session_id="nobody"), CONTEXT)
    await chat(servicer, "hi", session_id="somebody")
    response = await servicer.GetHistory(dialog_pb2.GetHistoryRequest(session_id="somebody"), CONTEXT)
    assert [t.role for t in response.turns] == [dialog_pb2.Turn.ROLE_USER, dialog_pb2.Turn.ROLE_ASSISTANT]
    await servicer.ClearHistory(dialog_pb2.ClearHistoryRequest(session_id="somebody"), CONTEXT)
    with pytest.raises(NotFound):
        await servicer.ClearHistory(dialog_pb2.ClearHistoryRequest(session_id="somebody"), CONTEXT)


class FakeMessageEmotion:
    """Reads every message as `label` (None: the text service failed); records what it was given."""

    def __init__(self, label: str | None) -> None:
        self.label = label
        self.calls: list[tuple[str, list[str]]] = []

    async def read(self, message: str, history: Sequence[StoredTurn]) -> dialog_pb2.EmotionContext | None:
        self.calls.append((message, [t.text for t in history]))
        return None if self.label is None else emotion_context(self.label)

    async def close(self) -> None:
        return None


async def test_a_message_without_emotion_is_read_by_the_text_service_with_its_history() -> None:
    llm, history, reader = FakeLlm(["Oh no."]), FakeHistory(), FakeMessageEmotion("sad")
    servicer = DialogServicer(DialogSettings.from_env({}), llm, history, message_emotion=reader)
    await chat(servicer, "My dog died last week.")
    _, info = await chat(servicer, "Not great.")
    assert reader.calls[1] == ("Not great.", ["My dog died last week.", "Oh no."])
    assert info.emotion_source == dialog_pb2.EMOTION_SOURCE_TEXT_SERVICE
    assert top_label(info.emotion.fused.distribution) == "sad"
    # The reply was written for it, and the turn is stored with it.
    assert "sad" in llm.prompts[1][0]["content"]
    assert history.sessions["s1"][2].emotion is not None


async def test_the_request_emotion_wins_and_a_failed_read_leaves_the_reply_without_one() -> None:
    reader = FakeMessageEmotion("sad")
    servicer = DialogServicer(DialogSettings.from_env({}), FakeLlm(["Yay!"]), FakeHistory(), message_emotion=reader)
    request = dialog_pb2.ChatRequest(session_id="s1", message="I won", emotion=emotion_context("happy"))
    chunks = [chunk async for chunk in servicer.Chat(request, CONTEXT)]
    info = chunks[-1].done
    assert not reader.calls and info.emotion_source == dialog_pb2.EMOTION_SOURCE_REQUEST
    assert top_label(info.emotion.fused.distribution) == "happy"
    failing = DialogServicer(
        DialogSettings.from_env({}), FakeLlm(["Hm."]), FakeHistory(), message_emotion=FakeMessageEmotion(None)
    )
    reply, info = await chat(failing, "whatever")
    assert reply == "Hm." and info.emotion_source == dialog_pb2.EMOTION_SOURCE_UNSPECIFIED
    assert not info.HasField("emotion")
