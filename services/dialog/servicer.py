"""DialogService: validate -> read the history window -> (no emotion sent: read the message's emotion on
the text service, in context) -> build the prompt -> LLM (or the offline fallback) -> store the turn ->
answer. Thin on purpose: prompts are pure (prompts.py), history, the LLM and the text service are
clients (history.py, llm.py, text_emotion.py)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

import grpc

from emomesh.errors import InvalidInput, NotFound, Unavailable
from emomesh.labels import MODALITY_NAMES
from emomesh.security import current_caller
from emotion.common.v1 import common_pb2
from emotion.dialog.v1 import dialog_pb2, dialog_pb2_grpc
from services.dialog.config import DialogSettings
from services.dialog.fence import sanitize_fenced_text
from services.dialog.history import HistoryUnavailable, StoredTurn, TurnHistory
from services.dialog.llm import ChatLlm, LlmInterrupted, LlmResult, LlmUnavailable
from services.dialog.metrics import FALLBACK_REPLIES, HISTORY_TURNS
from services.dialog.prompts import (
    PersonaChoice,
    PromptBuilder,
    resolve_persona,
    select_history,
    validate_distribution,
    validate_emotion,
    validate_message,
    validate_session_id,
)
from services.dialog.text_emotion import MessageEmotion

log = logging.getLogger(__name__)

FALLBACK_MODEL = "offline-fallback"
NOT_CONFIGURED = "no LLM API key configured (EMOMESH_DIALOG_LLM_API_KEY)"

ROLE_TO_PROTO = {"user": dialog_pb2.Turn.ROLE_USER, "assistant": dialog_pb2.Turn.ROLE_ASSISTANT}


def _cause(exc: LlmUnavailable | None) -> str:
    if exc is None:
        return "not_configured"
    return "interrupted" if isinstance(exc, LlmInterrupted) else "unavailable"


class DialogServicer(dialog_pb2_grpc.DialogServiceServicer):
    def __init__(
        self,
        settings: DialogSettings,
        llm: ChatLlm,
        history: TurnHistory,
        prompts: PromptBuilder | None = None,
        message_emotion: MessageEmotion | None = None,
    ) -> None:
        self.settings = settings
        self.llm = llm
        self.history = history
        self.prompts = prompts or PromptBuilder()
        # None: messages sent without an emotion are answered without one.
        self.message_emotion = message_emotion

    def _persona(self, persona: dialog_pb2.Persona) -> PersonaChoice:
        return resolve_persona(persona, self.settings.max_custom_persona_chars)

    async def _recent(self, session_id: str) -> tuple[list[StoredTurn], bool]:
        """(history turns, whether the store answered)."""
        try:
            return await self.history.recent(current_caller(), session_id), True
        except HistoryUnavailable:
            return [], False

    async def _store(self, session_id: str, turns: list[StoredTurn]) -> bool:
        try:
            await self.history.append(current_caller(), session_id, turns)
            return True
        except HistoryUnavailable:
            return False

    def _info(self, start: float, result: LlmResult | None, reply: str, fallback_reason: str) -> dialog_pb2.ReplyInfo:
        info = dialog_pb2.ReplyInfo(reply=reply, latency_ms=(time.perf_counter() - start) * 1000)
        if fallback_reason:
            info.fallback = True
            info.fallback_reason = fallback_reason
        info.model = (result.model or self.llm.model) if result is not None and result.text else FALLBACK_MODEL
        if result is not None:
            info.prompt_tokens = result.prompt_tokens
            info.completion_tokens = result.completion_tokens
        return info

    def _note_fallback(self, operation: str, exc: LlmUnavailable | None) -> str:
        FALLBACK_REPLIES.labels(operation, _cause(exc)).inc()
        if exc is None:
            # Offline by configuration: said once at start-up, counted per reply, not logged per reply.
            return NOT_CONFIGURED
        log.warning("fallback reply", extra={"fields": {"operation": operation, "reason": exc.reason}})
        return exc.reason

    async def Chat(
        self, request: dialog_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[dialog_pb2.ChatChunk]:
        start = time.perf_counter()
        session_id = validate_session_id(request.session_id)
        message = validate_message(request.message, self.settings.max_message_chars)
        persona = self._persona(request.persona)
        emotion = request.emotion if request.HasField("emotion") else None
        if emotion is not None:
            validate_emotion(emotion)

        recent, history_available = await self._recent(session_id)
        source = dialog_pb2.EMOTION_SOURCE_REQUEST if emotion is not None else dialog_pb2.EMOTION_SOURCE_UNSPECIFIED
        if emotion is None and self.message_emotion is not None:
            emotion = await self.message_emotion.read(message, recent)
            if emotion is not None:
                source = dialog_pb2.EMOTION_SOURCE_TEXT_SERVICE
        history = select_history(recent, self.settings.history.token_budget)
        HISTORY_TURNS.observe(len(history))
        messages = self.prompts.chat_messages(persona, emotion, history, message)

        result = LlmResult()
        failure: LlmUnavailable | None = None
        if self.llm.configured:
            # aclosing: if the caller goes away while a delta is being sent, the HTTP stream to the
            # LLM is closed right here rather than whenever the generator is garbage-collected.
            async with contextlib.aclosing(self.llm.stream_chat(messages, result, context.time_remaining())) as deltas:
                try:
                    async for delta in deltas:
                        yield dialog_pb2.ChatChunk(delta=delta)
                except LlmUnavailable as exc:
                    failure = exc
        fallback_reason = ""
        reply = result.text
        if failure is not None or not self.llm.configured:
            fallback_reason = self._note_fallback("chat", failure)
            fallback_text = self.prompts.fallback_reply(persona, emotion, message)
            # After an interruption the fallback completes what was already streamed.
            delta = f" {fallback_text}" if reply else fallback_text
            reply += delta
            yield dialog_pb2.ChatChunk(delta=delta)

        now = time.time()
        turns = [
            StoredTurn("user", message, emotion.fused if emotion is not None else None, now),
            StoredTurn("assistant", reply, None, now),
        ]
        if history_available:
            history_available = await self._store(session_id, turns)
        info = self._info(start, result, reply, fallback_reason)
        info.history_available = history_available
        info.history_turns = len(history)
        info.emotion_source = source
        if emotion is not None:
            info.emotion.CopyFrom(emotion)
        yield dialog_pb2.ChatChunk(done=info)

    async def Greeting(
        self, request: dialog_pb2.GreetingRequest, context: grpc.aio.ServicerContext
    ) -> dialog_pb2.GreetingResponse:
        start = time.perf_counter()
        session_id = validate_session_id(request.session_id)
        persona = self._persona(request.persona)
        recent, history_available = await self._recent(session_id)

        result: LlmResult | None = None
        fallback_reason = ""
        try:
            result = await self.llm.complete(
                self.prompts.greeting_messages(persona, returning=bool(recent)), "greeting", context.time_remaining()
            )
            text = result.text
        except LlmUnavailable as exc:
            fallback_reason = self._note_fallback("greeting", exc if self.llm.configured else None)
            text = self.prompts.fallback_greeting(persona)

        if history_available:
            history_available = await self._store(session_id, [StoredTurn("assistant", text, None, time.time())])
        info = self._info(start, result, text, fallback_reason)
        info.history_available = history_available
        return dialog_pb2.GreetingResponse(text=text, info=info)

    def _validate_clues(self, clues: list[dialog_pb2.ModalityClue]) -> None:
        if not clues:
            raise InvalidInput("clues is empty")
        if len(clues) > self.settings.max_clues:
            raise InvalidInput(f"{len(clues)} clues; the limit is {self.settings.max_clues}")
        for i, clue in enumerate(clues):
            if clue.modality != common_pb2.MODALITY_UNSPECIFIED and clue.modality not in MODALITY_NAMES:
                raise InvalidInput(f"clues[{i}].modality {clue.modality} is unknown")
            if len(clue.description) > self.settings.max_clue_chars:
                raise InvalidInput(
                    f"clues[{i}].description is {len(clue.description)} characters; "
                    f"the limit is {self.settings.max_clue_chars}"
                )
            validate_distribution(clue.distribution, f"clues[{i}].distribution")
            # What the prompt will carry: NFKC can expand a character, sanitising can empty a text.
            description = sanitize_fenced_text(clue.description, f"clues[{i}].description")
            if len(description) > self.settings.max_clue_chars:
                raise InvalidInput(
                    f"clues[{i}].description is {len(description)} characters after Unicode normalisation; "
                    f"the limit is {self.settings.max_clue_chars}"
                )
            if not description and not clue.distribution.probabilities:
                raise InvalidInput(f"clues[{i}] has neither a description nor a distribution")

    async def Describe(
        self, request: dialog_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> dialog_pb2.DescribeResponse:
        start = time.perf_counter()
        clues = list(request.clues)
        self._validate_clues(clues)
        result: LlmResult | None = None
        fallback_reason = ""
        try:
            result = await self.llm.complete(
                self.prompts.describe_messages(clues), "describe", context.time_remaining()
            )
            analysis = result.text
        except LlmUnavailable as exc:
            fallback_reason = self._note_fallback("describe", exc if self.llm.configured else None)
            analysis = self.prompts.fallback_describe(clues)
        info = self._info(start, result, analysis, fallback_reason)
        # Describe reads no history; the flag says only that none was missing.
        info.history_available = True
        return dialog_pb2.DescribeResponse(analysis=analysis, info=info)

    async def GetHistory(
        self, request: dialog_pb2.GetHistoryRequest, context: grpc.aio.ServicerContext
    ) -> dialog_pb2.GetHistoryResponse:
        session_id = validate_session_id(request.session_id)
        try:
            turns = await self.history.all(current_caller(), session_id)
        except HistoryUnavailable as exc:
            raise Unavailable(str(exc)) from exc
        if not turns:
            # A session exists from its first Chat turn until its TTL runs out; nothing stored = unknown.
            # Another caller's session is unknown too: its existence is not revealed.
            raise NotFound(f"session {session_id!r} is unknown or has expired")
        response = dialog_pb2.GetHistoryResponse()
        for turn in turns:
            item = response.turns.add(role=ROLE_TO_PROTO[turn.role], text=turn.text, time=turn.time)
            if turn.emotion is not None:
                item.emotion.CopyFrom(turn.emotion)
        return response

    async def ClearHistory(
        self, request: dialog_pb2.ClearHistoryRequest, context: grpc.aio.ServicerContext
    ) -> dialog_pb2.ClearHistoryResponse:
        session_id = validate_session_id(request.session_id)
        try:
            existed = await self.history.clear(current_caller(), session_id)
        except HistoryUnavailable as exc:
            raise Unavailable(str(exc)) from exc
        if not existed:
            raise NotFound(f"session {session_id!r} is unknown or has expired")
        return dialog_pb2.ClearHistoryResponse()
