"""Analyze: fan out to the vision, audio and text services in parallel under one deadline, turn every
outcome (answer, error, timeout, absent service) into a ModalityResult, and fuse what came back.

Deadline: the whole call has one budget, the caller's gRPC deadline less a margin (so the partial
answer still reaches the caller in time on a busy machine: a share of the deadline with a floor),
capped by EMOMESH_FUSION_MAX_DEADLINE_S. Every outbound call gets the time left until that common
deadline, and the orchestrator stops waiting at that deadline whatever the calls do, so a slow or
frozen modality costs at most the budget and never fails the call. When no text is given and the
audio is transcribed, the text service runs on the transcript AFTER the audio call returns, inside
the same budget: the text call gets whatever time the audio call left (vision runs in parallel with
both). If less than min_call_budget_s is left, text is reported TIMED_OUT without being called.

No usable modality is an error, never an OK without a fused result: UNAVAILABLE when a modality
service failed or timed out (retrying may help), INVALID_ARGUMENT when every modality sent was
rejected or unusable because of the input (no face, no speech, a corrupt file).

Details passed on from the modality services' errors are scrubbed of network addresses (the full
text is logged)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from emomesh.admission import OVERLOADED_HEADER
from emomesh.errors import InvalidInput, TooLarge, Unavailable
from emomesh.labels import MODALITY_NAMES
from emomesh.logs import outbound_metadata
from emomesh.metrics import MODALITY_AVAILABLE, MODALITY_RESULTS
from emomesh.redact import scrub_addresses
from emomesh.security import ClientSecurity, open_aio_channel
from emomesh.server import grpc_options
from emomesh.tracing import client_interceptors
from emotion.audio.v1 import audio_pb2, audio_pb2_grpc
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2
from emotion.text.v1 import text_pb2, text_pb2_grpc
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.fusion.fuse import FusionConfig, distribution_problem, fuse, reliability_problem
from services.fusion.metrics import FUSED_MODALITIES, FUSION_CONFLICTS
from services.fusion.transcript import describe_confidence, no_text_reason, transcript_text_reliability

log = logging.getLogger(__name__)

Response = TypeVar("Response", bound=Message)

# gRPC codes that mean "the modality service did not like this input" rather than "it is broken".
_INPUT_CODES = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE)


# A modality in one of these states failed on the server side: retrying the call may help.
_SERVER_FAILURES = (common_pb2.MODALITY_STATUS_UNAVAILABLE, common_pb2.MODALITY_STATUS_TIMED_OUT)


@dataclass(frozen=True)
class OrchestratorLimits:
    max_deadline_s: float = 30.0
    # Kept back from the caller's deadline: max(deadline_margin_s, deadline_margin_share x the time
    # the caller gave), but never more than half of it.
    deadline_margin_s: float = 0.25
    deadline_margin_share: float = 0.1
    min_call_budget_s: float = 0.02
    max_request_bytes: int = 64 * 1024 * 1024
    max_text_chars: int = 20_000


class ModalityClients:
    """One channel per modality service, created once and shared by all calls. An address of None
    means the deployment has no such service: that modality is then always UNAVAILABLE. `security`
    gives TLS and the bearer token per modality name (a modality not in it: plaintext, no token)."""

    def __init__(
        self,
        vision_addr: str | None,
        audio_addr: str | None,
        text_addr: str | None,
        max_message_bytes: int = 64 * 1024 * 1024,
        security: Mapping[str, ClientSecurity] | None = None,
    ) -> None:
        # Short reconnect backoff: a restarted modality service (a rolling update, a crash loop that
        # recovers) is used again within seconds instead of after gRPC's default of up to 120 s.
        options = [
            *grpc_options(max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        self.addresses = {"vision": vision_addr, "audio": audio_addr, "text": text_addr}
        # Each call gets a client span (emomesh.tracing): a slow Analyze shows which modality was slow.
        self._channels = {
            name: open_aio_channel(addr, (security or {}).get(name), options, client_interceptors(addr))
            for name, addr in self.addresses.items()
            if addr
        }
        self.vision = vision_pb2_grpc.VisionServiceStub(self._channels["vision"]) if vision_addr else None
        self.audio = audio_pb2_grpc.AudioServiceStub(self._channels["audio"]) if audio_addr else None
        self.text = text_pb2_grpc.TextServiceStub(self._channels["text"]) if text_addr else None

    @property
    def channels(self) -> dict[str, grpc.aio.Channel]:
        """The channel of each configured modality service, by name (for fusion's readiness)."""
        return dict(self._channels)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


class _Deadline:
    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.at = time.monotonic() + budget_s

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())


@dataclass
class _Outcome:
    """One modality's result plus the full service response when there was one."""

    result: common_pb2.ModalityResult
    response: Any = None


def _result(
    modality: common_pb2.Modality, status: common_pb2.ModalityStatus, detail: str = "", latency_ms: float = 0.0
) -> common_pb2.ModalityResult:
    return common_pb2.ModalityResult(modality=modality, status=status, detail=detail, latency_ms=latency_ms)


def _reason(result: common_pb2.ModalityResult) -> str:
    """Why a modality did not take part, starting with its name."""
    name = MODALITY_NAMES[result.modality]
    detail = result.detail or common_pb2.ModalityStatus.Name(result.status)
    return detail if detail.startswith(name) else f"{name}: {detail}"


def _overloaded(err: grpc.aio.AioRpcError) -> bool:
    """A RESOURCE_EXHAUSTED that means "busy, retry" (emomesh.admission), not "input too large"."""
    return any(key == OVERLOADED_HEADER for key, _ in err.trailing_metadata() or ())


async def _call(
    modality: common_pb2.Modality,
    method: Callable[..., Awaitable[Response]],
    request: Message,
    deadline: _Deadline,
    min_budget_s: float,
) -> tuple[Response | common_pb2.ModalityResult, float]:
    """Calls one modality RPC with the time left; returns (response, ms), or (failed result, ms)."""
    name = MODALITY_NAMES[modality]
    timeout = deadline.remaining()
    if timeout < min_budget_s:
        return _result(modality, common_pb2.MODALITY_STATUS_TIMED_OUT, f"{name}: no time left to call"), 0.0
    start = time.perf_counter()
    try:
        response = await method(request, timeout=timeout, metadata=outbound_metadata())
    except grpc.aio.AioRpcError as err:
        ms = (time.perf_counter() - start) * 1000
        code = err.code()
        # The details may name peers ("ipv4:10.0.0.7:50051: Connection refused"): logged in full,
        # scrubbed for the caller.
        details = err.details() or ""
        log.warning(
            "modality call failed",
            extra={"fields": {"modality": name, "code": code.name, "details": details, "ms": round(ms, 1)}},
        )
        details = scrub_addresses(details)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            status = common_pb2.MODALITY_STATUS_TIMED_OUT
            detail = f"{name} service did not answer within {timeout * 1000:.0f} ms"
        elif code in _INPUT_CODES and not _overloaded(err):
            status, detail = common_pb2.MODALITY_STATUS_INVALID_INPUT, f"{name} service: {details}"
        else:
            status, detail = common_pb2.MODALITY_STATUS_UNAVAILABLE, f"{name} service: {code.name}: {details}"
        return _result(modality, status, detail, ms), ms
    return response, (time.perf_counter() - start) * 1000


def graded_result(
    modality: common_pb2.Modality,
    distribution: common_pb2.EmotionDistribution | None,
    reliability: float,
    low_reason: str,
    model: common_pb2.ModelInfo,
    latency_ms: float,
    min_reliability: float,
) -> common_pb2.ModalityResult:
    """An answered modality: OK, or LOW_CONFIDENCE when it has no distribution or too little reliability."""
    result = _result(modality, common_pb2.MODALITY_STATUS_OK, latency_ms=latency_ms)
    result.model.CopyFrom(model)
    # A broken modality must not fail the whole Analyze call through Fuse's input checks.
    problem = distribution_problem(distribution.probabilities) if distribution is not None else None
    if problem is not None:
        result.status = common_pb2.MODALITY_STATUS_UNAVAILABLE
        result.detail = f"{MODALITY_NAMES[modality]} service returned a malformed distribution: {problem}"
        return result
    problem = reliability_problem(reliability)
    if problem is not None:
        result.status = common_pb2.MODALITY_STATUS_UNAVAILABLE
        result.detail = f"{MODALITY_NAMES[modality]} service returned a malformed result: {problem}"
        return result
    result.reliability = reliability
    if distribution is not None:
        result.distribution.CopyFrom(distribution)
    if not low_reason and distribution is None:
        low_reason = "the service returned no distribution"
    if not low_reason and reliability < min_reliability:
        low_reason = f"reliability {reliability:.2f} below {min_reliability:.2f}"
    if low_reason:
        result.status = common_pb2.MODALITY_STATUS_LOW_CONFIDENCE
        result.detail = low_reason
    return result


class Orchestrator:
    def __init__(self, clients: ModalityClients, fusion: FusionConfig, limits: OrchestratorLimits) -> None:
        self.clients = clients
        self.fusion = fusion
        self.limits = limits

    def margin(self, caller_remaining_s: float) -> float:
        """Time kept back from the caller's deadline to build and send the answer: a share of it with
        a floor (a fixed 50 ms was too thin on a busy CPU), never more than half of it."""
        share = self.limits.deadline_margin_share * caller_remaining_s
        return min(max(self.limits.deadline_margin_s, share), caller_remaining_s / 2)

    def budget(self, caller_remaining_s: float | None) -> float:
        """The call's budget: the caller's deadline less the margin, capped by the configured maximum."""
        if caller_remaining_s is None:
            return self.limits.max_deadline_s
        remaining = max(0.0, caller_remaining_s)
        return min(self.limits.max_deadline_s, remaining - self.margin(remaining))

    def _validate(self, request: fusion_pb2.AnalyzeRequest) -> None:
        visual = request.WhichOneof("visual")
        if visual is None and not request.audio and not request.text.strip():
            raise InvalidInput("nothing to analyse: send an image or video, audio, or text")
        if visual is not None and not getattr(request, visual):
            raise InvalidInput(f"{visual} is empty")
        size = request.ByteSize()
        if size > self.limits.max_request_bytes:
            raise TooLarge(f"request is {size} bytes; the limit is {self.limits.max_request_bytes}")
        if len(request.text) > self.limits.max_text_chars:
            raise TooLarge(f"text has {len(request.text)} characters; the limit is {self.limits.max_text_chars}")

    async def analyze(
        self, request: fusion_pb2.AnalyzeRequest, caller_remaining_s: float | None = None
    ) -> fusion_pb2.AnalyzeResponse:
        start = time.perf_counter()
        self._validate(request)
        budget = self.budget(caller_remaining_s)
        deadline = _Deadline(budget)
        # The backstop below waits a little past the calls' own deadline (inside the margin), so that
        # normally the calls time out first and say so.
        margin = self.limits.max_deadline_s if caller_remaining_s is None else caller_remaining_s - budget
        backstop_grace_s = min(0.1, max(0.0, margin) / 4)
        transcript_wanted = request.transcript_as_text if request.HasField("transcript_as_text") else True
        use_transcript = bool(request.audio) and not request.text.strip() and transcript_wanted
        audio_task = asyncio.create_task(self._audio(request.audio, use_transcript, deadline))
        vision_task = asyncio.create_task(self._vision(request, deadline))
        text_task = asyncio.create_task(self._text(request, audio_task if use_transcript else None, deadline))
        # The calls carry the same deadline, but the answer must not depend on them honouring it:
        # whatever has not finished when the budget is spent is cancelled and reported TIMED_OUT.
        _, late = await asyncio.wait(
            (vision_task, audio_task, text_task), timeout=deadline.remaining() + backstop_grace_s
        )
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        vision = self._finished(vision_task, common_pb2.MODALITY_VISION, deadline)
        audio = self._finished(audio_task, common_pb2.MODALITY_AUDIO, deadline)
        if text_task.cancelled():
            text, from_transcript = self._timed_out(common_pb2.MODALITY_TEXT, deadline), False
        else:
            text, from_transcript = text_task.result()

        response = fusion_pb2.AnalyzeResponse(text_from_transcript=from_transcript)
        for outcome in (vision, audio, text):
            self._record(outcome.result)
            response.modalities.append(outcome.result)
        if isinstance(vision.response, vision_pb2.AnalyzeImageResponse):
            response.image.CopyFrom(vision.response)
        elif isinstance(vision.response, vision_pb2.AnalyzeVideoResponse):
            response.video.CopyFrom(vision.response)
        if audio.response is not None:
            response.audio.CopyFrom(audio.response)
        if text.response is not None:
            response.text.CopyFrom(text.response)
        fused = fuse(response.modalities, self.fusion)
        if not fused.HasField("distribution"):
            raise self._nothing_usable(response.modalities)
        response.fused.CopyFrom(fused)
        FUSED_MODALITIES.observe(len(fused.weights))
        if fused.conflict:
            FUSION_CONFLICTS.inc()
        response.latency_ms = (time.perf_counter() - start) * 1000
        return response

    @staticmethod
    def _timed_out(modality: common_pb2.Modality, deadline: _Deadline) -> _Outcome:
        detail = f"{MODALITY_NAMES[modality]}: no answer within the call's {deadline.budget_s * 1000:.0f} ms budget"
        return _Outcome(_result(modality, common_pb2.MODALITY_STATUS_TIMED_OUT, detail, deadline.budget_s * 1000))

    def _finished(self, task: asyncio.Task[_Outcome], modality: common_pb2.Modality, deadline: _Deadline) -> _Outcome:
        return task.result() if not task.cancelled() else self._timed_out(modality, deadline)

    @staticmethod
    def _nothing_usable(results: Sequence[common_pb2.ModalityResult]) -> Unavailable | InvalidInput:
        """The error for a call where no modality can be fused, with each sent modality's reason."""
        sent = [r for r in results if r.status != common_pb2.MODALITY_STATUS_MISSING]
        reasons = "; ".join(_reason(r) for r in sent)
        if any(r.status in _SERVER_FAILURES for r in sent):
            return Unavailable(f"no modality could be analysed ({reasons})")
        return InvalidInput(f"nothing in the request could be analysed ({reasons})")

    @staticmethod
    def _record(result: common_pb2.ModalityResult) -> None:
        name = MODALITY_NAMES[result.modality]
        MODALITY_RESULTS.labels(name, common_pb2.ModalityStatus.Name(result.status)).inc()
        if result.status in (common_pb2.MODALITY_STATUS_UNAVAILABLE, common_pb2.MODALITY_STATUS_TIMED_OUT):
            MODALITY_AVAILABLE.labels(name).set(0)
        elif result.status != common_pb2.MODALITY_STATUS_MISSING:
            MODALITY_AVAILABLE.labels(name).set(1)

    def _graded(
        self,
        modality: common_pb2.Modality,
        distribution: common_pb2.EmotionDistribution | None,
        reliability: float,
        low_reason: str,
        model: common_pb2.ModelInfo,
        latency_ms: float,
    ) -> common_pb2.ModalityResult:
        return graded_result(
            modality, distribution, reliability, low_reason, model, latency_ms, self.fusion.min_reliability
        )

    async def _vision(self, request: fusion_pb2.AnalyzeRequest, deadline: _Deadline) -> _Outcome:
        modality = common_pb2.MODALITY_VISION
        visual = request.WhichOneof("visual")
        if visual is None:
            return _Outcome(_result(modality, common_pb2.MODALITY_STATUS_MISSING, "no image or video sent"))
        if self.clients.vision is None:
            return _Outcome(_result(modality, common_pb2.MODALITY_STATUS_UNAVAILABLE, "no vision service configured"))
        if visual == "image":
            image, ms = await _call(
                modality,
                self.clients.vision.AnalyzeImage,
                vision_pb2.AnalyzeImageRequest(image=request.image),
                deadline,
                self.limits.min_call_budget_s,
            )
            if isinstance(image, common_pb2.ModalityResult):
                return _Outcome(image)
            has_face = image.HasField("primary")
            result = self._graded(
                modality,
                image.primary if has_face else None,
                1.0 if has_face else 0.0,
                "" if has_face else "no face found",
                image.model,
                ms,
            )
            return _Outcome(result, image)
        video, ms = await _call(
            modality,
            self.clients.vision.AnalyzeVideo,
            vision_pb2.AnalyzeVideoRequest(video=request.video),
            deadline,
            self.limits.min_call_budget_s,
        )
        if isinstance(video, common_pb2.ModalityResult):
            return _Outcome(video)
        with_faces = video.frames_sampled - video.frames_without_faces
        # Reliability of a clip: the share of sampled frames where a face was seen.
        reliability = with_faces / video.frames_sampled if video.frames_sampled > 0 else 0.0
        has_face = with_faces > 0 and video.HasField("aggregate")
        result = self._graded(
            modality,
            video.aggregate if has_face else None,
            reliability,
            "" if has_face else "no face in any sampled frame",
            video.model,
            ms,
        )
        return _Outcome(result, video)

    async def _audio(self, audio: bytes, transcribe: bool, deadline: _Deadline) -> _Outcome:
        modality = common_pb2.MODALITY_AUDIO
        if not audio:
            return _Outcome(_result(modality, common_pb2.MODALITY_STATUS_MISSING, "no audio sent"))
        if self.clients.audio is None:
            return _Outcome(_result(modality, common_pb2.MODALITY_STATUS_UNAVAILABLE, "no audio service configured"))
        response, ms = await _call(
            modality,
            self.clients.audio.AnalyzeAudio,
            audio_pb2.AnalyzeAudioRequest(audio=audio, transcribe=transcribe),
            deadline,
            self.limits.min_call_budget_s,
        )
        if isinstance(response, common_pb2.ModalityResult):
            return _Outcome(response)
        result = self._graded(
            modality,
            response.distribution if response.HasField("distribution") else None,
            response.reliability,
            "" if response.speech_detected else "no speech detected",
            response.model,
            ms,
        )
        return _Outcome(result, response)

    async def _text(
        self, request: fusion_pb2.AnalyzeRequest, audio_task: asyncio.Task[_Outcome] | None, deadline: _Deadline
    ) -> tuple[_Outcome, bool]:
        modality = common_pb2.MODALITY_TEXT
        text = request.text
        from_transcript = False
        transcript: audio_pb2.Transcript | None = None
        language_hint = ""
        if not text.strip() and audio_task is not None:
            audio = await audio_task
            if audio.response is None:
                why: str | None = "audio failed, so no transcript"
            else:
                transcript = audio.response.transcript
                # An empty transcript, or one of no speech, gives no text modality at all.
                why = no_text_reason(transcript)
            if why is not None or transcript is None:
                return _Outcome(_result(modality, common_pb2.MODALITY_STATUS_MISSING, f"no text sent; {why}")), False
            text, from_transcript = transcript.text.strip(), True
            # The recogniser heard the language (Whisper's language id on the whole clip): a better
            # guess than the text service can make from a short, possibly misheard sentence, and
            # the one that routes the words to the right text model.
            language_hint = transcript.language
        if not text.strip():
            return _Outcome(_result(modality, common_pb2.MODALITY_STATUS_MISSING, "no text sent")), False
        if self.clients.text is None:
            unavailable = _result(modality, common_pb2.MODALITY_STATUS_UNAVAILABLE, "no text service configured")
            return _Outcome(unavailable), from_transcript
        response, ms = await _call(
            modality,
            self.clients.text.AnalyzeText,
            # The conversation goes with the words, typed or transcribed: the text service reads it.
            text_pb2.AnalyzeTextRequest(
                text=text, language_hint=language_hint, speaker=request.speaker, context=request.context
            ),
            deadline,
            self.limits.min_call_budget_s,
        )
        if isinstance(response, common_pb2.ModalityResult):
            return _Outcome(response), from_transcript
        # Words from a transcript are worth only as much as the recogniser was sure of them.
        reliability = response.reliability
        if transcript is not None:
            reliability = transcript_text_reliability(response.reliability, transcript)
        result = self._graded(
            modality,
            response.distribution if response.HasField("distribution") else None,
            reliability,
            "",
            response.model,
            ms,
        )
        if result.status == common_pb2.MODALITY_STATUS_LOW_CONFIDENCE:
            reasons = [describe_confidence(transcript)] if transcript is not None else []
            reasons += [response.note] if response.note else []
            if reasons:
                result.detail += f" ({'; '.join(reasons)})"
        return _Outcome(result, response), from_transcript
