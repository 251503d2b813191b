"""`emomesh live` (emomesh.live_cli): its media (video frames, the camera, decoded audio in chunks), the
timeline's lines, `run_stream` against a FAKE FusionService on an in-process grpc.aio port, and the
command's exit statuses."""

from __future__ import annotations

import argparse
import time
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import grpc
import numpy as np
import pytest

from emomesh import cli
from emomesh.labels import LABELS, distribution_from_probs, label_index
from emomesh.live_cli import (
    SAMPLE_RATE,
    LiveReport,
    MediaError,
    Timed,
    Timeline,
    audio_chunks,
    camera_frames,
    cmd_live,
    decode_pcm16,
    media_of,
    run_stream,
    start_request,
    video_frames,
)
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from emotion.vision.v1 import vision_pb2

FPS = 10
WIDTH, HEIGHT = 64, 48
WAV_RATE = 22_050
# The fake server's speech window: one `speech` event per 3 s of audio received.
WINDOW_S = 3.0


def frame_bgr(index: int) -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), (index * 20) % 256, np.uint8)


def write_video(path: Path, seconds: float = 1.0, fps: int = FPS) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(round(seconds * fps)):
        writer.write(frame_bgr(i))
    writer.release()
    return path


def tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def write_stereo_wav(path: Path, seconds: float, rate: int = WAV_RATE) -> Path:
    mono = tone(seconds, rate)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(np.stack([mono, mono], axis=1).astype("<i2").tobytes())
    return path


def write_video_with_sound(path: Path, seconds: float = 1.0) -> Path:
    """Frames and a stereo 22.05 kHz PCM track in one Matroska file (PyAV: cv2 writes no sound)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=FPS)
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        sound = container.add_stream("pcm_s16le", rate=WAV_RATE, layout="stereo")
        assert isinstance(sound, av.AudioStream)
        for i in range(round(seconds * FPS)):
            for packet in video.encode(av.VideoFrame.from_ndarray(frame_bgr(i), format="bgr24")):
                container.mux(packet)
        mono = tone(seconds, WAV_RATE)
        interleaved = np.stack([mono, mono], axis=1).reshape(1, -1)
        chunk = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
        chunk.sample_rate = WAV_RATE
        for packet in [*sound.encode(chunk), *sound.encode(None), *video.encode(None)]:
            container.mux(packet)
    return path


def live_args(**given: object) -> argparse.Namespace:
    """The namespace add_arguments makes, with `given` set."""
    defaults: dict[str, object] = {
        "video": None,
        "audio": None,
        "camera": None,
        "fps": None,
        "duration": None,
        "no_transcript": False,
        "every_frame": False,
        "json": False,
    }
    return argparse.Namespace(**(defaults | given))


# ---------------------------------------------------------------------------
# Media


def test_video_frames_are_jpeg_at_their_own_times(tmp_path: Path) -> None:
    frames = list(video_frames(write_video(tmp_path / "clip.avi")))
    assert [f.position for f in frames] == list(range(FPS))
    assert [f.at for f in frames] == pytest.approx([i / FPS for i in range(FPS)])
    assert {f.kind for f in frames} == {"frame"}
    for f in frames:
        assert f.request.WhichOneof("message") == "frame"
        assert f.request.frame.encoded[:3] == b"\xff\xd8\xff"  # JPEG's start of image
        assert f.request.frame.timestamp_s == pytest.approx(f.at)
    decoded = cv2.imdecode(np.frombuffer(frames[3].request.frame.encoded, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (HEIGHT, WIDTH, 3)
    assert abs(int(decoded.mean()) - 60) <= 3  # frame 3's grey level


def test_video_frames_resampled_and_cut(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi")
    halved = list(video_frames(path, fps=FPS / 2))
    assert len(halved) == FPS // 2
    assert [f.at for f in halved] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert [f.position for f in halved] == list(range(FPS // 2))  # indices among the frames sent
    cut = list(video_frames(path, limit_s=0.45))
    assert [f.at for f in cut] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_unreadable_video_names_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(MediaError, match=str(junk)):
        list(video_frames(junk))


def test_missing_camera_is_said_plainly() -> None:
    frames = camera_frames(99, 30.0, 1.0)  # a generator: nothing is opened until it is read
    with pytest.raises(MediaError, match=r"no camera at index 99 .*replay a file with --video FILE"):
        next(frames)


def test_stereo_wav_decodes_to_16k_mono(tmp_path: Path) -> None:
    path = write_stereo_wav(tmp_path / "voice.wav", 2.0)
    samples = decode_pcm16(path)
    assert samples is not None and samples.dtype == np.int16 and samples.ndim == 1
    assert len(samples) == pytest.approx(2 * SAMPLE_RATE, rel=0.01)
    assert 6000 < np.abs(samples).max() <= 8100  # both channels of the same tone: averaged, not summed
    cut = decode_pcm16(path, limit_s=0.5)
    assert cut is not None and len(cut) == SAMPLE_RATE // 2
    np.testing.assert_array_equal(cut, samples[: SAMPLE_RATE // 2])


def test_video_without_sound_has_no_audio(tmp_path: Path) -> None:
    assert decode_pcm16(write_video(tmp_path / "clip.avi")) is None


def test_audio_chunks_are_100_ms_sent_when_heard() -> None:
    samples = np.arange(3500, dtype=np.int16)  # 218.75 ms: two full chunks and a short one
    chunks = list(audio_chunks(samples))
    assert [c.kind for c in chunks] == ["audio"] * 3
    assert [c.position for c in chunks] == [1600, 3200, 3500]
    assert [c.at for c in chunks] == pytest.approx([0.1, 0.2, 3500 / SAMPLE_RATE])
    sent = b"".join(c.request.audio.data for c in chunks)
    np.testing.assert_array_equal(np.frombuffer(sent, "<i2"), samples)


def test_start_declares_pcm16_only_with_audio() -> None:
    with_audio = start_request(audio=True).start
    assert with_audio.audio_encoding == fusion_pb2.AUDIO_ENCODING_PCM16
    assert (with_audio.sample_rate_hz, with_audio.channels) == (16_000, 1)
    assert with_audio.settings.transcribe and with_audio.settings.speaker == "user"
    assert not with_audio.settings.HasField("smoothing_s")
    silent = start_request(audio=False, transcribe=False, smoothing_s=0.5).start
    assert silent.audio_encoding == fusion_pb2.AUDIO_ENCODING_UNSPECIFIED
    assert (silent.sample_rate_hz, silent.channels) == (0, 0)
    assert not silent.settings.transcribe and silent.settings.smoothing_s == 0.5


def test_media_of_refuses_what_cannot_be_sent(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="pass --video FILE, --audio FILE and/or --camera"):
        media_of(live_args())
    with pytest.raises(MediaError, match="pass --video or --camera, not both"):
        media_of(live_args(video=tmp_path / "clip.avi", camera=0))
    with pytest.raises(MediaError, match=r"nowhere\.mp4: no such file"):
        media_of(live_args(video=tmp_path / "nowhere.mp4"))
    with pytest.raises(MediaError, match=r"nowhere\.wav: no such file"):
        media_of(live_args(audio=tmp_path / "nowhere.wav"))
    with pytest.raises(MediaError, match=r"clip\.avi: no audio track"):
        media_of(live_args(audio=write_video(tmp_path / "clip.avi")))


def test_media_of_a_video_with_its_sound(tmp_path: Path) -> None:
    media, audio = media_of(live_args(video=write_video_with_sound(tmp_path / "talk.mkv")))
    assert audio and len(media) == 2
    frames, chunks = list(media[0]), list(media[1])
    assert len(frames) == FPS and {f.kind for f in frames} == {"frame"}
    assert {c.kind for c in chunks} == {"audio"}
    assert chunks[-1].position == pytest.approx(SAMPLE_RATE, rel=0.01)


def test_media_of_a_silent_video_with_an_audio_file(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi")
    media, audio = media_of(live_args(video=video))
    assert not audio and len(media) == 1
    media, audio = media_of(live_args(video=video, audio=write_stereo_wav(tmp_path / "voice.wav", 1.0), duration=0.55))
    assert audio and len(media) == 2
    assert [f.at for f in media[0]] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert [c.position for c in media[1]] == [1600, 3200, 4800, 6400, 8000, 8800]


# ---------------------------------------------------------------------------
# Timeline


def peaked(label: str, confidence: float = 0.9) -> common_pb2.EmotionDistribution:
    probs = np.full(len(LABELS), (1 - confidence) / (len(LABELS) - 1))
    probs[label_index(label)] = confidence
    return distribution_from_probs(probs)


def faces_event(index: int, *labels: str) -> fusion_pb2.StreamEvent:
    faces = fusion_pb2.StreamFaces(frame_index=index, latency_ms=42.4)
    for track, label in enumerate(labels, start=1):
        faces.faces.add(
            track_id=track,
            box=vision_pb2.BoundingBox(x=10 * track, y=20, width=100, height=120),
            distribution=peaked(label),
        )
    return fusion_pb2.StreamEvent(time_s=index / 10, faces=faces)


def test_timeline_started_speech_words_text_change_error() -> None:
    line = Timeline().line
    started = fusion_pb2.StreamStarted(transcribe=True, smoothing_s=2.0, window_s=3.0, hop_s=1.5)
    assert line(fusion_pb2.StreamEvent(started=started)) == (
        "started   windows 3.0 s every 1.5 s, smoothing 2.0 s, transcribe on"
    )
    assert "transcribe off" in str(line(fusion_pb2.StreamEvent(started=fusion_pb2.StreamStarted())))

    heard = fusion_pb2.StreamSpeech(start_s=0, end_s=3, speech_detected=True, distribution=peaked("sad"), latency_ms=81)
    assert line(fusion_pb2.StreamEvent(speech=heard)) == "speech      0.0-  3.0 s: sad (90%) (81 ms)"
    quiet = fusion_pb2.StreamSpeech(start_s=1.5, end_s=4.5, latency_ms=12)
    assert line(fusion_pb2.StreamEvent(speech=quiet)) == "speech      1.5-  4.5 s: no speech (12 ms)"

    so_far = fusion_pb2.StreamTranscript(start_s=0.2, end_s=1.8, text="I lost", latency_ms=300)
    assert line(fusion_pb2.StreamEvent(transcript=so_far)) == "words       0.2-  1.8 s (so far): 'I lost' (300 ms)"
    final = fusion_pb2.StreamTranscript(start_s=0.2, end_s=2.5, text="I lost my keys", final=True, latency_ms=410)
    assert line(fusion_pb2.StreamEvent(transcript=final)) == (
        "words       0.2-  2.5 s (final): 'I lost my keys' (410 ms)"
    )

    result = fusion_pb2.StreamTextResult(text="I lost my keys", from_transcript=True)
    result.result.distribution.CopyFrom(peaked("angry"))
    assert line(fusion_pb2.StreamEvent(text=result)) == "text      'I lost my keys' (transcript): angry (90%)"
    typed = fusion_pb2.StreamTextResult(text="hello")
    typed.result.distribution.CopyFrom(peaked("happy", 0.7))
    assert line(fusion_pb2.StreamEvent(text=typed)) == "text      'hello' (typed): happy (70%)"

    first = fusion_pb2.StreamChange(current=common_pb2.EMOTION_HAPPY, probability=0.61)
    assert line(fusion_pb2.StreamEvent(change=first)) == "changed   - -> happy (0.61)"
    later = fusion_pb2.StreamChange(previous=common_pb2.EMOTION_HAPPY, current=common_pb2.EMOTION_SAD, probability=0.5)
    assert line(fusion_pb2.StreamEvent(change=later)) == "changed   happy -> sad (0.50)"

    error = fusion_pb2.StreamItemError(
        item="frame 17", code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="cannot decode the image"
    )
    assert line(fusion_pb2.StreamEvent(error=error)) == "error     frame 17: INVALID_ARGUMENT: cannot decode the image"
    unknown = fusion_pb2.StreamItemError(item="text turn 3", code=99, message="?")
    assert line(fusion_pb2.StreamEvent(error=unknown)) == "error     text turn 3: 99: ?"

    assert line(fusion_pb2.StreamEvent(state=fusion_pb2.StreamState())) is None


def test_timeline_faces_only_when_a_label_changes() -> None:
    line = Timeline().line
    assert line(faces_event(0, "happy")) == "faces     frame 0: #1 happy (90%) at 10,20 100x120 (42 ms)"
    assert line(faces_event(1, "happy")) is None
    assert line(faces_event(2, "happy", "sad")) == (
        "faces     frame 2: #1 happy (90%) at 10,20 100x120; #2 sad (90%) at 20,20 100x120 (42 ms)"
    )
    assert line(faces_event(3, "happy", "sad")) is None
    assert line(faces_event(4, "angry", "sad")) == (
        "faces     frame 4: #1 angry (90%) at 10,20 100x120; #2 sad (90%) at 20,20 100x120 (42 ms)"
    )
    assert line(faces_event(5)) is None  # the faces left: quiet unless every frame is asked for

    every = Timeline(every_frame=True).line
    assert every(faces_event(0, "happy")) == "faces     frame 0: #1 happy (90%) at 10,20 100x120 (42 ms)"
    assert every(faces_event(1, "happy")) == "faces     frame 1: #1 happy (90%) at 10,20 100x120 (42 ms)"
    assert every(faces_event(2)) == "faces     frame 2: no face (42 ms)"


def test_timeline_stats_at_most_every_5_s() -> None:
    line = Timeline().line
    stats = fusion_pb2.StreamStats(
        frames_received=50,
        frames_analysed=40,
        analysed_fps=9.6,
        frames_dropped=10,
        audio_received_s=5.04,
        audio_windows_analysed=2,
    )
    shown = {t: line(fusion_pb2.StreamEvent(time_s=t, stats=stats)) for t in (1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 9.0, 10.0)}
    assert [t for t, text in shown.items() if text] == [4.0, 9.0]
    assert shown[4.0] == ("stats     frames 50 in, 40 analysed (10/s), 10 dropped; audio 5.0 s, 2 windows")


def test_timeline_prints_time_and_line_or_json(capsys: pytest.CaptureFixture[str]) -> None:
    change = fusion_pb2.StreamEvent(
        time_s=3.25, change=fusion_pb2.StreamChange(current=common_pb2.EMOTION_SAD, probability=0.7)
    )
    Timeline()(change, 3.3)
    Timeline()(fusion_pb2.StreamEvent(state=fusion_pb2.StreamState()), 3.3)
    assert capsys.readouterr().out == "   3.25s  changed   - -> sad (0.70)\n"
    Timeline(json_lines=True)(change, 3.3)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and '"current": "EMOTION_SAD"' in out and '"timeS": 3.25' in out


# ---------------------------------------------------------------------------
# run_stream against a fake FusionService


class FakeFusion(fusion_pb2_grpc.FusionServiceServicer):
    """Answers `faces` for each frame, one `speech` per WINDOW_S of audio and a final `stats`; refuses a
    stream that does not start with `start` or that sends anything after `end`."""

    def __init__(self) -> None:
        self.kinds: list[str] = []  # the last stream's requests
        self.start: fusion_pb2.StreamStart | None = None

    async def AnalyzeStream(
        self, request_iterator: AsyncIterator[fusion_pb2.StreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[fusion_pb2.StreamEvent]:
        opened = time.monotonic()
        self.kinds = []
        frames = samples = windows = 0
        ended = False
        async for request in request_iterator:
            kind = str(request.WhichOneof("message"))
            self.kinds.append(kind)
            if ended or (len(self.kinds) == 1) != (kind == "start"):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{kind} at {len(self.kinds) - 1}")
            now = time.monotonic() - opened
            if kind == "start":
                self.start = request.start
            elif kind == "frame":
                yield fusion_pb2.StreamEvent(
                    time_s=now,
                    faces=fusion_pb2.StreamFaces(frame_index=frames, timestamp_s=request.frame.timestamp_s),
                )
                frames += 1
            elif kind == "audio":
                samples += len(request.audio.data) // 2
                while samples >= (windows + 1) * WINDOW_S * SAMPLE_RATE:
                    speech = fusion_pb2.StreamSpeech(start_s=windows * WINDOW_S, end_s=(windows + 1) * WINDOW_S)
                    yield fusion_pb2.StreamEvent(time_s=now, speech=speech)
                    windows += 1
            elif kind == "end":
                ended = True
        stats = fusion_pb2.StreamStats(
            frames_received=frames,
            frames_analysed=frames,
            audio_received_s=samples / SAMPLE_RATE,
            audio_windows_analysed=windows,
        )
        yield fusion_pb2.StreamEvent(time_s=time.monotonic() - opened, stats=stats)


@dataclass
class Served:
    fake: FakeFusion
    stub: fusion_pb2_grpc.FusionServiceStub


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    fake = FakeFusion()
    server = grpc.aio.server()
    fusion_pb2_grpc.add_FusionServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(fake, fusion_pb2_grpc.FusionServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(None)


def synthetic_frames(seconds: float, fps: int = FPS) -> Iterator[Timed]:
    """Frames at i/fps (the bytes need not be an image: the fake only counts them)."""
    for i in range(round(seconds * fps)):
        at = i / fps
        yield Timed(
            at, fusion_pb2.StreamRequest(frame=fusion_pb2.StreamFrame(encoded=b"jpeg", timestamp_s=at)), "frame", i
        )


async def test_run_stream_reports_latencies_and_final_stats(served: Served) -> None:
    seen: list[str] = []
    started = time.monotonic()
    report = await run_stream(
        served.stub,
        [synthetic_frames(1.0), audio_chunks(np.zeros(round(6.05 * SAMPLE_RATE), np.int16))],
        audio=True,
        transcribe=False,
        on_event=lambda event, received: seen.append(str(event.WhichOneof("event"))),
        realtime=False,
        timeout_s=5,
    )
    assert time.monotonic() - started < 1.0  # not paced
    fake = served.fake
    assert fake.kinds[0] == "start" and fake.kinds[-1] == "end"
    assert fake.kinds.count("frame") == FPS and fake.kinds.count("audio") == 61
    assert fake.start is not None and fake.start.sample_rate_hz == SAMPLE_RATE and not fake.start.settings.transcribe
    assert isinstance(report, LiveReport)
    assert sorted(report.frame_sent) == list(range(FPS))
    assert len(report.face_latency_s) == FPS and all(0 <= v < 1 for v in report.face_latency_s)
    assert len(report.speech_latency_s) == 2 and all(0 <= v < 1 for v in report.speech_latency_s)
    assert report.audio_sent[-1][0] == round(6.05 * SAMPLE_RATE)
    assert report.audio_sent_at(3.0) == next(at for samples, at in report.audio_sent if samples == 3 * SAMPLE_RATE)
    assert report.audio_sent_at(7.0) is None
    assert report.final_stats is not None
    assert (report.final_stats.frames_received, report.final_stats.audio_windows_analysed) == (FPS, 2)
    assert report.final_stats.audio_received_s == pytest.approx(6.05)
    assert report.events == len(seen) == FPS + 2 + 1
    assert seen[-1] == "stats" and seen.count("speech") == 2


async def test_run_stream_paces_at_real_time(served: Served) -> None:
    def media() -> list[Iterator[Timed]]:
        return [synthetic_frames(0.5), audio_chunks(np.zeros(SAMPLE_RATE // 2, np.int16))]

    started = time.monotonic()
    report = await run_stream(served.stub, media(), audio=True, realtime=True, timeout_s=5)
    assert time.monotonic() - started >= 0.45
    assert report.duration_s >= 0.45
    # Each message leaves at its time: the last frame (0.4 s) and the last chunk (0.5 s) not before.
    assert report.frame_sent[4] >= 0.39 and report.audio_sent[-1] == (SAMPLE_RATE // 2, pytest.approx(0.5, abs=0.1))
    assert len(report.face_latency_s) == 5 and report.speech_latency_s == []
    assert served.fake.kinds[0] == "start" and served.fake.kinds[-1] == "end"

    started = time.monotonic()
    await run_stream(served.stub, media(), audio=True, realtime=False, timeout_s=5)
    assert time.monotonic() - started < 0.3


async def test_media_that_fails_mid_stream_says_why(served: Served) -> None:
    def stopping_camera() -> Iterator[Timed]:
        yield from synthetic_frames(0.3)
        raise MediaError("camera 0 stopped giving frames")

    # gRPC cancels a call whose request iterator raises: the error, not a bare CancelledError, comes out.
    with pytest.raises(MediaError, match="camera 0 stopped giving frames"):
        await run_stream(served.stub, [stopping_camera()], audio=False, realtime=False, timeout_s=5)
    assert "end" not in served.fake.kinds  # cancelled: the server never hears that the client is done


# ---------------------------------------------------------------------------
# The command


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["live", *argv])


def test_media_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("--video", str(tmp_path / "nowhere.mp4"), "--fusion", "127.0.0.1:1")
    assert args.func is cmd_live
    assert cmd_live(args) == 2
    assert capsys.readouterr().err == f"emomesh live: {tmp_path / 'nowhere.mp4'}: no such file\n"
    assert cmd_live(parse("--fusion", "127.0.0.1:1")) == 2
    assert capsys.readouterr().err == "emomesh live: pass --video FILE, --audio FILE and/or --camera\n"


def test_nobody_listening_exits_1_with_the_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "clip.avi", seconds=0.3)
    assert cmd_live(parse("--video", str(video), "--fusion", "127.0.0.1:1")) == 1
    err = capsys.readouterr().err
    assert err.startswith("emomesh live: fusion at 127.0.0.1:1: UNAVAILABLE: ")
    assert "(is the stack up? `emomesh up` starts it;" in err and err.count("\n") == 1
