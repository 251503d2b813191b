"""AnalyzeStream: one live session, with a fast face lane and a slow voice-and-words lane
(docs/live.md; the pure rules are in services/fusion/live.py).

Why in fusion: a live state is a fusion of the modalities over time, and fusion already holds the
channels to the three modality services (with their TLS and tokens), the fusion weights and the
network policy that lets it reach them. A separate service would copy all of that for one more hop.

Tasks of one stream, all cancelled together when the client cancels, disappears or breaks a limit:
- reader: takes the client's messages. A frame goes into a one-slot mailbox (the newest wins), audio
  into a bounded buffer (encoded audio through a decoder thread first, services/fusion/container.py),
  a text turn into a short queue. It never waits for analysis.
- face lane (EMOMESH_FUSION_STREAM_FRAMES_IN_FLIGHT workers): takes the newest frame, asks the vision
  service (whose Triton models batch frames of all streams that arrive together), tracks faces by box
  overlap, answers StreamFaces. A frame that finishes after a newer one was answered is dropped.
- voice lane: every hop, the newest complete window to the audio service (emotion, speech or not).
  One call at a time: when it falls behind it skips windows (counted), never queues them. Speech
  windows grow the utterance in progress; a pause (a window without speech) ends it.
- ASR lane: the utterance so far to the ASR (partial words; only the newest span is kept, so it never
  falls behind), and each ended utterance once more for its final words, which go to the text lane.
  The windows' emotion never waits for words.
- text lane: typed turns and final transcripts to the text service, with the stream's earlier turns
  as conversation context.
- ticker: stats every second, the duration limit.
Every result updates the fused state: the modalities' fresh results fused with the service's weights,
smoothed over time, with "changed to X" events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Any

import grpc

from emomesh.errors import EmomeshError, InvalidInput, TooLarge, Unavailable
from emomesh.labels import distribution_from_probs, probs_from_distribution
from emomesh.redact import scrub_addresses
from emomesh.tracking import IouTracker
from emotion.audio.v1 import audio_pb2
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2
from emotion.text.v1 import text_pb2
from emotion.vision.v1 import vision_pb2
from services.fusion.container import SAMPLE_RATE as DECODED_RATE
from services.fusion.container import ContainerDecoder
from services.fusion.fuse import FusionConfig, fuse
from services.fusion.live import (
    AudioBuffer,
    ChangeDetector,
    FreshResults,
    LatestFrame,
    RateLimit,
    Smoother,
    Utterances,
    WindowSchedule,
    emotion_of,
    wav_bytes,
)
from services.fusion.metrics import (
    STREAM_ENDS,
    STREAM_FACE_LATENCY,
    STREAM_FRAMES,
    STREAM_SPEECH_LATENCY,
    STREAMS_ACTIVE,
)
from services.fusion.orchestrator import ModalityClients, graded_result

log = logging.getLogger(__name__)

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 48000
MAX_CHANNELS = 8
# Typed turns waiting for the text service; more are refused one by one (an `error` event).
TEXT_QUEUE = 8
# Stats every second; the fused state at most this often (it changes with every frame).
STATS_INTERVAL_S = 1.0
STATE_INTERVAL_S = 0.2
TRACK_MAX_SHIFT = 1.5
# After the client's end, the decoder of encoded audio has this long to finish (it decodes far faster
# than real time, so only a stuck decoder takes longer).
DECODER_DRAIN_S = 10.0
# How often decoded audio is collected from the decoder thread (a 100 ms chunk waits at most this long).
DECODER_POLL_S = 0.02
# A refused stream is refused once its opening message is in, or after this long without one: a status
# sent while the client is still writing that message reaches the client as INTERNAL instead of its own
# (grpc/grpc#36066).
REFUSAL_READ_S = 2.0


@dataclass(frozen=True)
class StreamLimits:
    """Per fusion service (EMOMESH_FUSION_STREAM_*, services/fusion/config.py)."""

    max_streams: int = 8
    max_duration_s: float = 3600.0
    max_bytes: int = 4 << 30
    max_fps: int = 60
    frames_in_flight: int = 2
    window_s: float = 3.0
    hop_s: float = 1.5
    max_utterance_s: float = 15.0
    # Each call to a modality service; the stream's own deadline, when shorter, wins.
    call_timeout_s: float = 10.0
    # Events kept for a client that does not read them; beyond that frames' and states' events are dropped.
    event_queue: int = 256
    max_text_chars: int = 20_000
    text_context_turns: int = 8
    smoothing_s: float = 2.0


@dataclass(frozen=True)
class _Frame:
    index: int
    arrived: float
    message: fusion_pb2.StreamFrame


@dataclass(frozen=True)
class _Turn:
    text: str
    from_transcript: bool
    item: str


class _Closed:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class StreamHub:
    """Counts the streams in flight against the limit and runs each one."""

    def __init__(self, clients: ModalityClients, fusion: FusionConfig, limits: StreamLimits) -> None:
        self.clients = clients
        self.fusion = fusion
        self.limits = limits
        self.active = 0

    async def run(
        self, requests: AsyncIterator[fusion_pb2.StreamRequest], time_remaining: float | None
    ) -> AsyncGenerator[fusion_pb2.StreamEvent, None]:
        if self.active >= self.limits.max_streams:
            STREAM_ENDS.labels("refused").inc()
            active = self.active
            with suppress(Exception):  # whatever the opening message is, or is not, the answer is the same
                await asyncio.wait_for(anext(aiter(requests)), REFUSAL_READ_S)
            raise TooLarge(f"{active} streams are in flight; the limit is {self.limits.max_streams}")
        self.active += 1
        STREAMS_ACTIVE.set(self.active)
        reason = "error"
        try:
            session = StreamSession(self, time_remaining)
            # Closed with this generator, not whenever it is garbage collected: a consumer that stops
            # reading (aclose) ends the session's tasks, and its calls to the modality services, here.
            async with aclosing(session.run(requests)) as events:
                async for event in events:
                    yield event
            reason = "ended"
        except (asyncio.CancelledError, GeneratorExit):
            reason = "cancelled"
            raise
        except TooLarge:
            reason = "limit"
            raise
        finally:
            self.active -= 1
            STREAMS_ACTIVE.set(self.active)
            STREAM_ENDS.labels(reason).inc()


class StreamSession:
    def __init__(self, hub: StreamHub, time_remaining: float | None) -> None:
        self.clients = hub.clients
        self.fusion = hub.fusion
        self.limits = hub.limits
        self.t0 = time.monotonic()
        self.deadline = None if time_remaining is None else self.t0 + time_remaining
        self.outbox: asyncio.Queue[fusion_pb2.StreamEvent | _Closed] = asyncio.Queue()
        self.stats = fusion_pb2.StreamStats()
        self.slot: LatestFrame[_Frame] = LatestFrame()
        self.frame_rate = RateLimit(self.limits.max_fps)
        self.analysed = RateLimit(1 << 30)  # frames analysed in the last second, for analysed_fps
        # Frames the lane drops leave gaps in which a face moves: by overlap first, else by a shift of up
        # to one and a half face sizes (emomesh.tracking).
        self.tracker = IouTracker(max_shift=TRACK_MAX_SHIFT)
        self.last_frame_answered = -1
        self.audio: AudioBuffer | None = None
        # Replaced in _start by the stream's own sample rate when it sends audio.
        self.windows = WindowSchedule(int(self.limits.window_s * 16000), int(self.limits.hop_s * 16000))
        self.utterances = Utterances(int(self.limits.max_utterance_s * 16000))
        self._last_words: tuple[tuple[int, int], str] | None = None
        # The end of the last audio window analysed (samples).
        self._analysed_to = 0
        # The ASR lane's work: the newest utterance-so-far (latest wins) and every ended utterance.
        self.partial_span: tuple[int, int] | None = None
        self.final_spans: deque[tuple[int, int]] = deque()
        self.asr_work = asyncio.Event()
        self.voice_done = False
        self.audio_arrivals: deque[tuple[int, float]] = deque()  # (samples received, when), oldest first
        self.audio_arrived = asyncio.Event()
        self.input_done = asyncio.Event()
        # All the audio is in: at the client's end, or once the decoder has decoded the last bytes.
        self.audio_done = asyncio.Event()
        self.decoder: ContainerDecoder | None = None
        # Set when the decoder did not finish in time after the end (_finish): its audio is not waited for.
        self._decoder_abandoned = False
        self.text_queue: asyncio.Queue[_Turn | None] = asyncio.Queue()
        # Only the turns the text service will be sent as context are kept.
        self.turns: deque[text_pb2.ConversationTurn] = deque(maxlen=max(1, self.limits.text_context_turns))
        self.fresh = FreshResults()
        self.transcribe = True
        self.speaker = ""
        self.smoother = Smoother(self.limits.smoothing_s)
        self.changes = ChangeDetector()
        self.last_state_at = -1.0

    # -- plumbing -----------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _timeout(self) -> float:
        timeout = self.limits.call_timeout_s
        if self.deadline is not None:
            timeout = min(timeout, max(0.001, self.deadline - time.monotonic()))
        return timeout

    def emit(self, droppable: bool = True, **event: Any) -> None:
        """Queues an event for the client. Frames' and states' events are dropped (and counted) while the
        client is not reading; the rest (errors, speech, words, text, changes, stats) are kept up to four
        times longer, so a client that never reads cannot grow the queue without bound."""
        limit = self.limits.event_queue if droppable else 4 * self.limits.event_queue
        if self.outbox.qsize() >= limit:
            self.stats.events_dropped += 1
            return
        self.outbox.put_nowait(fusion_pb2.StreamEvent(time_s=self.now(), **event))

    def fail(self, error: BaseException) -> None:
        self.outbox.put_nowait(_Closed(error))

    def item_error(self, item: str, code: grpc.StatusCode, message: str) -> None:
        error = fusion_pb2.StreamItemError(item=item, code=code.value[0], message=message)
        self.emit(droppable=False, error=error)

    def _rpc_error(self, item: str, exc: grpc.aio.AioRpcError) -> None:
        details = scrub_addresses(exc.details() or "")
        log.info("stream item failed", extra={"fields": {"item": item, "code": exc.code().name, "detail": details}})
        self.item_error(item, exc.code(), details)

    async def _guard(self, lane: Callable[[], Awaitable[None]]) -> None:
        """Runs a task; its failure ends the stream with its status (a bug with UNAVAILABLE)."""
        try:
            await lane()
        except asyncio.CancelledError:
            raise
        except EmomeshError as exc:
            self.fail(exc)
        except Exception as exc:
            log.exception("stream task failed")
            self.fail(Unavailable(f"the stream failed: {type(exc).__name__}"))

    # -- the stream ---------------------------------------------------------------------------

    async def run(
        self, requests: AsyncIterator[fusion_pb2.StreamRequest]
    ) -> AsyncGenerator[fusion_pb2.StreamEvent, None]:
        first = await anext(requests, None)
        if first is None or first.WhichOneof("message") != "start":
            raise InvalidInput("the first message of a stream must be `start`")
        self._start(first.start)
        self.emit(
            droppable=False,
            started=fusion_pb2.StreamStarted(
                transcribe=self.transcribe,
                smoothing_s=self.smoother.time_constant_s,
                window_s=self.limits.window_s,
                hop_s=self.limits.hop_s,
                max_duration_s=self.limits.max_duration_s,
                max_bytes=self.limits.max_bytes,
                max_fps=self.limits.max_fps,
            ),
        )
        lanes = [asyncio.create_task(self._guard(self._face_lane)) for _ in range(max(1, self.limits.frames_in_flight))]
        lanes.append(asyncio.create_task(self._guard(self._voice_lane)))
        lanes.append(asyncio.create_task(self._guard(self._asr_lane)))
        if self.decoder is not None:
            lanes.append(asyncio.create_task(self._guard(self._collect_decoded)))
        text_lane = asyncio.create_task(self._guard(self._text_lane))
        reader = asyncio.create_task(self._guard(lambda: self._read(requests)))
        tasks = [reader, *lanes, text_lane, asyncio.create_task(self._guard(self._tick))]
        tasks.append(asyncio.create_task(self._finish(reader, lanes, text_lane)))
        try:
            while True:
                item = await self.outbox.get()
                if isinstance(item, _Closed):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            if self.decoder is not None:
                self.decoder.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, start: fusion_pb2.StreamStart) -> None:
        encoding = start.audio_encoding
        if encoding == fusion_pb2.AUDIO_ENCODING_PCM16:
            if not MIN_SAMPLE_RATE <= start.sample_rate_hz <= MAX_SAMPLE_RATE:
                raise InvalidInput(
                    f"sample_rate_hz {start.sample_rate_hz} is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE}"
                )
            if not 1 <= start.channels <= MAX_CHANNELS:
                raise InvalidInput(f"channels {start.channels} is outside 1-{MAX_CHANNELS}")
            self._audio_buffer(start.sample_rate_hz, start.channels)
        elif encoding == fusion_pb2.AUDIO_ENCODING_CONTAINER:
            self._audio_buffer(DECODED_RATE, 1)
            self.decoder = ContainerDecoder()
            self.decoder.start()
        elif encoding != fusion_pb2.AUDIO_ENCODING_UNSPECIFIED:
            raise InvalidInput(f"audio_encoding {encoding} is not one this server reads (PCM16, CONTAINER)")
        self._apply(start.settings)

    def _audio_buffer(self, rate: int, channels: int) -> None:
        # The utterance in progress and the window after it must stay in the buffer.
        capacity = self.limits.max_utterance_s + 2 * self.limits.window_s
        self.audio = AudioBuffer(rate, channels, capacity)
        self.windows = WindowSchedule(int(self.limits.window_s * rate), int(self.limits.hop_s * rate))
        self.utterances = Utterances(int(self.limits.max_utterance_s * rate))

    def _apply(self, settings: fusion_pb2.StreamSettings) -> None:
        if settings.HasField("transcribe"):
            self.transcribe = settings.transcribe
        if settings.HasField("smoothing_s"):
            if not 0 <= settings.smoothing_s <= 600:
                raise InvalidInput(f"smoothing_s {settings.smoothing_s} is outside 0-600 s")
            self.smoother.time_constant_s = settings.smoothing_s
        if settings.speaker:
            self.speaker = settings.speaker

    async def _read(self, requests: AsyncIterator[fusion_pb2.StreamRequest]) -> None:
        turns = 0
        try:
            async for request in requests:
                self.stats.bytes_received += request.ByteSize()
                if self.stats.bytes_received > self.limits.max_bytes:
                    raise TooLarge(
                        f"the stream sent {self.stats.bytes_received} bytes; the limit is {self.limits.max_bytes}"
                    )
                kind = request.WhichOneof("message")
                if kind == "frame":
                    self._frame(request.frame)
                elif kind == "audio":
                    self._audio(request.audio.data)
                elif kind == "text":
                    turns += 1
                    self._text(request.text.text, turns)
                elif kind == "settings":
                    self._apply(request.settings)
                elif kind == "end":
                    break
                elif kind == "start":
                    raise InvalidInput("`start` may only be the first message of a stream")
                else:
                    raise InvalidInput("a stream message must set one of start, frame, audio, text, settings, end")
        finally:
            self.input_done.set()
            self.slot.close()
            if self.decoder is not None:
                self.decoder.end()  # audio_done once it has decoded what it holds
            else:
                self.audio_done.set()
            self.audio_arrived.set()

    def _frame(self, frame: fusion_pb2.StreamFrame) -> None:
        now = self.now()
        if not self.frame_rate.allow(now):
            raise TooLarge(f"frames arrive faster than {self.limits.max_fps} per second, the limit")
        index = self.stats.frames_received
        self.stats.frames_received += 1
        if self.slot.put(_Frame(index, now, frame)):
            self.stats.frames_dropped += 1
            STREAM_FRAMES.labels("dropped").inc()

    def _audio(self, data: bytes) -> None:
        if self.audio is None:
            raise InvalidInput("audio was sent, but `start` declared no audio_encoding")
        if self.decoder is not None:
            self.decoder.feed(data)
        else:
            self._received(data)

    async def _collect_decoded(self) -> None:
        """Moves what the decoder thread decoded into the audio buffer, until it has finished."""
        assert self.decoder is not None
        while True:
            finished = self.decoder.finished  # read before draining: nothing is decoded after it is set
            for samples in self.decoder.drain():
                self._received(samples.astype("<i2").tobytes())
            if finished and self.decoder.error is not None:
                raise self.decoder.error
            if finished or self._decoder_abandoned:
                self._decoder_done()
                return
            await asyncio.sleep(DECODER_POLL_S)

    def _decoder_done(self) -> None:
        self.audio_done.set()
        self.audio_arrived.set()  # wakes the voice lane for the last window

    def _received(self, pcm16: bytes) -> None:
        assert self.audio is not None
        self.audio.append(pcm16)
        self.stats.audio_received_s = self.audio.seconds
        self.audio_arrivals.append((self.audio.end, self.now()))
        # Only the audio the buffer still holds can be asked about.
        while len(self.audio_arrivals) > 1 and self.audio_arrivals[1][0] <= self.audio.start:
            self.audio_arrivals.popleft()
        self.audio_arrived.set()

    def _text(self, text: str, turn: int) -> None:
        item = f"text turn {turn}"
        if not text.strip():
            self.item_error(item, grpc.StatusCode.INVALID_ARGUMENT, "text is empty")
        elif len(text) > self.limits.max_text_chars:
            self.item_error(
                item,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"text has {len(text)} characters; the limit is {self.limits.max_text_chars}",
            )
        elif self.text_queue.qsize() >= TEXT_QUEUE:
            self.item_error(
                item, grpc.StatusCode.RESOURCE_EXHAUSTED, f"{TEXT_QUEUE} turns are still waiting to be read"
            )
        else:
            self.text_queue.put_nowait(_Turn(text.strip(), False, item))

    async def _finish(
        self, reader: asyncio.Task[None], lanes: list[asyncio.Task[None]], text: asyncio.Task[None]
    ) -> None:
        """After the client's last message: the lanes finish what they hold (the last frame, the last
        window and utterance, the text turns), then the final stats, then the end of the stream."""
        await reader
        if self.decoder is not None and not self.audio_done.is_set():
            try:
                await asyncio.wait_for(self.audio_done.wait(), DECODER_DRAIN_S)
            except TimeoutError:
                # A decoder that never finishes must not hold the stream open until its deadline.
                log.warning("live audio decoder did not finish; its remaining audio is dropped")
                self._decoder_abandoned = True
                self.decoder.stop()
                self.item_error(
                    "audio",
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"the encoded audio was still being decoded {DECODER_DRAIN_S:.0f} s after the end; the rest "
                    "is dropped",
                )
                self._decoder_done()
        await asyncio.gather(*lanes)
        self.text_queue.put_nowait(None)
        await text
        self._update_state(force=True)
        self.emit(droppable=False, stats=self._stats())
        self.outbox.put_nowait(_Closed())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            if self.now() > self.limits.max_duration_s:
                raise TooLarge(f"the stream reached its duration limit of {self.limits.max_duration_s:.0f} s")
            self.emit(droppable=False, stats=self._stats())

    def _stats(self) -> fusion_pb2.StreamStats:
        stats = fusion_pb2.StreamStats()
        stats.CopyFrom(self.stats)
        stats.analysed_fps = float(self.analysed.count(self.now()))
        if self.audio is not None:
            stats.audio_windows_skipped = self.windows.skipped
        return stats

    # -- the face lane ------------------------------------------------------------------------

    async def _face_lane(self) -> None:
        while (frame := await self.slot.take()) is not None:
            await self._analyse_frame(frame)

    async def _analyse_frame(self, frame: _Frame) -> None:
        item = f"frame {frame.index}"
        if self.clients.vision is None:
            self.stats.frames_failed += 1
            self.item_error(item, grpc.StatusCode.UNAVAILABLE, "no vision service configured")
            return
        request = vision_pb2.AnalyzeImageRequest()
        if frame.message.HasField("raw"):
            request.raw.CopyFrom(frame.message.raw)
        else:
            request.image = frame.message.encoded
        try:
            response = await self.clients.vision.AnalyzeImage(request, timeout=self._timeout())
        except grpc.aio.AioRpcError as exc:
            self.stats.frames_failed += 1
            STREAM_FRAMES.labels("failed").inc()
            self._rpc_error(item, exc)
            return
        if frame.index < self.last_frame_answered:
            # A newer frame was answered while this one was in flight: its faces are already stale.
            self.stats.frames_dropped += 1
            STREAM_FRAMES.labels("dropped").inc()
            return
        self.last_frame_answered = frame.index
        now = self.now()
        for face, track_id in zip(response.faces, self.tracker.update([f.box for f in response.faces]), strict=True):
            face.track_id = track_id
        self.stats.frames_analysed += 1
        self.analysed.allow(now)
        STREAM_FRAMES.labels("analysed").inc()
        latency_ms = (now - frame.arrived) * 1000
        STREAM_FACE_LATENCY.observe(latency_ms / 1000)
        faces = fusion_pb2.StreamFaces(
            frame_index=frame.index, timestamp_s=frame.message.timestamp_s, faces=response.faces, latency_ms=latency_ms
        )
        self.emit(faces=faces)
        if response.HasField("primary"):
            self._take_part(common_pb2.MODALITY_VISION, response.primary, 1.0, response.model, latency_ms)
        self._update_state()

    # -- the voice lane -----------------------------------------------------------------------

    async def _voice_lane(self) -> None:
        try:
            await self._windows()
        finally:
            self.voice_done = True
            self.asr_work.set()

    async def _windows(self) -> None:
        if self.audio is None:
            return
        while True:
            self.audio_arrived.clear()
            # Where the audio not yet analysed begins: the end of the last window taken (skipped windows
            # lie between it and the window due now).
            unanalysed = self._analysed_to
            window = self.windows.due(self.audio.end)
            if window is not None:
                await self._analyse_window(*window, earliest=max(unanalysed, self.audio.start))
                continue
            if self.audio_done.is_set():
                last = self.windows.final(self.audio.end)
                if last is not None:
                    await self._analyse_window(*last)
                ended = self.utterances.finish()
                if ended is not None:
                    self._post_final(ended)
                return
            await self.audio_arrived.wait()

    def _arrival(self, position: int) -> float:
        """When the sample before `position` had arrived: the arrival of the first chunk that reached it."""
        for received, at in self.audio_arrivals:
            if received >= position:
                return at
        return self.now()

    def _seconds(self, position: int) -> float:
        assert self.audio is not None
        return position / self.audio.sample_rate

    async def _analyse_window(self, start: int, end: int, earliest: int | None = None) -> None:
        assert self.audio is not None
        item = f"audio window {self._seconds(start):.1f}-{self._seconds(end):.1f} s"
        samples = self.audio.window(start, end)
        if samples is None or self.clients.audio is None:
            self.windows.skipped += 1
            if self.clients.audio is None:
                self.item_error(item, grpc.StatusCode.UNAVAILABLE, "no audio service configured")
            return
        arrived = self._arrival(end)
        request = audio_pb2.AnalyzeAudioRequest(audio=wav_bytes(samples, self.audio.sample_rate))
        try:
            response = await self.clients.audio.AnalyzeAudio(request, timeout=self._timeout())
        except grpc.aio.AioRpcError as exc:
            self._rpc_error(item, exc)
            return
        self.stats.audio_windows_analysed += 1
        speech = fusion_pb2.StreamSpeech(
            start_s=self._seconds(start),
            end_s=self._seconds(end),
            speech_detected=response.speech_detected,
            reliability=response.reliability,
        )
        if response.HasField("distribution"):
            speech.distribution.CopyFrom(response.distribution)
        if response.speech_detected and response.HasField("distribution"):
            self._take_part(
                common_pb2.MODALITY_AUDIO,
                response.distribution,
                response.reliability,
                response.model,
                response.latency_ms,
            )
        self._analysed_to = max(self._analysed_to, end)
        ended = self.utterances.add(start, end, response.speech_detected, earliest)
        if ended is not None:
            self._post_final(ended)
        elif self.utterances.active and self.transcribe:
            assert self.utterances.start is not None
            self.partial_span = (self.utterances.start, self.utterances.end)
            self.asr_work.set()
        speech.latency_ms = (self.now() - arrived) * 1000
        STREAM_SPEECH_LATENCY.observe(speech.latency_ms / 1000)
        self.emit(droppable=False, speech=speech)
        self._update_state()

    # -- the ASR lane -------------------------------------------------------------------------

    def _post_final(self, utterance: tuple[int, int]) -> None:
        if not self.transcribe:
            return
        if self.partial_span is not None and self.partial_span[0] == utterance[0]:
            self.partial_span = None  # the final words supersede the partial ones
        self.final_spans.append(utterance)
        self.asr_work.set()

    async def _asr_lane(self) -> None:
        while True:
            self.asr_work.clear()
            if self.final_spans:
                await self._transcribe(self.final_spans.popleft(), final=True)
            elif self.partial_span is not None:
                span, self.partial_span = self.partial_span, None
                await self._transcribe(span, final=False)
            elif self.voice_done:
                return
            else:
                await self.asr_work.wait()

    async def _transcribe(self, span: tuple[int, int], final: bool) -> None:
        assert self.audio is not None
        start, end = span
        words = await self._words(start, end)
        transcript = fusion_pb2.StreamTranscript(
            start_s=self._seconds(start),
            end_s=self._seconds(end),
            text=words,
            final=final,
            latency_ms=(self.now() - self._arrival(end)) * 1000,
        )
        self.emit(droppable=False, transcript=transcript)
        if final and words:
            item = f"transcript {transcript.start_s:.1f}-{transcript.end_s:.1f} s"
            self.text_queue.put_nowait(_Turn(words, True, item))

    async def _words(self, start: int, end: int) -> str:
        """The ASR's words for [start, end); the last answer again when asked for the same span."""
        assert self.audio is not None
        if self._last_words is not None and self._last_words[0] == (start, end):
            return self._last_words[1]
        samples = self.audio.window(start, end)
        if samples is None or self.clients.audio is None:
            return ""
        item = f"transcript {self._seconds(start):.1f}-{self._seconds(end):.1f} s"
        request = audio_pb2.TranscribeRequest(audio=wav_bytes(samples, self.audio.sample_rate))
        try:
            response = await self.clients.audio.Transcribe(request, timeout=self._timeout())
        except grpc.aio.AioRpcError as exc:
            self._rpc_error(item, exc)
            return ""
        words = response.transcript.text.strip()
        self._last_words = ((start, end), words)
        return words

    # -- the text lane ------------------------------------------------------------------------

    async def _text_lane(self) -> None:
        while (turn := await self.text_queue.get()) is not None:
            await self._read_turn(turn)

    async def _read_turn(self, turn: _Turn) -> None:
        if self.clients.text is None:
            self.item_error(turn.item, grpc.StatusCode.UNAVAILABLE, "no text service configured")
            return
        context = list(self.turns) if self.limits.text_context_turns else []
        request = text_pb2.AnalyzeTextRequest(text=turn.text, speaker=self.speaker, context=context)
        try:
            response = await self.clients.text.AnalyzeText(request, timeout=self._timeout())
        except grpc.aio.AioRpcError as exc:
            self._rpc_error(turn.item, exc)
            return
        self.turns.append(text_pb2.ConversationTurn(speaker=self.speaker, text=turn.text))
        self._take_part(
            common_pb2.MODALITY_TEXT,
            response.distribution if response.HasField("distribution") else None,
            response.reliability,
            response.model,
            response.latency_ms,
        )
        self.emit(
            droppable=False,
            text=fusion_pb2.StreamTextResult(text=turn.text, from_transcript=turn.from_transcript, result=response),
        )
        self._update_state()

    # -- the fused state ----------------------------------------------------------------------

    def _take_part(
        self,
        modality: common_pb2.Modality,
        distribution: common_pb2.EmotionDistribution | None,
        reliability: float,
        model: common_pb2.ModelInfo,
        latency_ms: float,
    ) -> None:
        """A modality's newest answer, graded as Analyze grades it, becomes its result in the fused state."""
        result = graded_result(modality, distribution, reliability, "", model, latency_ms, self.fusion.min_reliability)
        self.fresh.update(result, self.now())

    def _update_state(self, force: bool = False) -> None:
        now = self.now()
        results = self.fresh.current(now)
        fused = fuse(results, self.fusion)
        if not fused.HasField("distribution"):
            return
        probs = self.smoother.update(probs_from_distribution(fused.distribution), now)
        fused.distribution.CopyFrom(distribution_from_probs(probs))
        change = self.changes.update(probs)
        if change is not None:
            previous, current = change
            self.emit(
                droppable=False,
                change=fusion_pb2.StreamChange(
                    previous=emotion_of(previous), current=emotion_of(current), probability=float(probs[current])
                ),
            )
        if force or change is not None or now - self.last_state_at >= STATE_INTERVAL_S:
            self.last_state_at = now
            self.emit(state=fusion_pb2.StreamState(fused=fused, modalities=results))
