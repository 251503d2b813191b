"""The emotion of a chat message, read by the text service with the session's recent turns as
conversation context, for a ChatRequest that carries no emotion of its own.

"Fine." after "My dog died" is not the "Fine." of a good day: the text model reads the turns before the
message (services/text/context.py), and the dialog service is where those turns live (Redis history).

Best effort by design: when the text service is not configured, slow or down, the reply is written
without an emotion (and ReplyInfo.emotion_source says so); the chat never fails for it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import grpc

from emomesh.labels import polarity_of, probs_from_distribution
from emomesh.security import open_aio_channel
from emomesh.server import grpc_options
from emomesh.tracing import client_interceptors
from emotion.common.v1 import common_pb2
from emotion.dialog.v1 import dialog_pb2
from emotion.text.v1 import text_pb2, text_pb2_grpc
from services.dialog.config import TextEmotionSettings
from services.dialog.history import StoredTurn
from services.dialog.metrics import TEXT_EMOTION_READS

log = logging.getLogger(__name__)

# The speaker names the text service sees: only "is it the author of the message" matters to it.
USER_SPEAKER = "user"


class MessageEmotion(Protocol):
    """What the servicer needs: TextEmotionReader, or a fake in unit tests."""

    async def read(self, message: str, history: Sequence[StoredTurn]) -> dialog_pb2.EmotionContext | None: ...

    async def close(self) -> None: ...


def analyze_request(message: str, history: Sequence[StoredTurn], context_turns: int) -> text_pb2.AnalyzeTextRequest:
    """The AnalyzeText request for `message`, said by the user after `history` (oldest first)."""
    recent = list(history)[-context_turns:] if context_turns else []
    return text_pb2.AnalyzeTextRequest(
        text=message,
        speaker=USER_SPEAKER,
        context=[text_pb2.ConversationTurn(speaker=turn.role, text=turn.text) for turn in recent],
    )


def emotion_context(response: text_pb2.AnalyzeTextResponse) -> dialog_pb2.EmotionContext:
    """The text service's answer as the context a reply is written for: text is the only modality, so
    the fused emotion is the text's distribution with weight 1."""
    result = common_pb2.ModalityResult(
        modality=common_pb2.MODALITY_TEXT,
        status=common_pb2.MODALITY_STATUS_OK,
        distribution=response.distribution,
        reliability=response.reliability,
        model=response.model,
        latency_ms=response.latency_ms,
        detail=response.note,
    )
    fused = common_pb2.FusedEmotion(
        distribution=response.distribution,
        weights=[common_pb2.ModalityWeight(modality=common_pb2.MODALITY_TEXT, weight=1.0)],
        polarity=polarity_of(probs_from_distribution(response.distribution)),
    )
    return dialog_pb2.EmotionContext(fused=fused, modalities=[result])


class TextEmotionReader:
    def __init__(self, settings: TextEmotionSettings) -> None:
        if settings.address is None:
            raise ValueError("TextEmotionReader needs the text service's address")
        self.settings = settings
        # Messages are at most a few thousand characters, and history turns as long.
        self._channel = open_aio_channel(
            settings.address, settings.security, grpc_options(4 << 20), client_interceptors(settings.address)
        )
        self._stub = text_pb2_grpc.TextServiceStub(self._channel)

    async def read(self, message: str, history: Sequence[StoredTurn]) -> dialog_pb2.EmotionContext | None:
        """The message's emotion in context, or None (logged and counted) when the text service fails."""
        request = analyze_request(message, history, self.settings.context_turns)
        try:
            response = await self._stub.AnalyzeText(request, timeout=self.settings.timeout_s)
        except grpc.aio.AioRpcError as exc:
            TEXT_EMOTION_READS.labels(exc.code().name.lower()).inc()
            log.warning(
                "text service did not read the message; replying without an emotion",
                extra={"fields": {"code": exc.code().name, "detail": exc.details()}},
            )
            return None
        TEXT_EMOTION_READS.labels("ok").inc()
        return emotion_context(response)

    async def close(self) -> None:
        await self._channel.close()
