"""`emomesh live`: a live session through FusionService.AnalyzeStream (docs/live.md).

    emomesh live --video talk.mp4                 # its frames, and its own sound track, at real time
    emomesh live --video face.mp4 --audio voice.wav
    emomesh live --camera                         # the local camera (index 0), until Ctrl-C

Media is replayed at real time (the server sees what a camera and a microphone would send): frames as
JPEG at the file's frame rate (or --fps), audio decoded here to 16 kHz mono PCM16 and sent in 100 ms
chunks. The timeline prints one line per event worth reading: faces when a face's emotion changes (or
every frame with --every-frame), each speech window with its words, each text result, each change of
the fused emotion, and stats every 5 s; --json prints every event as one JSON line instead.

The camera: OpenCV's first camera (or --camera N). Where there is none (a server, a container), the
command says so and exits with status 2; replay a file with --video instead. Only the camera's
frames are sent: there is no microphone capture here, though --audio FILE can go with it.

`run_stream` is the engine, shared with bench/bench_live.py: it paces the media, and records when
each frame and audio second was sent and when its result came back."""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import math
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from google.protobuf.json_format import MessageToJson

from emomesh.addresses import Addresses, add_address_arguments
from emomesh.analyze_cli import UNREACHABLE_HINT, client_security
from emomesh.labels import LABELS, top_label
from emomesh.render import top_text
from emomesh.security import ClientSecurity, open_aio_channel
from emomesh.server import grpc_options
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc

SAMPLE_RATE = 16_000
AUDIO_CHUNK_S = 0.1
JPEG_QUALITY = 85
DEFAULT_FPS = 30.0
STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class MediaError(Exception):
    """A file or device that cannot be used; the message says what to do instead."""


@dataclass(frozen=True)
class Timed:
    """One message to send at `at` seconds after the stream's start."""

    at: float
    request: fusion_pb2.StreamRequest
    # What it carries, for the report: "frame" (with its index) or "audio" (with the samples sent so far).
    kind: str
    position: int


def jpeg(frame_bgr: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".jpg", frame_bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise MediaError("a frame could not be encoded as JPEG")
    return encoded.tobytes()


def video_frames(path: Path, fps: float | None = None, limit_s: float | None = None) -> Iterator[Timed]:
    """The file's frames as JPEG at their own times (resampled to `fps` when given)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise MediaError(f"{path}: not a video OpenCV can read")
    native = capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
    step = 1.0 / (fps or native)
    index, next_at = 0, 0.0
    try:
        for read in itertools.count():
            ok, frame = capture.read()
            if not ok:
                break
            at = read / native
            if limit_s is not None and at > limit_s:
                break
            if at + 1e-9 < next_at:
                continue
            next_at += step
            yield Timed(at, frame_request(jpeg(frame), at), "frame", index)
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise MediaError(f"{path}: no frame could be read")


def camera_frames(device: int, fps: float, limit_s: float | None) -> Iterator[Timed]:
    """The camera's frames as they come, at most `fps` a second."""
    import cv2

    # OpenCV logs its own warnings for a missing device; the MediaError below says it once, plainly.
    cv2.setLogLevel(0)  # 0: silent
    capture = cv2.VideoCapture(device)
    if not capture.isOpened():
        raise MediaError(
            f"no camera at index {device} (OpenCV could not open /dev/video{device}); "
            "on a machine without one, replay a file with --video FILE"
        )
    start, index = time.monotonic(), 0
    try:
        while limit_s is None or time.monotonic() - start < limit_s:
            ok, frame = capture.read()
            if not ok:
                raise MediaError(f"camera {device} stopped giving frames")
            at = time.monotonic() - start
            if at * fps + 1e-9 < index:
                continue
            yield Timed(at, frame_request(jpeg(frame), at), "frame", index)
            index += 1
    finally:
        capture.release()


def gliding_frames(
    picture: np.ndarray, seconds: float, fps: float = DEFAULT_FPS, period_s: float = 4.0, swing_px: int = 120
) -> Iterator[Timed]:
    """A camera without a camera: `picture` (BGR) gliding left and right, one full swing every `period_s`,
    across a gray 640x480 frame, as JPEG frames at `fps`. For the demo, the tests and the bench."""
    height, width = picture.shape[:2]
    if height > 480 or width + 2 * swing_px > 640:
        raise ValueError(f"a {width}x{height} picture swinging {swing_px} px does not fit in 640x480")
    top, centre = (480 - height) // 2, (640 - width) // 2
    for index in range(int(seconds * fps)):
        canvas = np.full((480, 640, 3), 90, np.uint8)
        x = centre + int(swing_px * math.sin(2 * math.pi * index / (period_s * fps)))
        canvas[top : top + height, x : x + width] = picture
        yield Timed(index / fps, frame_request(jpeg(canvas), index / fps), "frame", index)


def frame_request(encoded: bytes, at: float) -> fusion_pb2.StreamRequest:
    return fusion_pb2.StreamRequest(frame=fusion_pb2.StreamFrame(encoded=encoded, timestamp_s=at))


def decode_pcm16(path: Path, limit_s: float | None = None) -> np.ndarray | None:
    """The file's first audio track as 16 kHz mono int16, or None when it has no audio track."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"{path}: not a media file this machine can decode ({exc})") from exc
    with container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        parts: list[np.ndarray] = []
        for frame in container.decode(container.streams.audio[0]):
            for resampled in resampler.resample(frame):
                parts.append(resampled.to_ndarray().reshape(-1))
        for resampled in resampler.resample(None):
            parts.append(resampled.to_ndarray().reshape(-1))
    samples = np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)
    return samples[: int(limit_s * SAMPLE_RATE)] if limit_s is not None else samples


def audio_chunks(samples: np.ndarray, chunk_s: float = AUDIO_CHUNK_S) -> Iterator[Timed]:
    """100 ms chunks, each sent when its last sample would have been heard."""
    size = int(chunk_s * SAMPLE_RATE)
    for start in range(0, len(samples), size):
        chunk = samples[start : start + size]
        end = start + len(chunk)
        request = fusion_pb2.StreamRequest(audio=fusion_pb2.StreamAudio(data=chunk.astype("<i2").tobytes()))
        yield Timed(end / SAMPLE_RATE, request, "audio", end)


def start_request(audio: bool, transcribe: bool = True, smoothing_s: float | None = None) -> fusion_pb2.StreamRequest:
    settings = fusion_pb2.StreamSettings(transcribe=transcribe, speaker="user")
    if smoothing_s is not None:
        settings.smoothing_s = smoothing_s
    start = fusion_pb2.StreamStart(settings=settings)
    if audio:
        start.audio_encoding = fusion_pb2.AUDIO_ENCODING_PCM16
        start.sample_rate_hz = SAMPLE_RATE
        start.channels = 1
    return fusion_pb2.StreamRequest(start=start)


@dataclass
class LiveReport:
    """What one stream sent and got, on the client's clock (seconds since the first message)."""

    frame_sent: dict[int, float] = field(default_factory=dict)
    face_latency_s: list[float] = field(default_factory=list)
    audio_sent: list[tuple[int, float]] = field(default_factory=list)  # (samples sent, when)
    speech_latency_s: list[float] = field(default_factory=list)
    transcript_latency_s: list[float] = field(default_factory=list)
    events: int = 0
    final_stats: fusion_pb2.StreamStats | None = None
    duration_s: float = 0.0

    def audio_sent_at(self, seconds: float) -> float | None:
        position = seconds * SAMPLE_RATE
        for samples, at in self.audio_sent:
            if samples >= position - 1:
                return at
        return None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_stream(
    stub: fusion_pb2_grpc.FusionServiceStub,
    media: list[Iterator[Timed]],
    *,
    audio: bool,
    transcribe: bool = True,
    on_event: Callable[[fusion_pb2.StreamEvent, float], None] | None = None,
    realtime: bool = True,
    timeout_s: float | None = None,
) -> LiveReport:
    """Sends the media (merged in time order, paced at real time unless `realtime` is False), then `end`,
    and reads every event until the server closes the stream."""
    report = LiveReport()
    start = time.monotonic()

    def now() -> float:
        return time.monotonic() - start

    # A MediaError of the media mid-stream (a camera that stops): gRPC cancels the call when the request
    # iterator raises, and the reader below gets a bare CancelledError; it raises this error instead.
    media_failure: list[MediaError] = []

    async def requests() -> AsyncIterator[fusion_pb2.StreamRequest]:
        yield start_request(audio, transcribe)
        try:
            for item in heapq.merge(*media, key=lambda t: t.at):
                if realtime:
                    delay = item.at - now()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if item.kind == "frame":
                    report.frame_sent[item.position] = now()
                else:
                    report.audio_sent.append((item.position, now()))
                yield item.request
        except MediaError as exc:
            media_failure.append(exc)
            raise
        yield fusion_pb2.StreamRequest(end=fusion_pb2.StreamEnd())

    call = stub.AnalyzeStream(requests(), timeout=timeout_s)
    try:
        async for event in call:
            received = now()
            report.events += 1
            kind = event.WhichOneof("event")
            if kind == "faces" and event.faces.frame_index in report.frame_sent:
                report.face_latency_s.append(received - report.frame_sent[event.faces.frame_index])
            elif kind == "speech":
                sent = report.audio_sent_at(event.speech.end_s)
                if sent is not None:
                    report.speech_latency_s.append(received - sent)
            elif kind == "transcript":
                sent = report.audio_sent_at(event.transcript.end_s)
                if sent is not None:
                    report.transcript_latency_s.append(received - sent)
            elif kind == "stats":
                report.final_stats = event.stats
            if on_event is not None:
                on_event(event, received)
    except asyncio.CancelledError:
        if media_failure:
            raise media_failure[0] from None
        raise
    report.duration_s = now()
    return report


class Timeline:
    """Prints the events worth reading as one line each."""

    def __init__(self, every_frame: bool = False, json_lines: bool = False) -> None:
        self.every_frame = every_frame
        self.json_lines = json_lines
        self.face_labels: dict[int, str] = {}
        self.last_stats = -1.0

    def __call__(self, event: fusion_pb2.StreamEvent, received: float) -> None:
        if self.json_lines:
            print(MessageToJson(event, indent=None), flush=True)
            return
        line = self.line(event)
        if line:
            print(f"{event.time_s:7.2f}s  {line}", flush=True)

    def line(self, event: fusion_pb2.StreamEvent) -> str | None:
        kind = event.WhichOneof("event")
        if kind == "started":
            s = event.started
            return (
                f"started   windows {s.window_s:.1f} s every {s.hop_s:.1f} s, smoothing {s.smoothing_s:.1f} s, "
                f"transcribe {'on' if s.transcribe else 'off'}"
            )
        if kind == "faces":
            return self._faces(event.faces)
        if kind == "speech":
            return self._speech(event.speech)
        if kind == "transcript":
            t = event.transcript
            final = "final" if t.final else "so far"
            return f"words     {t.start_s:5.1f}-{t.end_s:5.1f} s ({final}): {t.text!r} ({t.latency_ms:.0f} ms)"
        if kind == "text":
            t = event.text
            source = "transcript" if t.from_transcript else "typed"
            return f"text      {t.text!r} ({source}): {top_text(t.result.distribution)}"
        if kind == "change":
            c = event.change
            before = "-" if c.previous == common_pb2.EMOTION_UNSPECIFIED else _emotion(c.previous)
            return f"changed   {before} -> {_emotion(c.current)} ({c.probability:.2f})"
        if kind == "stats":
            return self._stats(event.stats, event.time_s)
        if kind == "error":
            e = event.error
            return f"error     {e.item}: {STATUS_NAMES.get(e.code, str(e.code))}: {e.message}"
        return None  # state: the changes say it; --json shows every state

    def _faces(self, faces: fusion_pb2.StreamFaces) -> str | None:
        labels = {face.track_id: top_label(face.distribution) for face in faces.faces}
        changed = {t: label for t, label in labels.items() if self.face_labels.get(t) != label}
        self.face_labels = labels
        if not self.every_frame and not changed:
            return None
        parts = [
            f"#{f.track_id} {top_text(f.distribution)} at {f.box.x},{f.box.y} {f.box.width}x{f.box.height}"
            for f in faces.faces
        ]
        return f"faces     frame {faces.frame_index}: {'; '.join(parts) or 'no face'} ({faces.latency_ms:.0f} ms)"

    @staticmethod
    def _speech(speech: fusion_pb2.StreamSpeech) -> str:
        window = f"{speech.start_s:5.1f}-{speech.end_s:5.1f} s"
        heard = top_text(speech.distribution) if speech.HasField("distribution") else "no speech"
        return f"speech    {window}: {heard} ({speech.latency_ms:.0f} ms)"

    def _stats(self, stats: fusion_pb2.StreamStats, at: float) -> str | None:
        if at - self.last_stats < 4.9:
            return None  # every 5 s is enough to read
        self.last_stats = at
        return (
            f"stats     frames {stats.frames_received} in, {stats.frames_analysed} analysed "
            f"({stats.analysed_fps:.0f}/s), {stats.frames_dropped} dropped; audio {stats.audio_received_s:.1f} s, "
            f"{stats.audio_windows_analysed} windows"
        )


def _emotion(value: int) -> str:
    return LABELS[value - 1] if 1 <= value <= len(LABELS) else "?"


def summary(report: LiveReport) -> str:
    stats = report.final_stats or fusion_pb2.StreamStats()
    lines = [
        f"{report.duration_s:.1f} s: {stats.frames_received} frames sent, {stats.frames_analysed} analysed, "
        f"{stats.frames_dropped} dropped, {stats.frames_failed} failed; {stats.audio_received_s:.1f} s of audio, "
        f"{stats.audio_windows_analysed} windows analysed, {stats.audio_windows_skipped} skipped",
    ]
    if report.face_latency_s:
        ms = [v * 1000 for v in report.face_latency_s]
        lines.append(
            f"face lane: frame sent -> faces received p50 {percentile(ms, 0.5):.0f} ms, "
            f"p95 {percentile(ms, 0.95):.0f} ms"
        )
    if report.speech_latency_s:
        s = report.speech_latency_s
        lines.append(f"voice lane: window's last sample sent -> speech received p50 {statistics.median(s):.2f} s")
    if report.transcript_latency_s:
        t = report.transcript_latency_s
        lines.append(f"words: utterance's last sample sent -> transcript received p50 {statistics.median(t):.2f} s")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", type=Path, help="a video file, replayed at real time (with its sound track)")
    parser.add_argument("--audio", type=Path, help="an audio file (WAV, FLAC, OGG, MP3...), replayed at real time")
    parser.add_argument(
        "--camera", type=int, nargs="?", const=0, default=None, metavar="INDEX", help="the local camera (index 0)"
    )
    parser.add_argument(
        "--fps", type=float, help=f"frames per second to send (default: the video's, camera {DEFAULT_FPS:.0f})"
    )
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--no-transcript", action="store_true", help="do not transcribe the speech")
    parser.add_argument("--every-frame", action="store_true", help="print every frame's faces, not only changes")
    parser.add_argument("--json", action="store_true", help="print every event as one JSON line, only")
    add_address_arguments(parser, ("fusion",), one="the fusion service")


def media_of(args: argparse.Namespace) -> tuple[list[Iterator[Timed]], bool]:
    """The media iterators and whether audio is sent; MediaError when nothing can be sent."""
    if args.video is None and args.audio is None and args.camera is None:
        raise MediaError("pass --video FILE, --audio FILE and/or --camera")
    if args.video is not None and args.camera is not None:
        raise MediaError("pass --video or --camera, not both")
    media: list[Iterator[Timed]] = []
    sound: np.ndarray | None = None
    if args.video is not None:
        if not args.video.is_file():
            raise MediaError(f"{args.video}: no such file")
        frames = video_frames(args.video, args.fps, args.duration)
        media.append(_checked(frames))
        if args.audio is None:
            sound = decode_pcm16(args.video, args.duration)
    if args.camera is not None:
        media.append(_checked(camera_frames(args.camera, args.fps or DEFAULT_FPS, args.duration)))
    if args.audio is not None:
        if not args.audio.is_file():
            raise MediaError(f"{args.audio}: no such file")
        sound = decode_pcm16(args.audio, args.duration)
        if sound is None:
            raise MediaError(f"{args.audio}: no audio track")
    if sound is not None and len(sound):
        media.append(audio_chunks(sound))
    return media, sound is not None and len(sound) > 0


def _checked(frames: Iterator[Timed]) -> Iterator[Timed]:
    """The iterator with its first item read now, so a camera or file that cannot be opened fails before
    the stream starts."""
    first = next(frames, None)
    if first is None:
        return iter(())
    return itertools.chain([first], frames)


async def replay(
    address: str,
    security: ClientSecurity | None,
    media: list[Iterator[Timed]],
    *,
    audio: bool,
    transcribe: bool = True,
    on_event: Callable[[fusion_pb2.StreamEvent, float], None] | None = None,
) -> LiveReport:
    """One stream of `media` to the fusion service at `address`, at real time (run_stream on its own channel)."""
    channel = open_aio_channel(address, security, grpc_options(32 << 20))
    try:
        stub = fusion_pb2_grpc.FusionServiceStub(channel)
        return await run_stream(stub, media, audio=audio, transcribe=transcribe, on_event=on_event)
    finally:
        await channel.close()


async def live(address: str, security: ClientSecurity, args: argparse.Namespace) -> LiveReport:
    media, audio = media_of(args)
    timeline = Timeline(args.every_frame, args.json)
    return await replay(address, security, media, audio=audio, transcribe=not args.no_transcript, on_event=timeline)


def cmd_live(args: argparse.Namespace) -> int:
    try:
        address = Addresses.from_args(args, bare_address=True).address("fusion")
        security = client_security()
        report = asyncio.run(live(address, security, args))
    except (MediaError, ValueError, OSError) as exc:
        print(f"emomesh live: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as err:
        hint = UNREACHABLE_HINT if err.code() == grpc.StatusCode.UNAVAILABLE else ""
        print(f"emomesh live: fusion at {address}: {err.code().name}: {err.details()}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if not args.json:
        print(summary(report))
    return 0
