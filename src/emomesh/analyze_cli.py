"""`emomesh analyze --image/--video/--audio/--text` through FusionService.Analyze: one call, every
modality in parallel on the server, the fused result and each modality's outcome printed.

Wiring into cli.py (kept separate so the CLI owner decides):
    analyze = sub.add_parser("analyze", help="analyse media through a running stack")
    analyze_cli.add_arguments(analyze)
    analyze.set_defaults(func=analyze_cli.cmd_analyze)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc

from emomesh.config import Env
from emomesh.labels import modality_name, polarity_name, status_name
from emomesh.ports import local_address
from emomesh.render import distribution_lines, top_text
from emomesh.security import ClientSecurity, open_channel
from emomesh.server import grpc_options
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc

DEFAULT_FUSION_ADDRESS = local_address("fusion")
DEFAULT_TIMEOUT_S = 60.0
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
    if response.text_from_transcript:
        lines.append(f"  text came from the audio transcript: {response.audio.transcript.text!r}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, help="an image file (JPEG, PNG...)")
    parser.add_argument("--video", type=Path, help="a video file (instead of --image)")
    parser.add_argument("--audio", type=Path, help="an audio file (WAV, FLAC, OGG, MP3...)")
    parser.add_argument("--text", help="text to analyse; without it, the audio transcript is used")
    parser.add_argument("--no-transcript", action="store_true", help="do not analyse the audio transcript as text")
    parser.add_argument("--fusion", default=DEFAULT_FUSION_ADDRESS, help="fusion service address")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="deadline of the whole call (s)")


def cmd_analyze(args: argparse.Namespace) -> int:
    try:
        request = build_request(args.image, args.video, args.audio, args.text, not args.no_transcript)
        security = client_security()
    except (ValueError, OSError) as exc:  # ConfigError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        response = analyze(args.fusion, request, args.timeout, security)
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    print(format_response(response))
    return 0
