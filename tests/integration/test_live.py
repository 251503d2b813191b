"""AnalyzeStream against the real stack: vision, audio (ASR tiny.en) and text served in this process on
the real tritonserver and ONNX models, fusion in front. The video is the astronaut's face (scikit-image)
gliding across 640x480 frames; the audio is espeak-ng speech followed by silence, as PCM16."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from emomesh.live_cli import (
    SAMPLE_RATE,
    Timed,
    audio_chunks,
    decode_pcm16,
    gliding_frames,
    run_stream,
    start_request,
)
from emomesh.tritonserver import TritonServer
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from services.audio.config import AudioSettings
from services.audio.server import build_server as build_audio
from services.fusion.config import FusionSettings
from services.fusion.metrics import STREAMS_ACTIVE
from services.fusion.server import build_server as build_fusion
from services.text.config import TextSettings
from services.text.server import build_server as build_text
from services.vision.config import VisionSettings
from services.vision.server import build_server as build_vision
from tests.audio_media import espeak
from tests.conftest import service_env, serving

pytestmark = pytest.mark.integration

FPS = 30.0
SPOKEN = "I am so happy to see you again, this is wonderful news."


@dataclass(frozen=True)
class Modalities:
    vision: str
    audio: str
    text: str


@pytest.fixture
async def modalities(triton_server: TritonServer) -> AsyncIterator[Modalities]:
    async with AsyncExitStack() as stack:
        vision = await build_vision(VisionSettings.from_env(service_env("vision", triton_server)))
        await stack.enter_async_context(serving(vision))
        audio_env = service_env("audio", triton_server, EMOMESH_AUDIO_ASR_MODEL="tiny.en")
        audio = await build_audio(AudioSettings.from_env(audio_env))
        await stack.enter_async_context(serving(audio))
        text = await build_text(TextSettings.from_env(service_env("text", triton_server)))
        await stack.enter_async_context(serving(text))
        yield Modalities(vision.address, audio.address, text.address)


@asynccontextmanager
async def fusion(modalities: Modalities, **limits: str) -> AsyncIterator[fusion_pb2_grpc.FusionServiceStub]:
    settings = FusionSettings.from_env(
        service_env(
            "fusion",
            None,
            EMOMESH_FUSION_VISION_ADDR=modalities.vision,
            EMOMESH_FUSION_AUDIO_ADDR=modalities.audio,
            EMOMESH_FUSION_TEXT_ADDR=modalities.text,
            **limits,
        )
    )
    async with serving(build_fusion(settings)) as channel:
        yield fusion_pb2_grpc.FusionServiceStub(channel)


def face_frames(seconds: float, fps: float = FPS) -> Iterator[Timed]:
    """The astronaut's head gliding slowly across a gray 640x480 frame, as JPEG."""
    from skimage import data

    head = cv2.cvtColor(data.astronaut()[0:260, 120:360], cv2.COLOR_RGB2BGR)
    return gliding_frames(cv2.resize(head, (200, 216), interpolation=cv2.INTER_AREA), seconds, fps)


def speech_then_silence(total_s: float, work: Path) -> np.ndarray:
    """espeak-ng speech (22.05 kHz) decoded to 16 kHz PCM16 as `emomesh live` does, then silence."""
    wav = work / "speech.wav"
    wav.write_bytes(espeak(SPOKEN))
    pcm = decode_pcm16(wav)
    assert pcm is not None
    padded = np.zeros(int(total_s * SAMPLE_RATE), np.int16)
    padded[: min(len(pcm), len(padded))] = pcm[: len(padded)]
    return padded


async def test_the_face_lane_keeps_going_while_speech_is_analysed_and_transcribed(
    modalities: Modalities, tmp_path: Path
) -> None:
    events: list[fusion_pb2.StreamEvent] = []
    async with fusion(modalities) as stub:
        report = await run_stream(
            stub,
            [face_frames(7.0), audio_chunks(speech_then_silence(7.0, tmp_path))],
            audio=True,
            on_event=lambda event, _: events.append(event),
            timeout_s=120,
        )
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "started" and kinds[-1] == "stats"
    faces = [e.faces for e in events if e.HasField("faces")]
    # The face follows the same track, and is seen in most frames.
    assert faces and all(f.faces for f in faces)
    assert len({f.faces[0].track_id for f in faces}) == 1
    stats = events[-1].stats
    assert stats.frames_received == int(7.0 * FPS)
    assert stats.frames_analysed + stats.frames_dropped + stats.frames_failed == stats.frames_received
    assert stats.frames_failed == 0 and stats.frames_analysed > stats.frames_received // 2
    # The voice lane: 3 s windows every 1.5 s, the speech window with a distribution.
    speech = [e.speech for e in events if e.HasField("speech")]
    assert (speech[0].start_s, speech[0].end_s) == (0.0, 3.0)
    assert all(s.start_s % 1.5 == 0 and s.end_s - s.start_s == 3.0 for s in speech[:-1])
    assert speech[0].speech_detected and speech[0].HasField("distribution")
    # The words: an utterance ends at the first silent window, its final words go to the text service.
    finals = [e for e in events if e.HasField("transcript") and e.transcript.final]
    assert finals and "happy" in finals[0].transcript.text.lower()
    texts = [e for e in events if e.HasField("text")]
    assert texts and texts[0].text.from_transcript and texts[0].text.text == finals[0].transcript.text
    # Lanes do not wait for each other: frames were answered between the speech window's result and
    # the (slower) final words of the same speech, and after them.
    first_speech = kinds.index("speech")
    final_at = events.index(finals[0])
    assert "faces" in kinds[first_speech:final_at]
    assert stats.audio_windows_analysed >= 3
    # The fused state and its changes.
    assert any(e.HasField("state") and e.state.fused.HasField("distribution") for e in events)
    assert any(e.HasField("change") for e in events)
    assert report.face_latency_s and len(report.speech_latency_s) == len(speech)


async def test_a_cancelled_stream_stops_its_work_and_frees_its_place(modalities: Modalities) -> None:
    async with fusion(modalities, EMOMESH_FUSION_STREAM_MAX_STREAMS="1") as stub:
        sent = asyncio.Event()

        async def requests() -> AsyncIterator[fusion_pb2.StreamRequest]:
            yield start_request(audio=True)
            for timed in face_frames(1.0):
                yield timed.request
            sent.set()
            await asyncio.sleep(3600)  # a client that keeps the stream open

        call = stub.AnalyzeStream(requests())
        async for event in call:
            if event.HasField("faces"):
                break
        assert STREAMS_ACTIVE._value.get() == 1
        call.cancel()
        for _ in range(100):
            if STREAMS_ACTIVE._value.get() == 0:
                break
            await asyncio.sleep(0.05)
        assert STREAMS_ACTIVE._value.get() == 0
        # Its place is free again: a new stream (the limit is 1) starts.
        second = stub.AnalyzeStream(iter([start_request(audio=False), fusion_pb2.StreamRequest(end={})]))
        assert [e.WhichOneof("event") async for e in second] == ["started", "stats"]


async def expect(call: grpc.aio.StreamStreamCall, code: grpc.StatusCode, message: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() == code
    assert message in (caught.value.details() or "")


def frames(count: int) -> list[fusion_pb2.StreamRequest]:
    return [timed.request for timed in face_frames(count / FPS)]


async def lingering() -> AsyncIterator[fusion_pb2.StreamRequest]:
    """A client that starts a stream and keeps it open."""
    yield start_request(audio=True)
    await asyncio.sleep(3600)


async def test_each_limit_ends_the_stream_with_its_status(modalities: Modalities) -> None:
    start = start_request(audio=True)
    async with fusion(modalities, EMOMESH_FUSION_STREAM_MAX_FPS="20") as stub:

        async def too_fast() -> AsyncIterator[fusion_pb2.StreamRequest]:
            # The 21st frame within a second breaks the limit; nothing is written after it, since a
            # client still writing when the server aborts may see INTERNAL instead (grpc/grpc#36066).
            yield start
            for request in frames(21):
                yield request
                await asyncio.sleep(0.01)
            await asyncio.sleep(3600)

        await expect(
            stub.AnalyzeStream(too_fast()),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "frames arrive faster than 20 per second",
        )
    async with fusion(modalities, EMOMESH_FUSION_STREAM_MAX_BYTES="100000") as stub:
        sizes = [len(r.frame.encoded) for r in frames(10)]
        assert sum(sizes) > 100_000  # the frames are big enough to break the limit

        async def paced() -> AsyncIterator[fusion_pb2.StreamRequest]:
            yield start
            sent = start.ByteSize()
            for request in frames(10):
                yield request
                sent += request.ByteSize()
                if sent > 100_000:
                    break  # nothing after the frame that breaks the limit (see too_fast)
                await asyncio.sleep(0.06)
            await asyncio.sleep(3600)

        await expect(stub.AnalyzeStream(paced()), grpc.StatusCode.RESOURCE_EXHAUSTED, "bytes; the limit is 100000")
    async with fusion(modalities, EMOMESH_FUSION_STREAM_MAX_DURATION_S="1") as stub:
        await expect(stub.AnalyzeStream(lingering()), grpc.StatusCode.RESOURCE_EXHAUSTED, "duration limit of 1 s")
    async with fusion(modalities, EMOMESH_FUSION_STREAM_MAX_STREAMS="1") as stub:
        first = stub.AnalyzeStream(lingering())
        assert (await anext(aiter(first))).HasField("started")
        await expect(stub.AnalyzeStream(iter([start])), grpc.StatusCode.RESOURCE_EXHAUSTED, "streams are in flight")
        first.cancel()


async def test_malformed_streams_are_invalid_argument_and_a_bad_frame_is_only_an_error_event(
    modalities: Modalities,
) -> None:
    async with fusion(modalities) as stub:
        await expect(
            stub.AnalyzeStream(iter([fusion_pb2.StreamRequest(end={})])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "the first message of a stream must be `start`",
        )
        bad_rate = fusion_pb2.StreamRequest(
            start=fusion_pb2.StreamStart(
                audio_encoding=fusion_pb2.AUDIO_ENCODING_PCM16, sample_rate_hz=1000, channels=1
            )
        )
        await expect(stub.AnalyzeStream(iter([bad_rate])), grpc.StatusCode.INVALID_ARGUMENT, "sample_rate_hz 1000")
        odd_chunk = fusion_pb2.StreamRequest(audio=fusion_pb2.StreamAudio(data=b"\x00\x01\x02"))
        await expect(
            stub.AnalyzeStream(iter([start_request(audio=True), odd_chunk])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "does not hold whole sample frames",
        )
        corrupt = fusion_pb2.StreamRequest(frame=fusion_pb2.StreamFrame(encoded=b"\xff\xd8 not a jpeg"))

        async def bad_then_good() -> AsyncIterator[fusion_pb2.StreamRequest]:
            yield start_request(audio=False)
            yield corrupt
            await asyncio.sleep(0.3)  # the face lane takes the corrupt frame before a newer one replaces it
            for request in frames(1):
                yield request
            yield fusion_pb2.StreamRequest(end={})

        events = [e async for e in stub.AnalyzeStream(bad_then_good())]
        errors = [e.error for e in events if e.HasField("error")]
        assert [(e.item, e.code) for e in errors] == [("frame 0", grpc.StatusCode.INVALID_ARGUMENT.value[0])]
        assert any(e.HasField("faces") and e.faces.frame_index == 1 for e in events)
        assert events[-1].stats.frames_failed == 1


def ogg_opus(pcm: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """16 kHz mono PCM16 encoded as OGG/Opus by PyAV, as a client's encoder would stream it."""
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=48_000)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "mono"
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48_000)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for resampled in resampler.resample(frame):
            for packet in stream.encode(resampled):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


async def test_encoded_audio_is_decoded_as_it_arrives_and_heard_like_pcm(
    modalities: Modalities, tmp_path: Path
) -> None:
    seconds = 6.0
    encoded = ogg_opus(speech_then_silence(seconds, tmp_path))
    chunk = len(encoded) // 30  # 30 chunks over the audio's length, as a recorder's timeslices

    async def requests() -> AsyncIterator[fusion_pb2.StreamRequest]:
        yield fusion_pb2.StreamRequest(start=fusion_pb2.StreamStart(audio_encoding=fusion_pb2.AUDIO_ENCODING_CONTAINER))
        for start in range(0, len(encoded), chunk):
            yield fusion_pb2.StreamRequest(audio=fusion_pb2.StreamAudio(data=encoded[start : start + chunk]))
            await asyncio.sleep(seconds / 30)
        yield fusion_pb2.StreamRequest(end={})

    async with fusion(modalities) as stub:
        events = [e async for e in stub.AnalyzeStream(requests(), timeout=90)]
    assert not any(e.HasField("error") for e in events), [e.error for e in events if e.HasField("error")]
    speech = [e.speech for e in events if e.HasField("speech")]
    # Encoded chunks carry uneven amounts of audio (pages, variable bitrate), so the lane may start at a
    # later window (the newest wins); every window is still 3 s on the 1.5-s grid, and speech is heard.
    assert speech and any(s.speech_detected for s in speech)
    assert all(s.start_s % 1.5 == 0 and s.end_s - s.start_s == 3.0 for s in speech[:-1])
    assert abs(events[-1].stats.audio_received_s - seconds) < 0.1
    finals = [e.transcript for e in events if e.HasField("transcript") and e.transcript.final]
    assert finals and "happy" in finals[0].text.lower()
    # Bytes that are no audio end the stream with INVALID_ARGUMENT.
    broken = iter(
        [
            fusion_pb2.StreamRequest(start=fusion_pb2.StreamStart(audio_encoding=fusion_pb2.AUDIO_ENCODING_CONTAINER)),
            fusion_pb2.StreamRequest(audio=fusion_pb2.StreamAudio(data=b"\x00" * 5000)),
            fusion_pb2.StreamRequest(end={}),
        ]
    )
    async with fusion(modalities) as stub:
        await expect(stub.AnalyzeStream(broken), grpc.StatusCode.INVALID_ARGUMENT, "could not be decoded")
