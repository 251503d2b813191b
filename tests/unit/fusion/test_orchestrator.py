"""Analyze against FAKE in-process grpc.aio modality servers: parallel fan-out, partial results when
a service is down, slow or rejects the input, and transcript forwarding."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
import numpy as np
import pytest

from emomesh.admission import OVERLOADED_HEADER
from emomesh.errors import InvalidInput, TooLarge, Unavailable
from emomesh.labels import LABELS, distribution_from_probs, label_index
from emotion.audio.v1 import audio_pb2, audio_pb2_grpc
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2
from emotion.text.v1 import text_pb2, text_pb2_grpc
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.fusion.fuse import FusionConfig
from services.fusion.orchestrator import ModalityClients, Orchestrator, OrchestratorLimits

S = common_pb2
Request = TypeVar("Request")


def peaked(label: str, confidence: float = 0.9) -> common_pb2.EmotionDistribution:
    probs = np.full(len(LABELS), (1 - confidence) / (len(LABELS) - 1))
    probs[label_index(label)] = confidence
    return distribution_from_probs(probs)


@dataclass
class Behaviour(Generic[Request]):
    """How a fake service answers: after `on_call` and `delay_s`, either abort with `error` or answer."""

    delay_s: float = 0.0
    error: grpc.StatusCode | None = None
    details: str = "fake failure"
    trailing_metadata: tuple[tuple[str, str], ...] = ()
    calls: list[Request] = field(default_factory=list)
    on_call: Callable[[], Awaitable[None]] | None = None

    async def act(self, request: Request, context: grpc.aio.ServicerContext) -> None:
        self.calls.append(request)
        if self.on_call is not None:
            await self.on_call()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error is not None:
            await context.abort(self.error, self.details, self.trailing_metadata)


class FakeVision(vision_pb2_grpc.VisionServiceServicer):
    def __init__(self) -> None:
        self.behaviour: Behaviour[vision_pb2.AnalyzeImageRequest | vision_pb2.AnalyzeVideoRequest] = Behaviour()
        self.face = True

    async def AnalyzeImage(
        self, request: vision_pb2.AnalyzeImageRequest, context: grpc.aio.ServicerContext
    ) -> vision_pb2.AnalyzeImageResponse:
        await self.behaviour.act(request, context)
        response = vision_pb2.AnalyzeImageResponse(image_width=10, image_height=10)
        if self.face:
            response.faces.add(distribution=peaked("happy"))
            response.primary.CopyFrom(peaked("happy"))
        return response

    async def AnalyzeVideo(
        self, request: vision_pb2.AnalyzeVideoRequest, context: grpc.aio.ServicerContext
    ) -> vision_pb2.AnalyzeVideoResponse:
        await self.behaviour.act(request, context)
        return vision_pb2.AnalyzeVideoResponse(aggregate=peaked("happy"), frames_sampled=8, frames_without_faces=2)


class FakeAudio(audio_pb2_grpc.AudioServiceServicer):
    def __init__(self) -> None:
        self.behaviour: Behaviour[audio_pb2.AnalyzeAudioRequest] = Behaviour()
        self.transcript = "I am so angry about this"
        # The recogniser's confidence (0, 0: not reported, as from an audio service without these fields).
        self.avg_logprob = 0.0
        self.no_speech_prob = 0.0
        self.language = "en"

    async def AnalyzeAudio(
        self, request: audio_pb2.AnalyzeAudioRequest, context: grpc.aio.ServicerContext
    ) -> audio_pb2.AnalyzeAudioResponse:
        await self.behaviour.act(request, context)
        response = audio_pb2.AnalyzeAudioResponse(distribution=peaked("neutral"), speech_detected=True, reliability=0.9)
        if request.transcribe:
            response.transcript.text = self.transcript
            response.transcript.avg_logprob = self.avg_logprob
            response.transcript.no_speech_prob = self.no_speech_prob
            response.transcript.language = self.language
        return response


class FakeText(text_pb2_grpc.TextServiceServicer):
    def __init__(self) -> None:
        self.behaviour: Behaviour[text_pb2.AnalyzeTextRequest] = Behaviour()
        self.probabilities: list[float] | None = None
        self.reliability = 1.0
        self.note = ""

    async def AnalyzeText(
        self, request: text_pb2.AnalyzeTextRequest, context: grpc.aio.ServicerContext
    ) -> text_pb2.AnalyzeTextResponse:
        await self.behaviour.act(request, context)
        distribution = peaked("angry")
        if self.probabilities is not None:
            distribution = common_pb2.EmotionDistribution(probabilities=self.probabilities)
        return text_pb2.AnalyzeTextResponse(
            distribution=distribution, reliability=self.reliability, language="en", note=self.note
        )


@dataclass
class Fakes:
    vision: FakeVision
    audio: FakeAudio
    text: FakeText
    servers: dict[str, grpc.aio.Server]
    addresses: dict[str, str]


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    vision, audio, text = FakeVision(), FakeAudio(), FakeText()
    adders: dict[str, Callable[[grpc.aio.Server], None]] = {
        "vision": lambda server: vision_pb2_grpc.add_VisionServiceServicer_to_server(vision, server),
        "audio": lambda server: audio_pb2_grpc.add_AudioServiceServicer_to_server(audio, server),
        "text": lambda server: text_pb2_grpc.add_TextServiceServicer_to_server(text, server),
    }
    servers, addresses = {}, {}
    for name, add in adders.items():
        server = grpc.aio.server()
        add(server)
        addresses[name] = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        servers[name] = server
    yield Fakes(vision, audio, text, servers, addresses)
    for server in servers.values():
        await server.stop(None)


@pytest.fixture
async def orchestrator(fakes: Fakes) -> AsyncIterator[Orchestrator]:
    clients = ModalityClients(fakes.addresses["vision"], fakes.addresses["audio"], fakes.addresses["text"])
    yield Orchestrator(clients, FusionConfig(), OrchestratorLimits(max_deadline_s=5.0, max_text_chars=100))
    await clients.close()


def by_modality(response: fusion_pb2.AnalyzeResponse) -> dict[int, common_pb2.ModalityResult]:
    return {r.modality: r for r in response.modalities}


FULL = fusion_pb2.AnalyzeRequest(image=b"img", audio=b"wav", text="What a lovely day")


async def test_all_modalities_are_analysed_and_fused(orchestrator: Orchestrator, fakes: Fakes) -> None:
    response = await orchestrator.analyze(FULL)
    results = by_modality(response)
    assert [r.status for r in response.modalities] == [S.MODALITY_STATUS_OK] * 3
    assert results[S.MODALITY_VISION].distribution.top == S.EMOTION_HAPPY
    assert results[S.MODALITY_TEXT].reliability == pytest.approx(1.0)
    assert response.image.image_width == 10 and response.audio.speech_detected and response.text.language == "en"
    assert len(response.fused.weights) == 3 and not response.fused.missing
    assert response.fused.conflict  # happy face, angry words
    assert sorted(response.fused.conflicting) == [S.MODALITY_VISION, S.MODALITY_TEXT]
    assert not response.text_from_transcript
    assert not fakes.audio.behaviour.calls[0].transcribe


async def test_calls_run_in_parallel(orchestrator: Orchestrator, fakes: Fakes) -> None:
    # Each fake waits for the others to have been called: a sequential fan-out would deadlock until
    # the deadline and report TIMED_OUT.
    all_called = asyncio.Event()
    behaviours: list[Behaviour[Any]] = [fakes.vision.behaviour, fakes.audio.behaviour, fakes.text.behaviour]

    async def wait_for_the_others() -> None:
        if sum(len(b.calls) for b in behaviours) == 3:
            all_called.set()
        await all_called.wait()

    for behaviour in behaviours:
        behaviour.on_call = wait_for_the_others
    response = await orchestrator.analyze(FULL, caller_remaining_s=3.0)
    assert [r.status for r in response.modalities] == [S.MODALITY_STATUS_OK] * 3


async def test_killed_service_gives_partial_result(orchestrator: Orchestrator, fakes: Fakes) -> None:
    await fakes.servers["audio"].stop(None)
    response = await orchestrator.analyze(FULL)
    results = by_modality(response)
    assert results[S.MODALITY_AUDIO].status == S.MODALITY_STATUS_UNAVAILABLE
    assert "audio service" in results[S.MODALITY_AUDIO].detail
    assert not response.HasField("audio")
    assert results[S.MODALITY_VISION].status == S.MODALITY_STATUS_OK
    assert list(response.fused.missing) == [S.MODALITY_AUDIO]
    assert {w.modality for w in response.fused.weights} == {S.MODALITY_VISION, S.MODALITY_TEXT}
    assert sum(w.weight for w in response.fused.weights) == pytest.approx(1.0)


async def test_slow_service_is_marked_timed_out(orchestrator: Orchestrator, fakes: Fakes) -> None:
    fakes.vision.behaviour.delay_s = 30
    response = await orchestrator.analyze(FULL, caller_remaining_s=0.5)
    results = by_modality(response)
    assert results[S.MODALITY_VISION].status == S.MODALITY_STATUS_TIMED_OUT
    assert results[S.MODALITY_AUDIO].status == S.MODALITY_STATUS_OK
    assert results[S.MODALITY_TEXT].status == S.MODALITY_STATUS_OK
    assert S.MODALITY_VISION in response.fused.missing


async def test_configured_cap_bounds_a_caller_without_deadline(fakes: Fakes) -> None:
    fakes.text.behaviour.delay_s = 30
    clients = ModalityClients(fakes.addresses["vision"], None, fakes.addresses["text"])
    try:
        orchestrator = Orchestrator(clients, FusionConfig(), OrchestratorLimits(max_deadline_s=0.3))
        request = fusion_pb2.AnalyzeRequest(image=b"img", text="hello")
        response = await orchestrator.analyze(request, caller_remaining_s=None)
    finally:
        await clients.close()
    assert by_modality(response)[S.MODALITY_TEXT].status == S.MODALITY_STATUS_TIMED_OUT
    assert by_modality(response)[S.MODALITY_VISION].status == S.MODALITY_STATUS_OK


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, S.MODALITY_STATUS_INVALID_INPUT),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, S.MODALITY_STATUS_INVALID_INPUT),
        (grpc.StatusCode.INTERNAL, S.MODALITY_STATUS_UNAVAILABLE),
        (grpc.StatusCode.UNIMPLEMENTED, S.MODALITY_STATUS_UNAVAILABLE),
    ],
)
async def test_service_errors_map_to_statuses(
    orchestrator: Orchestrator, fakes: Fakes, code: grpc.StatusCode, status: int
) -> None:
    fakes.vision.behaviour.error = code
    response = await orchestrator.analyze(FULL)
    assert by_modality(response)[S.MODALITY_VISION].status == status
    assert "fake failure" in by_modality(response)[S.MODALITY_VISION].detail


async def test_transcript_is_forwarded_to_text_when_no_text(orchestrator: Orchestrator, fakes: Fakes) -> None:
    response = await orchestrator.analyze(fusion_pb2.AnalyzeRequest(audio=b"wav"))
    assert fakes.audio.behaviour.calls[0].transcribe
    assert fakes.text.behaviour.calls[0].text == "I am so angry about this"
    assert response.text_from_transcript
    results = by_modality(response)
    assert results[S.MODALITY_TEXT].status == S.MODALITY_STATUS_OK
    assert results[S.MODALITY_VISION].status == S.MODALITY_STATUS_MISSING


async def test_the_transcript_language_is_the_text_language_hint(orchestrator: Orchestrator, fakes: Fakes) -> None:
    fakes.audio.transcript, fakes.audio.language = "Der Lappen liegt auf dem Eisschrank", "de"
    await orchestrator.analyze(fusion_pb2.AnalyzeRequest(audio=b"wav"))
    assert fakes.text.behaviour.calls[0].language_hint == "de"
    # Text the caller sent is the caller's: no hint from a recogniser that did not read it.
    await orchestrator.analyze(fusion_pb2.AnalyzeRequest(audio=b"wav", text="Guten Morgen"))
    assert fakes.text.behaviour.calls[1].language_hint == ""


async def test_the_conversation_goes_to_the_text_service_with_typed_or_transcribed_words(
    orchestrator: Orchestrator, fakes: Fakes
) -> None:
    turns = [text_pb2.ConversationTurn(speaker="assistant", text="How did the interview go?")]
    await orchestrator.analyze(fusion_pb2.AnalyzeRequest(text="Badly.", speaker="user", context=turns))
    await orchestrator.analyze(fusion_pb2.AnalyzeRequest(audio=b"wav", speaker="user", context=turns))
    for call in fakes.text.behaviour.calls:
        assert call.speaker == "user" and list(call.context) == turns


async def test_transcript_forwarding_can_be_switched_off(orchestrator: Orchestrator, fakes: Fakes) -> None:
    response = await orchestrator.analyze(fusion_pb2.AnalyzeRequest(audio=b"wav", transcript_as_text=False))
    assert not fakes.audio.behaviour.calls[0].transcribe
    assert not fakes.text.behaviour.calls
    assert by_modality(response)[S.MODALITY_TEXT].status == S.MODALITY_STATUS_MISSING


async def test_empty_transcript_leaves_text_missing(orchestrator: Orchestrator, fakes: Fakes) -> None:
    fakes.audio.transcript = ""
    response = await orchestrator.analyze(fusion_pb2.AnalyzeRequest(audio=b"wav"))
    text = by_modality(response)[S.MODALITY_TEXT]
    assert text.status == S.MODALITY_STATUS_MISSING and "no transcript" in text.detail
    assert not fakes.text.behaviour.calls


async def test_transcript_text_is_trusted_as_far_as_the_recogniser_was_sure(
    orchestrator: Orchestrator, fakes: Fakes
) -> None:
    fakes.audio.avg_logprob, fakes.audio.no_speech_prob = -0.55, 0.2  # 0.75 x 0.8 = 0.6
    fakes.text.reliability = 0.8
    response = await orchestrator.analyze(fusion_pb2.AnalyzeRequest(audio=b"wav"))
    text = by_modality(response)[S.MODALITY_TEXT]
    assert text.status == S.MODALITY_STATUS_OK
    assert text.reliability == pytest.approx(0.8 * 0.6)
    assert {w.modality for w in response.fused.weights} == {S.MODALITY_AUDIO, S.MODALITY_TEXT}
    # Text the caller sent is not discounted by the transcript it did not come from.
    response = await orchestrator.analyze(fusion_pb2.AnalyzeRequest(audio=b"wav", text="I am furious"))
    assert by_modality(response)[S.MODALITY_TEXT].reliability == pytest.approx(0.8)


async def test_a_doubtful_transcript_is_low_confidence_and_not_fused(orchestrator: Orchestrator, fakes: Fakes) -> None:
    # English-sounding words the recogniser barely believed (tiny.en on German speech).
    fakes.audio.avg_logprob, fakes.audio.no_speech_prob = -0.955, 0.19
    fakes.text.note = "a caveat of the text service"
    response = await orchestrator.analyze(fusion_pb2.AnalyzeRequest(audio=b"wav"))
    text = by_modality(response)[S.MODALITY_TEXT]
    assert text.status == S.MODALITY_STATUS_LOW_CONFIDENCE
    assert text.detail == (
        "reliability 0.06 below 0.30 (transcript confidence 0.06: mean log-probability -0.95, "
        "no-speech probability 0.19; a caveat of the text service)"
    )
    assert [w.modality for w in response.fused.weights] == [S.MODALITY_AUDIO]
    assert response.text_from_transcript


async def test_a_transcript_of_no_speech_gives_no_text_modality(orchestrator: Orchestrator, fakes: Fakes) -> None:
    fakes.audio.no_speech_prob = 0.8
    response = await orchestrator.analyze(fusion_pb2.AnalyzeRequest(audio=b"wav"))
    text = by_modality(response)[S.MODALITY_TEXT]
    assert text.status == S.MODALITY_STATUS_MISSING
    assert text.detail == "no text sent; the audio transcript is of no speech (no-speech probability 0.80)"
    assert not fakes.text.behaviour.calls
    assert not response.text_from_transcript


async def test_text_on_transcript_gets_only_the_time_audio_left(orchestrator: Orchestrator, fakes: Fakes) -> None:
    # Audio uses up the whole budget: text must not be started past the common deadline.
    fakes.audio.behaviour.delay_s = 30
    request = fusion_pb2.AnalyzeRequest(image=b"img", audio=b"wav")
    response = await orchestrator.analyze(request, caller_remaining_s=0.6)
    results = by_modality(response)
    assert results[S.MODALITY_AUDIO].status == S.MODALITY_STATUS_TIMED_OUT
    assert results[S.MODALITY_TEXT].status == S.MODALITY_STATUS_MISSING
    assert not fakes.text.behaviour.calls
    assert [w.modality for w in response.fused.weights] == [S.MODALITY_VISION]


async def test_no_face_is_low_confidence_and_not_fused(orchestrator: Orchestrator, fakes: Fakes) -> None:
    fakes.vision.face = False
    response = await orchestrator.analyze(FULL)
    vision = by_modality(response)[S.MODALITY_VISION]
    assert vision.status == S.MODALITY_STATUS_LOW_CONFIDENCE and vision.detail == "no face found"
    assert response.HasField("image")
    assert S.MODALITY_VISION in response.fused.missing


async def test_video_goes_to_analyze_video_with_face_share_as_reliability(orchestrator: Orchestrator) -> None:
    response = await orchestrator.analyze(fusion_pb2.AnalyzeRequest(video=b"mp4"))
    vision = by_modality(response)[S.MODALITY_VISION]
    assert vision.status == S.MODALITY_STATUS_OK
    assert vision.reliability == pytest.approx(6 / 8)
    assert response.video.frames_sampled == 8


async def test_unconfigured_service_is_unavailable(fakes: Fakes) -> None:
    clients = ModalityClients(fakes.addresses["vision"], None, None)
    try:
        response = await Orchestrator(clients, FusionConfig(), OrchestratorLimits()).analyze(FULL)
    finally:
        await clients.close()
    results = by_modality(response)
    assert results[S.MODALITY_AUDIO].status == S.MODALITY_STATUS_UNAVAILABLE
    assert results[S.MODALITY_TEXT].detail == "no text service configured"
    assert results[S.MODALITY_VISION].status == S.MODALITY_STATUS_OK


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (fusion_pb2.AnalyzeRequest(), InvalidInput, "nothing to analyse"),
        (fusion_pb2.AnalyzeRequest(text="  \n"), InvalidInput, "nothing to analyse"),
        (fusion_pb2.AnalyzeRequest(image=b""), InvalidInput, "image is empty"),
        (fusion_pb2.AnalyzeRequest(text="x" * 101), TooLarge, "101 characters"),
    ],
)
async def test_bad_requests_are_rejected(
    orchestrator: Orchestrator, request_: fusion_pb2.AnalyzeRequest, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await orchestrator.analyze(request_)


async def test_budget_is_caller_deadline_minus_margin_capped(fakes: Fakes) -> None:
    limits = OrchestratorLimits(max_deadline_s=10, deadline_margin_s=0.25, deadline_margin_share=0.1)
    clients = ModalityClients(None, None, None)
    orchestrator = Orchestrator(clients, FusionConfig(), limits)
    await clients.close()
    assert orchestrator.budget(None) == 10
    assert orchestrator.budget(60.0) == 10
    # The margin is 10% of the caller's time, at least 0.25 s, at most half of it.
    assert orchestrator.budget(5.0) == pytest.approx(4.5)
    assert orchestrator.budget(1.0) == pytest.approx(0.75)
    assert orchestrator.budget(0.3) == pytest.approx(0.15)
    assert orchestrator.budget(0.0) == 0.0


async def test_restarted_service_is_used_again(orchestrator: Orchestrator, fakes: Fakes) -> None:
    address = fakes.addresses["vision"]
    await fakes.servers["vision"].stop(None)
    down = await orchestrator.analyze(fusion_pb2.AnalyzeRequest(image=b"img", text="hello"))
    assert by_modality(down)[S.MODALITY_VISION].status == S.MODALITY_STATUS_UNAVAILABLE
    restarted = grpc.aio.server()
    vision_pb2_grpc.add_VisionServiceServicer_to_server(FakeVision(), restarted)
    restarted.add_insecure_port(address)
    await restarted.start()
    fakes.servers["vision"] = restarted  # stopped by the fixture
    # The channel reconnects on its own (short backoff); poll until it does, the test's timeout bounds it.
    while True:
        response = await orchestrator.analyze(fusion_pb2.AnalyzeRequest(image=b"img", text="hello"))
        if by_modality(response)[S.MODALITY_VISION].status != S.MODALITY_STATUS_UNAVAILABLE:
            break
        await asyncio.sleep(0.1)
    assert by_modality(response)[S.MODALITY_VISION].status == S.MODALITY_STATUS_OK


@pytest.mark.parametrize(
    "probabilities", [[0.5, 0.5], [float("nan")] * 7, [0.0] * 7, [-1, 1, 1, 0, 0, 0, 0], [5.0] * 7]
)
async def test_malformed_modality_answer_is_unavailable_not_fatal(
    orchestrator: Orchestrator, fakes: Fakes, probabilities: list[float]
) -> None:
    fakes.text.probabilities = probabilities
    response = await orchestrator.analyze(FULL)
    text = by_modality(response)[S.MODALITY_TEXT]
    assert text.status == S.MODALITY_STATUS_UNAVAILABLE and "malformed distribution" in text.detail
    assert {w.modality for w in response.fused.weights} == {S.MODALITY_VISION, S.MODALITY_AUDIO}


@pytest.mark.parametrize("reliability", [float("nan"), 1.5, -0.2])
async def test_malformed_modality_reliability_is_unavailable_not_fatal(
    orchestrator: Orchestrator, fakes: Fakes, reliability: float
) -> None:
    fakes.text.reliability = reliability
    response = await orchestrator.analyze(FULL)
    text = by_modality(response)[S.MODALITY_TEXT]
    assert text.status == S.MODALITY_STATUS_UNAVAILABLE and "reliability must be a number in [0, 1]" in text.detail
    assert {w.modality for w in response.fused.weights} == {S.MODALITY_VISION, S.MODALITY_AUDIO}


async def test_no_usable_modality_because_services_are_down_is_unavailable(
    orchestrator: Orchestrator, fakes: Fakes
) -> None:
    for server in fakes.servers.values():
        await server.stop(None)
    with pytest.raises(Unavailable, match="no modality could be analysed") as error:
        await orchestrator.analyze(FULL)
    message = error.value.message
    assert "vision service: UNAVAILABLE" in message and "audio service" in message
    # The address of the modality services never reaches the caller (it is logged).
    for address in fakes.addresses.values():
        assert address not in message and address.split(":")[0] not in message
    assert "<address>" in message


async def test_one_failed_service_among_unusable_inputs_is_unavailable(
    orchestrator: Orchestrator, fakes: Fakes
) -> None:
    fakes.vision.face = False
    fakes.text.behaviour.error = grpc.StatusCode.INTERNAL
    with pytest.raises(Unavailable, match="vision: no face found; text service: INTERNAL: fake failure"):
        await orchestrator.analyze(fusion_pb2.AnalyzeRequest(image=b"img", text="hello"))


async def test_frozen_only_modality_is_unavailable_within_the_budget(orchestrator: Orchestrator, fakes: Fakes) -> None:
    fakes.text.behaviour.delay_s = 30
    with pytest.raises(Unavailable, match="text service did not answer within"):
        await orchestrator.analyze(fusion_pb2.AnalyzeRequest(text="hello"), caller_remaining_s=0.6)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            fusion_pb2.AnalyzeRequest(image=b"img"),
            r"nothing in the request could be analysed \(vision: no face found\)",
        ),
        (fusion_pb2.AnalyzeRequest(image=b"img", text="hi"), "vision: no face found; text service: fake failure"),
    ],
)
async def test_no_usable_modality_because_of_the_input_is_invalid_argument(
    orchestrator: Orchestrator, fakes: Fakes, request_: fusion_pb2.AnalyzeRequest, message: str
) -> None:
    fakes.vision.face = False
    fakes.text.behaviour.error = grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidInput, match=message):
        await orchestrator.analyze(request_)


async def test_overloaded_modality_is_unavailable_not_invalid_input(orchestrator: Orchestrator, fakes: Fakes) -> None:
    fakes.vision.behaviour.error = grpc.StatusCode.RESOURCE_EXHAUSTED
    fakes.vision.behaviour.details = "vision is busy"
    fakes.vision.behaviour.trailing_metadata = ((OVERLOADED_HEADER, "1"),)
    vision = by_modality(await orchestrator.analyze(FULL))[S.MODALITY_VISION]
    assert vision.status == S.MODALITY_STATUS_UNAVAILABLE
    assert vision.detail == "vision service: RESOURCE_EXHAUSTED: vision is busy"


async def test_modality_details_are_scrubbed_of_addresses(orchestrator: Orchestrator, fakes: Fakes) -> None:
    fakes.vision.behaviour.error = grpc.StatusCode.UNAVAILABLE
    fakes.vision.behaviour.details = (
        "model x is unavailable: failed to connect; last error: ipv4:10.1.2.3:8001: refused"
    )
    vision = by_modality(await orchestrator.analyze(FULL))[S.MODALITY_VISION]
    assert (
        vision.detail
        == "vision service: UNAVAILABLE: model x is unavailable: failed to connect; last error: <address>: refused"
    )


async def test_answer_is_sent_at_the_budget_even_if_a_call_never_returns(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A modality call that ignores its own deadline: the orchestrator stops waiting at the budget.
    async def never_returns(request: text_pb2.AnalyzeTextRequest, **kwargs: object) -> text_pb2.AnalyzeTextResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(orchestrator.clients.text, "AnalyzeText", never_returns)
    response = await orchestrator.analyze(FULL, caller_remaining_s=0.6)
    results = by_modality(response)
    assert results[S.MODALITY_TEXT].status == S.MODALITY_STATUS_TIMED_OUT
    assert results[S.MODALITY_TEXT].detail == "text: no answer within the call's 350 ms budget"
    assert {w.modality for w in response.fused.weights} == {S.MODALITY_VISION, S.MODALITY_AUDIO}
