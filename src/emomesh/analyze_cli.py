"""`emomesh analyze --image/--video/--audio/--text` through FusionService.Analyze: one call, every
modality in parallel on the server, the fused result and each modality's outcome printed, with what
came back in detail: each face (box, emotion), each video track (its frames and its emotion over time
as sparklines), each audio window, the transcript and its language, the text's language. `--json`
prints the whole response in protobuf's JSON mapping instead, and nothing else on stdout.

Wiring into cli.py (kept separate so the CLI owner decides):
    analyze = sub.add_parser("analyze", help="analyse media through a running stack")
    analyze_cli.add_arguments(analyze)
    analyze.set_defaults(func=analyze_cli.cmd_analyze)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToJson

from emomesh.addresses import Addresses, add_address_arguments
from emomesh.config import Env
from emomesh.labels import LABELS, modality_name, polarity_name, probs_from_distribution, status_name
from emomesh.render import distribution_lines, top_text
from emomesh.security import ClientSecurity, open_channel
from emomesh.server import grpc_options
from emotion.audio.v1 import audio_pb2
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from emotion.text.v1 import text_pb2
from emotion.vision.v1 import vision_pb2

DEFAULT_TIMEOUT_S = 60.0
# Eight levels for a probability in [0, 1]; NOT_SEEN where a track has no face in a frame.
SPARK_LEVELS = "▁▂▃▄▅▆▇█"
NOT_SEEN = "·"
DETAIL = "      "
UNREACHABLE_HINT = (
    " (is the stack up? `emomesh up` starts it; --stack, --fusion or EMOMESH_CLIENT_FUSION_ADDR reach another one)"
)
# TLS and the bearer token of command-line clients (emomesh analyze, emomesh health).
CLIENT_ENV_PREFIX = "EMOMESH_CLIENT_"


def client_security() -> ClientSecurity:
    """EMOMESH_CLIENT_TLS_CA / _TLS_CERT / _TLS_KEY / _TLS and EMOMESH_CLIENT_TOKEN."""
    return ClientSecurity.from_env(Env(CLIENT_ENV_PREFIX))


def build_request(
    image: Path | None = None,
    video: Path | None = None,
    audio: Path | None = None,
    text: str | None = None,
    transcript_as_text: bool = True,
) -> fusion_pb2.AnalyzeRequest:
    if image is not None and video is not None:
        raise ValueError("pass --image or --video, not both")
    request = fusion_pb2.AnalyzeRequest(transcript_as_text=transcript_as_text)
    if image is not None:
        request.image = image.read_bytes()
    if video is not None:
        request.video = video.read_bytes()
    if audio is not None:
        request.audio = audio.read_bytes()
    if text:
        request.text = text
    if request.WhichOneof("visual") is None and not request.audio and not request.text:
        raise ValueError("nothing to analyse: pass --image, --video, --audio and/or --text")
    return request


def analyze(
    address: str,
    request: fusion_pb2.AnalyzeRequest,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    security: ClientSecurity | None = None,
) -> fusion_pb2.AnalyzeResponse:
    with open_channel(address, security, grpc_options(256 * 1024 * 1024)) as channel:
        response: fusion_pb2.AnalyzeResponse = fusion_pb2_grpc.FusionServiceStub(channel).Analyze(
            request, timeout=timeout_s
        )
    return response


def sparkline(values: Sequence[float | None]) -> str:
    """One character per value in [0, 1], ▁ (0) to █ (1); NOT_SEEN for None."""
    top = len(SPARK_LEVELS) - 1
    return "".join(NOT_SEEN if v is None else SPARK_LEVELS[min(top, max(0, round(v * top)))] for v in values)


def _box(box: vision_pb2.BoundingBox) -> str:
    return f"{box.width}x{box.height} at ({box.x},{box.y})"


def image_lines(image: vision_pb2.AnalyzeImageResponse) -> list[str]:
    """The image's size and each face: its box and its emotion."""
    count = len(image.faces)
    lines = [f"{count} face{'' if count == 1 else 's'} in the {image.image_width}x{image.image_height} image"]
    for number, face in enumerate(image.faces, 1):
        lines.append(f"  face {number}  box {_box(face.box):<22} {top_text(face.distribution)}")
    return lines


def _emotions_to_plot(track: vision_pb2.FaceTrack, seen: Sequence[common_pb2.EmotionDistribution]) -> list[int]:
    """The track's own top emotion, then any other emotion that is on top in one of its frames (at most 3)."""
    order = [int(probs_from_distribution(track.distribution).argmax())]
    for dist in seen:
        top = int(probs_from_distribution(dist).argmax())
        if top not in order:
            order.append(top)
    return order[:3]


def _face_of(frame: vision_pb2.FrameResult, track_id: int) -> common_pb2.EmotionDistribution | None:
    return next((face.distribution for face in frame.faces if face.track_id == track_id), None)


def video_lines(video: vision_pb2.AnalyzeVideoResponse) -> list[str]:
    """The sampled frames, then each track: where it was seen and its emotions over the frames."""
    frames = list(video.frames)
    tracks = len(video.tracks)
    lines = [
        f"{video.frames_sampled} frames sampled over {video.duration_s:.1f} s, "
        f"{video.frames_without_faces} without a face; {tracks} face track{'' if tracks == 1 else 's'}"
    ]
    if video.HasField("aggregate"):
        lines[0] += f"; whole clip {top_text(video.aggregate)}"
    for track in video.tracks:
        per_frame = [_face_of(frame, track.track_id) for frame in frames]
        seen = [(frame, dist) for frame, dist in zip(frames, per_frame, strict=True) if dist is not None]
        span = f", {seen[0][0].timestamp_s:.1f}-{seen[-1][0].timestamp_s:.1f} s" if seen else ""
        lines.append(
            f"  track {track.track_id}  {top_text(track.distribution)}, "
            f"in {track.frames_seen} of {len(frames)} frames{span}"
        )
        for index in _emotions_to_plot(track, [dist for _, dist in seen]):
            values = [None if d is None else float(probs_from_distribution(d)[index]) for d in per_frame]
            lines.append(f"    {LABELS[index]:<9} {sparkline(values)}")
    return lines


def audio_lines(audio: audio_pb2.AnalyzeAudioResponse) -> list[str]:
    """Duration, whether there was speech, each window's time range and emotion, the transcript with its
    language and confidence."""
    speech = "speech" if audio.speech_detected else (audio.no_speech_reason or "no speech detected")
    padded = ", shorter than one window (padded)" if audio.padded else ""
    count = len(audio.windows)
    lines = [f"{audio.duration_s:.1f} s, {speech}{padded}; {count} window{'' if count == 1 else 's'}"]
    for window in audio.windows:
        span = f"{window.start_s:.1f}-{window.end_s:.1f} s"
        emotion = top_text(window.distribution) if window.HasField("distribution") else "no speech"
        lines.append(f"  {span:<13} {emotion}")
    if audio.HasField("transcript"):
        transcript = audio.transcript
        facts = [transcript.language or "language unknown"]
        if transcript.language and transcript.language_probability > 0:
            facts[0] += f" {transcript.language_probability:.0%}"
        if transcript.segments:
            # How sure the recogniser was (fusion discounts the transcript's text by it).
            facts.append(f"mean log-prob {transcript.avg_logprob:.2f}, no speech {transcript.no_speech_prob:.0%}")
        lines.append(f"transcript ({', '.join(facts)}): {transcript.text.strip()!r}")
    return lines


def text_lines(text: text_pb2.AnalyzeTextResponse) -> list[str]:
    """The text's language, the model that read it (the route the text service took), its valence and
    arousal when the model gives them, its translation and the service's caveats."""
    facts = [f"language {text.language or 'und'}", f"{text.tokens} tokens"]
    if text.model.name:
        facts.append(f"model {text.model.name}")
    if text.truncated:
        facts.append("truncated to the model's length")
    if text.HasField("dimensions"):
        facts.append(f"valence {text.dimensions.valence:+.2f}, arousal {text.dimensions.arousal:+.2f}")
    lines = [", ".join(facts)]
    if text.translated:
        lines.append(f"translated: {text.translated_text!r}")
    if text.note:
        lines.append(f"note: {text.note}")
    return lines


def _details(response: fusion_pb2.AnalyzeResponse, modality: int) -> list[str]:
    if modality == common_pb2.MODALITY_VISION:
        if response.HasField("image"):
            return image_lines(response.image)
        if response.HasField("video"):
            return video_lines(response.video)
    elif modality == common_pb2.MODALITY_AUDIO and response.HasField("audio"):
        return audio_lines(response.audio)
    elif modality == common_pb2.MODALITY_TEXT and response.HasField("text"):
        return text_lines(response.text)
    return []


def format_response(response: fusion_pb2.AnalyzeResponse) -> str:
    fused = response.fused
    lines = [f"Analyze: {response.latency_ms:.1f} ms server-side"]
    if fused.HasField("distribution"):
        weights = ", ".join(f"{modality_name(w.modality)} {w.weight:.2f}" for w in fused.weights)
        polarity = polarity_name(fused.polarity)
        lines.append(f"fused: {top_text(fused.distribution)}, polarity {polarity}, weights {weights}")
        lines.extend(distribution_lines(fused.distribution, top_k=3))
    else:
        lines.append("fused: no modality could be used")
    if fused.conflict:
        lines.append(f"conflict: {fused.conflict_detail}")
    for result in response.modalities:
        name = modality_name(result.modality)
        status = status_name(result.status)
        line = f"  {name:<6} {status:<14} {result.latency_ms:7.1f} ms"
        if result.HasField("distribution"):
            line += f"  {top_text(result.distribution)}"
        if result.status == common_pb2.MODALITY_STATUS_OK or result.HasField("distribution"):
            line += f"  reliability {result.reliability:.2f}"
        if result.detail:
            line += f"  ({result.detail})"
        lines.append(line)
        lines.extend(DETAIL + detail for detail in _details(response, result.modality))
    if response.text_from_transcript:
        lines.append(f"  text came from the audio transcript: {response.audio.transcript.text!r}")
    return "\n".join(lines)


def response_json(response: fusion_pb2.AnalyzeResponse) -> str:
    """protobuf's JSON mapping of the response (lowerCamelCase names, enums by name), with the fields
    that hold their default value (false, 0, "") too, so that a script finds every field."""
    return MessageToJson(response, always_print_fields_with_no_presence=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, help="an image file (JPEG, PNG...)")
    parser.add_argument("--video", type=Path, help="a video file (instead of --image)")
    parser.add_argument("--audio", type=Path, help="an audio file (WAV, FLAC, OGG, MP3...)")
    parser.add_argument("--text", help="text to analyse; without it, the audio transcript is used")
    parser.add_argument("--no-transcript", action="store_true", help="do not analyse the audio transcript as text")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="deadline of the whole call (s)")
    parser.add_argument("--json", action="store_true", help="print the response as JSON (protobuf's mapping), only")
    add_address_arguments(parser, ("fusion",), one="the fusion service")


def cmd_analyze(args: argparse.Namespace) -> int:
    try:
        request = build_request(args.image, args.video, args.audio, args.text, not args.no_transcript)
        address = Addresses.from_args(args, bare_address=True).address("fusion")
        security = client_security()
    except (ValueError, OSError) as exc:  # AddressError and ConfigError are ValueErrors
        print(f"emomesh analyze: {exc}", file=sys.stderr)
        return 2
    try:
        response = analyze(address, request, args.timeout, security)
    except grpc.RpcError as err:
        code = err.code() if isinstance(err, grpc.Call) else None
        details = err.details() if isinstance(err, grpc.Call) else str(err)
        hint = UNREACHABLE_HINT if code == grpc.StatusCode.UNAVAILABLE else ""
        status = code.name if code else "error"
        print(f"emomesh analyze: fusion at {address}: {status}: {details}{hint}", file=sys.stderr)
        return 1
    print(response_json(response) if args.json else format_response(response))
    return 0
