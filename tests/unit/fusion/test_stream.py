"""AnalyzeStream (services/fusion/stream.py) against FAKE in-process grpc.aio modality servers: a scripted
client sends the stream's messages when the test chooses and reads its events as they come."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from emomesh.errors import InvalidInput, TooLarge
from emomesh.labels import LABELS, distribution_from_probs, label_index
from emotion.audio.v1 import audio_pb2, audio_pb2_grpc
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from emotion.text.v1 import text_pb2, text_pb2_grpc
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.fusion import stream
from services.fusion.fuse import FusionConfig
from services.fusion.orchestrator import ModalityClients, Orchestrator, OrchestratorLimits
from services.fusion.servicer import FusionServicer
from services.fusion.stream import StreamHub, StreamLimits

S = common_pb2
RATE = 16000
# Two faces far apart: each keeps its own track across frames.
LEFT_FACE = vision_pb2.BoundingBox(x=10, y=20, width=100, height=120)
RIGHT_FACE = vision_pb2.BoundingBox(x=400, y=20, width=100, height=120)
WORDS = "I lost my keys again"
# Each wait for an event: far above what any step takes, so that a hang fails the test instead of stalling it.
EVENT_WAIT_S = 5.0


def peaked(label: str, confidence: float = 0.9) -> common_pb2.EmotionDistribution:
    probs = np.full(len(LABELS), (1 - confidence) / (len(LABELS) - 1))
    probs[label_index(label)] = confidence
    return distribution_from_probs(probs)


def samples_of(wav: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(wav), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, RATE)
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")


def ramp(start_s: float, end_s: float) -> np.ndarray:
    """Mono samples whose value tells their position, so a window's audio shows where it was cut."""
    return (np.arange(int(start_s * RATE), int(end_s * RATE)) % 30000).astype(np.int16)


def pcm16(samples: np.ndarray) -> bytes:
    return samples.astype("<i2").tobytes()


class FakeVision(vision_pb2_grpc.VisionServiceServicer):
    """Faces at fixed boxes with one fixed emotion; `hold` makes the next calls wait until released or
    cancelled; an image in `corrupt` is refused as undecodable."""

    def __init__(self) -> None:
        self.calls: list[vision_pb2.AnalyzeImageRequest] = []
        self.called = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.label = "happy"
        self.boxes = [LEFT_FACE, RIGHT_FACE]
        self.delay_s = 0.0
        self.held: dict[bytes, asyncio.Event] = {}
        self.corrupt: set[bytes] = set()

    async def AnalyzeImage(
        self, request: vision_pb2.AnalyzeImageRequest, context: grpc.aio.ServicerContext
    ) -> vision_pb2.AnalyzeImageResponse:
        self.calls.append(request)
        self.called.set()
        try:
            if request.image in self.held:
                await self.held[request.image].wait()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        if request.image in self.corrupt:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "cannot decode the image")
        response = vision_pb2.AnalyzeImageResponse(image_width=640, image_height=480, primary=peaked(self.label))
        for box in self.boxes:
            response.faces.add(box=box, distribution=peaked(self.label))
        return response


class FakeAudio(audio_pb2_grpc.AudioServiceServicer):
    """Speech (or, in the order of `speech`, none) with a sad voice, and WORDS as every transcript.
    Keeps the samples of each window and each transcribed span."""

    def __init__(self) -> None:
        self.windows: list[np.ndarray] = []
        self.transcribed: list[np.ndarray] = []
        self.speech: list[bool] = []

    async def AnalyzeAudio(
        self, request: audio_pb2.AnalyzeAudioRequest, context: grpc.aio.ServicerContext
    ) -> audio_pb2.AnalyzeAudioResponse:
        self.windows.append(samples_of(request.audio))
        speech = self.speech.pop(0) if self.speech else True
        response = audio_pb2.AnalyzeAudioResponse(speech_detected=speech, reliability=0.9)
        if speech:
            response.distribution.CopyFrom(peaked("sad"))
        return response

    async def Transcribe(
        self, request: audio_pb2.TranscribeRequest, context: grpc.aio.ServicerContext
    ) -> audio_pb2.TranscribeResponse:
        self.transcribed.append(samples_of(request.audio))
        return audio_pb2.TranscribeResponse(transcript=audio_pb2.Transcript(text=WORDS))


class FakeText(text_pb2_grpc.TextServiceServicer):
    def __init__(self) -> None:
        self.calls: list[text_pb2.AnalyzeTextRequest] = []

    async def AnalyzeText(
        self, request: text_pb2.AnalyzeTextRequest, context: grpc.aio.ServicerContext
    ) -> text_pb2.AnalyzeTextResponse:
        self.calls.append(request)
        return text_pb2.AnalyzeTextResponse(distribution=peaked("angry"), reliability=1.0, language="en")


@dataclass
class Fakes:
    vision: FakeVision
    audio: FakeAudio
    text: FakeText
    clients: ModalityClients


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    vision, audio, text = FakeVision(), FakeAudio(), FakeText()
    adders: dict[str, Callable[[grpc.aio.Server], None]] = {
        "vision": lambda server: vision_pb2_grpc.add_VisionServiceServicer_to_server(vision, server),
        "audio": lambda server: audio_pb2_grpc.add_AudioServiceServicer_to_server(audio, server),
        "text": lambda server: text_pb2_grpc.add_TextServiceServicer_to_server(text, server),
    }
    servers, addresses = [], {}
    for name, add in adders.items():
        server = grpc.aio.server()
        add(server)
        addresses[name] = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        servers.append(server)
    clients = ModalityClients(addresses["vision"], addresses["audio"], addresses["text"])
    yield Fakes(vision, audio, text, clients)
    await clients.close()
    for server in servers:
        await server.stop(None)


def hub_of(fakes: Fakes, **limits: object) -> StreamHub:
    return StreamHub(fakes.clients, FusionConfig(), StreamLimits(**limits))  # type: ignore[arg-type]


@pytest.fixture
def hub(fakes: Fakes) -> StreamHub:
    return hub_of(fakes)


class Client:
    """One stream as its caller sees it: messages go out when the test sends them, events are read in order
    (all of them are kept in `events`)."""

    def __init__(self, hub: StreamHub) -> None:
        self._outgoing: asyncio.Queue[fusion_pb2.StreamRequest | None] = asyncio.Queue()
        self.stopped_reading = asyncio.Event()
        self.stream = hub.run(self._requests(), None)
        self.events: list[fusion_pb2.StreamEvent] = []

    async def _requests(self) -> AsyncIterator[fusion_pb2.StreamRequest]:
        try:
            while (request := await self._outgoing.get()) is not None:
                yield request
        finally:
            self.stopped_reading.set()

    def send(self, **message: object) -> None:
        self._outgoing.put_nowait(fusion_pb2.StreamRequest(**message))  # type: ignore[arg-type]

    def start(self, **fields: object) -> None:
        self.send(start=fusion_pb2.StreamStart(**fields))  # type: ignore[arg-type]

    def start_audio(self, channels: int = 1, **settings: object) -> None:
        self.start(
            audio_encoding=fusion_pb2.AUDIO_ENCODING_PCM16,
            sample_rate_hz=RATE,
            channels=channels,
            settings=fusion_pb2.StreamSettings(**settings),  # type: ignore[arg-type]
        )

    def frame(self, image: bytes, timestamp_s: float = 0.0) -> None:
        self.send(frame=fusion_pb2.StreamFrame(encoded=image, timestamp_s=timestamp_s))

    def audio(self, samples: np.ndarray) -> None:
        self.send(audio=fusion_pb2.StreamAudio(data=pcm16(samples)))

    def text(self, text: str) -> None:
        self.send(text=fusion_pb2.StreamText(text=text))

    def end(self) -> None:
        self.send(end=fusion_pb2.StreamEnd())

    def stop_sending(self) -> None:
        """The caller's side of the stream closes without an `end` message."""
        self._outgoing.put_nowait(None)

    async def next(self, kind: str) -> fusion_pb2.StreamEvent:
        """Reads events up to the next one of `kind`."""
        async with asyncio.timeout(EVENT_WAIT_S):
            while True:
                event = await anext(self.stream)
                self.events.append(event)
                if event.WhichOneof("event") == kind:
                    return event

    async def rest(self) -> list[fusion_pb2.StreamEvent]:
        """Reads events until the stream ends; returns the ones read by this call."""
        before = len(self.events)
        async with asyncio.timeout(EVENT_WAIT_S):
            async for event in self.stream:
                self.events.append(event)
        return self.events[before:]

    def of(self, kind: str) -> list[fusion_pb2.StreamEvent]:
        return [e for e in self.events if e.WhichOneof("event") == kind]


async def finished(client: Client) -> fusion_pb2.StreamStats:
    """Ends the stream and returns its final stats, the last event."""
    client.end()
    rest = await client.rest()
    assert rest[-1].WhichOneof("event") == "stats"
    return rest[-1].stats


def assert_frames_add_up(stats: fusion_pb2.StreamStats) -> None:
    assert stats.frames_received == stats.frames_analysed + stats.frames_dropped + stats.frames_failed


# -- start --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "requests",
    [[], [fusion_pb2.StreamRequest(frame=fusion_pb2.StreamFrame(encoded=b"f0"))]],
    ids=["empty", "frame first"],
)
async def test_the_first_message_must_be_start(hub: StreamHub, requests: list[fusion_pb2.StreamRequest]) -> None:
    async def sent() -> AsyncIterator[fusion_pb2.StreamRequest]:
        for request in requests:
            yield request

    with pytest.raises(InvalidInput, match="the first message of a stream must be `start`"):
        await anext(hub.run(sent(), None))
    assert hub.active == 0


async def test_a_second_start_is_refused(hub: StreamHub) -> None:
    client = Client(hub)
    client.start()
    await client.next("started")
    client.start()
    with pytest.raises(InvalidInput, match="`start` may only be the first message of a stream"):
        await client.rest()
    assert hub.active == 0


@pytest.mark.parametrize(
    ("start", "message"),
    [
        ({"sample_rate_hz": 7999, "channels": 1}, "sample_rate_hz 7999 is outside 8000-48000"),
        ({"sample_rate_hz": 48001, "channels": 1}, "sample_rate_hz 48001 is outside 8000-48000"),
        ({"sample_rate_hz": RATE, "channels": 0}, "channels 0 is outside 1-8"),
        ({"sample_rate_hz": RATE, "channels": 9}, "channels 9 is outside 1-8"),
        (
            {"sample_rate_hz": RATE, "channels": 1, "settings": fusion_pb2.StreamSettings(smoothing_s=601)},
            "smoothing_s 601.0 is outside 0-600 s",
        ),
    ],
)
async def test_a_malformed_start_is_invalid_input(hub: StreamHub, start: dict[str, object], message: str) -> None:
    client = Client(hub)
    client.start(audio_encoding=fusion_pb2.AUDIO_ENCODING_PCM16, **start)
    with pytest.raises(InvalidInput, match=message):
        await client.next("started")
    assert hub.active == 0


async def test_started_comes_first_with_the_settings_and_limits(fakes: Fakes) -> None:
    hub = hub_of(fakes, max_duration_s=60.0, max_bytes=1 << 20, max_fps=30, window_s=2.0, hop_s=1.0)
    client = Client(hub)
    client.start_audio(transcribe=False, smoothing_s=0.5)
    started = await client.next("started")
    assert len(client.events) == 1
    assert started.started == fusion_pb2.StreamStarted(
        transcribe=False, smoothing_s=0.5, window_s=2.0, hop_s=1.0, max_duration_s=60.0, max_bytes=1 << 20, max_fps=30
    )
    assert hub.active == 1
    await finished(client)
    assert hub.active == 0


# -- the face lane ------------------------------------------------------------------------------


async def test_frames_give_faces_that_keep_their_track_ids(hub: StreamHub, fakes: Fakes) -> None:
    client = Client(hub)
    client.start()
    await client.next("started")
    client.frame(b"f0", timestamp_s=12.5)
    first = (await client.next("faces")).faces
    client.send(frame=fusion_pb2.StreamFrame(raw=vision_pb2.RawImage(pixels=b"\x00" * 12, width=2, height=2)))
    second = (await client.next("faces")).faces
    assert (first.frame_index, first.timestamp_s) == (0, 12.5)
    assert second.frame_index == 1
    assert [(f.box, f.track_id) for f in first.faces] == [(LEFT_FACE, 1), (RIGHT_FACE, 2)]
    assert [(f.box, f.track_id) for f in second.faces] == [(LEFT_FACE, 1), (RIGHT_FACE, 2)]
    assert first.faces[0].distribution.top == S.EMOTION_HAPPY
    # The frame goes to the vision service as it came: encoded bytes or raw pixels.
    assert fakes.vision.calls[0].image == b"f0"
    assert fakes.vision.calls[1].raw.width == 2 and fakes.vision.calls[1].raw.pixels == b"\x00" * 12
    stats = await finished(client)
    assert (stats.frames_received, stats.frames_analysed, stats.frames_dropped, stats.frames_failed) == (2, 2, 0, 0)
    assert stats.bytes_received > 0
    assert_frames_add_up(stats)


async def test_frames_sent_faster_than_the_lane_drops_the_older_ones(fakes: Fakes) -> None:
    fakes.vision.delay_s = 0.2
    client = Client(hub_of(fakes))
    client.start()
    await client.next("started")
    # A frame every 10 ms, each taking the vision service 200 ms.
    for index in range(10):
        client.frame(f"f{index}".encode(), timestamp_s=index)
        await asyncio.sleep(0.01)
    stats = await finished(client)
    answered = [e.faces.frame_index for e in client.of("faces")]
    assert stats.frames_received == 10
    assert stats.frames_dropped > 0
    assert stats.frames_analysed == len(answered)
    assert_frames_add_up(stats)
    # Never an older frame after a newer one, and the newest frame is always answered.
    assert answered == sorted(set(answered))
    assert answered[-1] == 9


async def test_a_frame_finishing_after_a_newer_one_was_answered_is_dropped(fakes: Fakes) -> None:
    release_f0 = asyncio.Event()
    fakes.vision.held[b"f0"] = release_f0
    client = Client(hub_of(fakes, frames_in_flight=2))
    client.start()
    await client.next("started")
    client.frame(b"f0")
    await asyncio.wait_for(fakes.vision.called.wait(), EVENT_WAIT_S)
    client.frame(b"f1")  # taken by the second worker while f0 is still in flight
    assert (await client.next("faces")).faces.frame_index == 1
    release_f0.set()
    stats = await finished(client)
    assert [e.faces.frame_index for e in client.of("faces")] == [1]
    assert (stats.frames_received, stats.frames_analysed, stats.frames_dropped) == (2, 1, 1)
    assert [c.image for c in fakes.vision.calls] == [b"f0", b"f1"]
    assert_frames_add_up(stats)


async def test_a_corrupt_frame_is_an_error_event_and_the_stream_goes_on(hub: StreamHub, fakes: Fakes) -> None:
    fakes.vision.corrupt.add(b"bad")
    client = Client(hub)
    client.start()
    await client.next("started")
    client.frame(b"f0")
    await client.next("faces")
    client.frame(b"bad")
    error = (await client.next("error")).error
    assert error.item == "frame 1"
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert error.message == "cannot decode the image"
    client.frame(b"f2")
    assert (await client.next("faces")).faces.frame_index == 2
    stats = await finished(client)
    assert (stats.frames_received, stats.frames_analysed, stats.frames_failed) == (3, 2, 1)
    assert_frames_add_up(stats)


async def test_without_a_vision_service_each_frame_is_an_error() -> None:
    clients = ModalityClients(None, None, None)
    try:
        client = Client(StreamHub(clients, FusionConfig(), StreamLimits()))
        client.start()
        client.frame(b"f0")
        error = (await client.next("error")).error
        stats = await finished(client)
    finally:
        await clients.close()
    assert (error.item, error.message) == ("frame 0", "no vision service configured")
    assert error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert (stats.frames_received, stats.frames_failed) == (1, 1)


# -- the voice lane -----------------------------------------------------------------------------


def span(event: fusion_pb2.StreamEvent) -> tuple[float, float]:
    return event.speech.start_s, event.speech.end_s


async def test_audio_is_analysed_in_3_s_windows_every_1_5_s(hub: StreamHub, fakes: Fakes) -> None:
    client = Client(hub)
    client.start_audio(speaker="ana")
    await client.next("started")
    client.audio(ramp(0, 3))
    first = await client.next("speech")
    client.audio(ramp(3, 4.5))
    second = await client.next("speech")
    assert span(first) == pytest.approx((0.0, 3.0))
    assert span(second) == pytest.approx((1.5, 4.5))
    assert first.speech.speech_detected and first.speech.reliability == pytest.approx(0.9)
    assert first.speech.distribution.top == S.EMOTION_SAD
    assert [w.tolist() for w in fakes.audio.windows] == [ramp(0, 3).tolist(), ramp(1.5, 4.5).tolist()]
    stats = await finished(client)
    assert stats.audio_received_s == pytest.approx(4.5)
    assert (stats.audio_windows_analysed, stats.audio_windows_skipped) == (2, 0)


async def test_the_utterance_is_transcribed_as_it_grows_and_its_final_words_are_read(
    hub: StreamHub, fakes: Fakes
) -> None:
    client = Client(hub)
    client.start_audio(speaker="ana")
    await client.next("started")
    client.audio(ramp(0, 3))
    first = (await client.next("transcript")).transcript
    client.audio(ramp(3, 4.5))
    second = (await client.next("transcript")).transcript
    assert (first.start_s, first.end_s, first.text, first.final) == (0.0, 3.0, WORDS, False)
    assert (second.start_s, second.end_s, second.text, second.final) == (0.0, 4.5, WORDS, False)
    assert [t.tolist() for t in fakes.audio.transcribed] == [ramp(0, 3).tolist(), ramp(0, 4.5).tolist()]
    assert not fakes.text.calls
    # The end ends the utterance: its words are final and go to the text service.
    await finished(client)
    final = client.of("transcript")[-1].transcript
    assert (final.start_s, final.end_s, final.text, final.final) == (0.0, 4.5, WORDS, True)
    # The same span is not transcribed twice.
    assert len(fakes.audio.transcribed) == 2
    text = client.of("text")
    assert [(t.text.text, t.text.from_transcript) for t in text] == [(WORDS, True)]
    assert text[0].text.result.distribution.top == S.EMOTION_ANGRY
    assert [(c.text, c.speaker) for c in fakes.text.calls] == [(WORDS, "ana")]


async def test_a_pause_makes_the_words_final_and_sends_them_to_the_text_service(hub: StreamHub, fakes: Fakes) -> None:
    fakes.audio.speech = [True, False]
    client = Client(hub)
    client.start_audio()
    await client.next("started")
    client.audio(ramp(0, 3))
    partial = (await client.next("transcript")).transcript
    client.audio(ramp(3, 4.5))
    pause = await client.next("speech")
    final = (await client.next("transcript")).transcript
    # Before the stream ends.
    text = (await client.next("text")).text
    assert not partial.final
    assert not pause.speech.speech_detected
    assert (final.start_s, final.end_s, final.text, final.final) == (0.0, 3.0, WORDS, True)
    assert (text.text, text.from_transcript) == (WORDS, True)
    # The utterance was the first window only, transcribed once.
    assert [len(t) for t in fakes.audio.transcribed] == [3 * RATE]
    await finished(client)
    assert len(fakes.text.calls) == 1


async def test_without_transcribe_there_are_no_words(hub: StreamHub, fakes: Fakes) -> None:
    client = Client(hub)
    client.start_audio(transcribe=False)
    started = await client.next("started")
    client.audio(ramp(0, 3))
    await client.next("speech")
    await finished(client)
    assert not started.started.transcribe
    assert not client.of("transcript") and not client.of("text")
    assert not fakes.audio.transcribed and not fakes.text.calls


async def test_a_voice_lane_that_falls_behind_takes_the_newest_window(hub: StreamHub, fakes: Fakes) -> None:
    client = Client(hub)
    client.start_audio(transcribe=False)
    await client.next("started")
    client.audio(ramp(0, 6))  # windows 0-3, 1.5-4.5 and 3-6 s are due at once
    speech = await client.next("speech")
    stats = await finished(client)
    assert span(speech) == pytest.approx((3.0, 6.0))
    assert [span(e) for e in client.of("speech")] == [pytest.approx((3.0, 6.0))]
    assert (stats.audio_windows_analysed, stats.audio_windows_skipped) == (1, 2)
    assert not fakes.audio.transcribed and not fakes.text.calls


async def test_the_end_analyses_the_audio_after_the_last_window(hub: StreamHub, fakes: Fakes) -> None:
    client = Client(hub)
    client.start_audio(transcribe=False)
    await client.next("started")
    client.audio(ramp(0, 4))
    await client.next("speech")
    stats = await finished(client)
    assert [span(e) for e in client.of("speech")] == [pytest.approx((0.0, 3.0)), pytest.approx((1.0, 4.0))]
    assert fakes.audio.windows[1].tolist() == ramp(1, 4).tolist()
    assert stats.audio_windows_analysed == 2


async def test_stereo_audio_is_averaged_to_mono(hub: StreamHub, fakes: Fakes) -> None:
    client = Client(hub)
    client.start_audio(channels=2, transcribe=False)
    await client.next("started")
    mono = ramp(0, 3)
    left, right = mono - 100, mono + 100
    client.audio(np.stack([left, right], axis=1).reshape(-1))
    await client.next("speech")
    await finished(client)
    assert fakes.audio.windows[0].tolist() == mono.tolist()


# -- the text lane ------------------------------------------------------------------------------


async def test_a_text_turn_is_read_with_the_earlier_turns_as_context(hub: StreamHub, fakes: Fakes) -> None:
    client = Client(hub)
    client.start(settings=fusion_pb2.StreamSettings(speaker="ana"))
    await client.next("started")
    client.text("  I missed the train.  ")
    first = (await client.next("text")).text
    client.send(settings=fusion_pb2.StreamSettings(speaker="bo"))
    client.text("And now it rains.")
    second = (await client.next("text")).text
    await finished(client)
    assert (first.text, first.from_transcript) == ("I missed the train.", False)
    assert first.result.distribution.top == S.EMOTION_ANGRY
    assert second.text == "And now it rains."
    assert [list(c.context) for c in fakes.text.calls] == [
        [],
        [text_pb2.ConversationTurn(speaker="ana", text="I missed the train.")],
    ]
    # The settings changed the speaker mid-stream.
    assert [c.speaker for c in fakes.text.calls] == ["ana", "bo"]


async def test_context_is_limited_to_the_newest_turns(fakes: Fakes) -> None:
    client = Client(hub_of(fakes, text_context_turns=1))
    client.start()
    for turn in ("one", "two", "three"):
        client.text(turn)
        await client.next("text")
    await finished(client)
    assert [[t.text for t in c.context] for c in fakes.text.calls] == [[], ["one"], ["two"]]


async def test_an_empty_or_too_long_turn_is_an_error_event(fakes: Fakes) -> None:
    client = Client(hub_of(fakes, max_text_chars=10))
    client.start()
    client.text("   ")
    empty = (await client.next("error")).error
    client.text("x" * 11)
    long = (await client.next("error")).error
    client.text("fine")
    await client.next("text")
    await finished(client)
    assert (empty.item, empty.code, empty.message) == (
        "text turn 1",
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        "text is empty",
    )
    assert (long.item, long.code, long.message) == (
        "text turn 2",
        grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
        "text has 11 characters; the limit is 10",
    )
    assert [c.text for c in fakes.text.calls] == ["fine"]


# -- the fused state ----------------------------------------------------------------------------


async def test_the_state_is_fused_and_a_change_of_emotion_is_an_event(hub: StreamHub, fakes: Fakes) -> None:
    client = Client(hub)
    client.start(settings=fusion_pb2.StreamSettings(smoothing_s=0))
    await client.next("started")
    client.frame(b"f0")
    first_change = (await client.next("change")).change
    state = (await client.next("state")).state
    assert (first_change.previous, first_change.current) == (S.EMOTION_UNSPECIFIED, S.EMOTION_HAPPY)
    assert first_change.probability == pytest.approx(0.9)
    assert state.fused.distribution.top == S.EMOTION_HAPPY
    assert [(m.modality, m.status) for m in state.modalities] == [(S.MODALITY_VISION, S.MODALITY_STATUS_OK)]
    assert [w.modality for w in state.fused.weights] == [S.MODALITY_VISION]
    fakes.vision.label = "sad"
    client.frame(b"f1")
    second_change = (await client.next("change")).change
    assert (second_change.previous, second_change.current) == (S.EMOTION_HAPPY, S.EMOTION_SAD)
    stats = await finished(client)
    assert stats.frames_analysed == 2
    assert client.of("state")[-1].state.fused.distribution.top == S.EMOTION_SAD


async def test_the_state_is_smoothed_over_time(hub: StreamHub, fakes: Fakes) -> None:
    client = Client(hub)
    client.start(settings=fusion_pb2.StreamSettings(smoothing_s=600))
    client.frame(b"f0")
    await client.next("change")
    fakes.vision.label = "sad"
    client.frame(b"f1")
    await client.next("faces")
    await finished(client)
    # Ten minutes' time constant: the sad face a moment later barely moves the happy state.
    assert [e.change.current for e in client.of("change")] == [S.EMOTION_HAPPY]
    assert client.of("state")[-1].state.fused.distribution.top == S.EMOTION_HAPPY


# -- limits -------------------------------------------------------------------------------------


async def test_a_stream_beyond_max_streams_is_refused(fakes: Fakes) -> None:
    hub = hub_of(fakes, max_streams=1)
    first = Client(hub)
    first.start()
    await first.next("started")
    second = Client(hub)
    second.start()
    with pytest.raises(TooLarge, match="1 streams are in flight; the limit is 1"):
        await second.next("started")
    assert hub.active == 1
    await finished(first)
    assert hub.active == 0
    # The slot is free again.
    third = Client(hub)
    third.start()
    await third.next("started")
    await finished(third)


async def test_a_refusal_waits_for_the_opening_message_but_not_forever(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The refusal follows the client's opening message, so the client is not still writing it when the
    # status arrives (which would reach it as INTERNAL); a client that sends nothing is refused anyway.
    monkeypatch.setattr(stream, "REFUSAL_READ_S", 0.05)
    hub = hub_of(fakes, max_streams=1)
    first = Client(hub)
    first.start()
    await first.next("started")
    silent = Client(hub)
    with pytest.raises(TooLarge, match="1 streams are in flight"):
        await silent.next("started")
    prompt = Client(hub)
    prompt.start()
    with pytest.raises(TooLarge, match="1 streams are in flight"):
        await prompt.next("started")
    assert prompt._outgoing.empty()  # its opening message was read before the refusal
    assert hub.active == 1
    await finished(first)


async def test_frames_faster_than_max_fps_end_the_stream(fakes: Fakes) -> None:
    hub = hub_of(fakes, max_fps=2)
    client = Client(hub)
    client.start()
    await client.next("started")
    # Three frames back to back: the reader takes them within the same second.
    for index in range(3):
        client.frame(f"f{index}".encode())
    with pytest.raises(TooLarge, match="frames arrive faster than 2 per second, the limit"):
        await client.rest()
    assert hub.active == 0


async def test_more_than_max_bytes_ends_the_stream(fakes: Fakes) -> None:
    hub = hub_of(fakes, max_bytes=100)
    client = Client(hub)
    client.start()
    await client.next("started")
    client.frame(b"x" * 200)
    with pytest.raises(TooLarge, match=r"the stream sent 2\d\d bytes; the limit is 100"):
        await client.rest()
    assert hub.active == 0
    assert not fakes.vision.calls


async def test_an_audio_chunk_of_partial_samples_is_invalid_input(hub: StreamHub) -> None:
    client = Client(hub)
    client.start_audio()
    await client.next("started")
    client.send(audio=fusion_pb2.StreamAudio(data=b"\x00\x01\x02"))
    with pytest.raises(InvalidInput, match="an audio chunk of 3 bytes does not hold whole sample frames"):
        await client.rest()
    assert hub.active == 0


async def test_audio_without_an_audio_encoding_is_invalid_input(hub: StreamHub) -> None:
    client = Client(hub)
    client.start()
    await client.next("started")
    client.audio(ramp(0, 0.1))
    with pytest.raises(InvalidInput, match="audio was sent, but `start` declared no audio_encoding"):
        await client.rest()


# -- the end of a stream ------------------------------------------------------------------------


async def test_the_caller_closing_its_side_ends_the_stream_like_end(hub: StreamHub) -> None:
    client = Client(hub)
    client.start()
    client.frame(b"f0")
    await client.next("faces")
    client.stop_sending()
    rest = await client.rest()
    assert rest[-1].stats.frames_analysed == 1
    assert hub.active == 0


async def hold_a_frame_in_flight(fakes: Fakes, client: Client) -> None:
    """Starts the stream and waits until the vision service is working on a frame that it never finishes."""
    fakes.vision.held[b"held"] = asyncio.Event()
    client.start()
    await client.next("started")
    client.frame(b"held")
    await asyncio.wait_for(fakes.vision.called.wait(), EVENT_WAIT_S)


def stream_ends(reason: str) -> float:
    return REGISTRY.get_sample_value("emomesh_fusion_stream_ends_total", {"reason": reason}) or 0.0


async def test_closing_the_stream_stops_its_work(hub: StreamHub, fakes: Fakes) -> None:
    client = Client(hub)
    await hold_a_frame_in_flight(fakes, client)
    assert hub.active == 1
    cancelled_before = stream_ends("cancelled")
    await client.stream.aclose()
    assert hub.active == 0
    assert stream_ends("cancelled") == cancelled_before + 1
    # All of the stream's tasks are gone once aclose returns: nothing reads the caller's messages any more.
    assert client.stopped_reading.is_set()
    await asyncio.wait_for(fakes.vision.cancelled.wait(), EVENT_WAIT_S)


async def test_cancelling_the_consumer_stops_the_stream(hub: StreamHub, fakes: Fakes) -> None:
    client = Client(hub)
    await hold_a_frame_in_flight(fakes, client)
    consumer = asyncio.create_task(client.rest())
    await asyncio.sleep(0)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert hub.active == 0
    assert client.stopped_reading.is_set()
    await asyncio.wait_for(fakes.vision.cancelled.wait(), EVENT_WAIT_S)


async def test_a_caller_cancelling_the_rpc_ends_the_stream_on_the_server(fakes: Fakes) -> None:
    hub = hub_of(fakes)
    orchestrator = Orchestrator(fakes.clients, FusionConfig(), OrchestratorLimits())
    server = grpc.aio.server()
    fusion_pb2_grpc.add_FusionServiceServicer_to_server(FusionServicer(FusionConfig(), orchestrator, hub), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    fakes.vision.held[b"held"] = asyncio.Event()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = fusion_pb2_grpc.FusionServiceStub(channel).AnalyzeStream()
            await call.write(fusion_pb2.StreamRequest(start=fusion_pb2.StreamStart()))
            started = await call.read()
            assert isinstance(started, fusion_pb2.StreamEvent) and started.HasField("started")
            await call.write(fusion_pb2.StreamRequest(frame=fusion_pb2.StreamFrame(encoded=b"held")))
            await asyncio.wait_for(fakes.vision.called.wait(), EVENT_WAIT_S)
            assert hub.active == 1
            call.cancel()
            await asyncio.wait_for(fakes.vision.cancelled.wait(), EVENT_WAIT_S)
            # The hub has nothing to wait on; the server ends the handler soon after the cancellation.
            async with asyncio.timeout(EVENT_WAIT_S):
                while hub.active:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
    finally:
        await server.stop(None)


# -- encoded audio ------------------------------------------------------------------------------


async def test_encoded_audio_is_decoded_and_analysed_like_pcm(hub: StreamHub, fakes: Fakes) -> None:
    from tests.unit.fusion.test_container import tone_file

    client = Client(hub)
    client.start(
        audio_encoding=fusion_pb2.AUDIO_ENCODING_CONTAINER, settings=fusion_pb2.StreamSettings(transcribe=False)
    )
    await client.next("started")
    encoded = tone_file("ogg", "libopus", seconds=3.5)
    for start in range(0, len(encoded), 2000):
        client.send(audio=fusion_pb2.StreamAudio(data=encoded[start : start + 2000]))
    stats = await finished(client)
    assert span(client.of("speech")[0]) == pytest.approx((0.0, 3.0))
    assert stats.audio_received_s == pytest.approx(3.5, abs=0.05)


async def test_a_decoder_that_never_finishes_does_not_hold_the_stream_open(
    hub: StreamHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.fusion import stream as stream_module
    from services.fusion.container import ContainerDecoder

    monkeypatch.setattr(stream_module, "DECODER_DRAIN_S", 0.2)
    monkeypatch.setattr(ContainerDecoder, "_run", lambda self: None)  # a decoder that never reports
    client = Client(hub)
    client.start(audio_encoding=fusion_pb2.AUDIO_ENCODING_CONTAINER)
    await client.next("started")
    client.send(audio=fusion_pb2.StreamAudio(data=b"OggS"))
    await finished(client)
    (error,) = [e.error for e in client.of("error")]
    assert error.item == "audio" and "still being decoded 0 s after the end" in error.message
