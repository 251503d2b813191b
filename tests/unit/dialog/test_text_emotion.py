"""The dialog service's reader of a message's emotion: the request it sends (the message and the
session's newest turns as context), the context it makes of the answer, and that a failing or slow text
service costs only the emotion. A fake TextService on a real gRPC port stands in for the text service;
the real one is in tests/integration/test_dialog.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from emomesh.labels import distribution_from_probs, top_label
from emotion.common.v1 import common_pb2
from emotion.text.v1 import text_pb2, text_pb2_grpc
from services.dialog.config import TextEmotionSettings
from services.dialog.history import StoredTurn
from services.dialog.metrics import TEXT_EMOTION_READS
from services.dialog.text_emotion import TextEmotionReader, analyze_request, emotion_context
from tests.unit.dialog.helpers import one_hot

HISTORY = [
    StoredTurn("user", "I had my exam today."),
    StoredTurn("assistant", "How did it go?"),
    StoredTurn("user", "I failed."),
    StoredTurn("assistant", "I'm sorry to hear that."),
]


def test_the_request_carries_the_newest_turns_oldest_first_tagged_by_role() -> None:
    request = analyze_request("Whatever.", HISTORY, context_turns=3)
    assert request.text == "Whatever." and request.speaker == "user"
    assert [(t.speaker, t.text) for t in request.context] == [
        ("assistant", "How did it go?"),
        ("user", "I failed."),
        ("assistant", "I'm sorry to hear that."),
    ]
    assert not analyze_request("Whatever.", HISTORY, context_turns=0).context


def test_the_answer_becomes_a_text_only_emotion_context() -> None:
    response = text_pb2.AnalyzeTextResponse(
        distribution=distribution_from_probs(one_hot("sad")),
        reliability=1.0,
        model=common_pb2.ModelInfo(name="text_minilm_emotion", version="2"),
        context_tokens=12,
    )
    context = emotion_context(response)
    assert top_label(context.fused.distribution) == "sad"
    assert [(w.modality, w.weight) for w in context.fused.weights] == [(common_pb2.MODALITY_TEXT, 1.0)]
    assert context.fused.polarity == common_pb2.POLARITY_NEGATIVE
    (text,) = context.modalities
    assert text.status == common_pb2.MODALITY_STATUS_OK and text.model.name == "text_minilm_emotion"


class FakeTextService(text_pb2_grpc.TextServiceServicer):
    def __init__(self) -> None:
        self.requests: list[text_pb2.AnalyzeTextRequest] = []
        self.delay_s = 0.0

    async def AnalyzeText(
        self, request: text_pb2.AnalyzeTextRequest, context: grpc.aio.ServicerContext
    ) -> text_pb2.AnalyzeTextResponse:
        self.requests.append(request)
        await asyncio.sleep(self.delay_s)
        label = "sad" if request.context else "neutral"
        return text_pb2.AnalyzeTextResponse(distribution=distribution_from_probs(one_hot(label)), reliability=1.0)


@pytest.fixture
async def text_service() -> AsyncIterator[tuple[FakeTextService, str]]:
    server = grpc.aio.server()
    fake = FakeTextService()
    text_pb2_grpc.add_TextServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield fake, f"127.0.0.1:{port}"
    await server.stop(None)


def reads(outcome: str) -> float:
    return TEXT_EMOTION_READS.labels(outcome)._value.get()


async def test_the_reader_asks_the_text_service_and_survives_its_failures(
    text_service: tuple[FakeTextService, str],
) -> None:
    fake, address = text_service
    reader = TextEmotionReader(TextEmotionSettings(address, timeout_s=0.5, context_turns=2))
    try:
        context = await reader.read("Whatever.", HISTORY)
        assert context is not None and top_label(context.fused.distribution) == "sad"
        assert [t.text for t in fake.requests[0].context] == ["I failed.", "I'm sorry to hear that."]
        ok, late = reads("ok"), reads("deadline_exceeded")
        fake.delay_s = 2.0
        assert await reader.read("Whatever.", HISTORY) is None
        assert reads("deadline_exceeded") == late + 1 and reads("ok") == ok
    finally:
        await reader.close()
    nobody = TextEmotionReader(TextEmotionSettings("127.0.0.1:1", timeout_s=0.5, context_turns=2))
    try:
        unavailable = reads("unavailable")
        assert await nobody.read("Whatever.", []) is None
        assert reads("unavailable") == unavailable + 1
    finally:
        await nobody.close()


def test_the_reader_needs_an_address_and_the_settings_come_from_env() -> None:
    with pytest.raises(ValueError, match="needs the text service's address"):
        TextEmotionReader(TextEmotionSettings(None, 1.0, 2))
    settings = TextEmotionSettings.from_env(
        {"EMOMESH_DIALOG_TEXT_ADDR": "text:50053", "EMOMESH_DIALOG_TEXT_TOKEN": "t" * 24}
    )
    assert (settings.address, settings.timeout_s, settings.context_turns) == ("text:50053", 2.0, 6)
    assert settings.security.token == "t" * 24
    assert TextEmotionSettings.from_env({}).address is None
