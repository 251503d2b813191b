"""`emomesh demo`: the whole product in one run on the embedded stack — a face and a voice analysed
and fused through FusionService.Analyze (the voice's transcript becomes the text), then an
empathetic reply streamed by DialogService.Chat with that emotion (an offline fallback, clearly
marked, when no LLM endpoint is configured)."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc

from emomesh.analyze_cli import analyze, build_request, format_response
from emomesh.paths import SAMPLES_DIR
from emomesh.server import grpc_options
from emomesh.stack import Stack, StackConfig
from emotion.dialog.v1 import dialog_pb2, dialog_pb2_grpc
from emotion.fusion.v1 import fusion_pb2

SAMPLE_IMAGE = SAMPLES_DIR / "astronaut.jpg"
SAMPLE_SPEECH = SAMPLES_DIR / "speech.wav"


def chat(address: str, message: str, analysis: fusion_pb2.AnalyzeResponse, timeout_s: float = 60.0) -> str:
    """Streams one Chat turn and returns it as printable text."""
    request = dialog_pb2.ChatRequest(
        session_id=f"demo-{uuid.uuid4().hex[:8]}",
        message=message,
        persona=dialog_pb2.Persona(kind=dialog_pb2.PERSONA_KIND_DAILY_CHAT),
        emotion=dialog_pb2.EmotionContext(fused=analysis.fused, modalities=analysis.modalities),
    )
    parts: list[str] = []
    info = dialog_pb2.ReplyInfo()
    with grpc.insecure_channel(address, options=grpc_options(16 * 1024 * 1024)) as channel:
        for chunk in dialog_pb2_grpc.DialogServiceStub(channel).Chat(request, timeout=timeout_s):
            if chunk.WhichOneof("chunk") == "delta":
                parts.append(chunk.delta)
            else:
                info = chunk.done
    source = f"offline fallback ({info.fallback_reason})" if info.fallback else f"LLM {info.model}"
    return f"user: {message}\nreply [{source}, {info.latency_ms:.0f} ms]: {''.join(parts).strip()}"


def run_demo(state_dir: Path, image: Path = SAMPLE_IMAGE, speech: Path = SAMPLE_SPEECH) -> str:
    """Starts the stack on free ports, runs the samples through it, stops it; returns the report."""
    config = StackConfig.ephemeral(state_dir)
    with Stack(config) as stack:
        print(stack.describe(), flush=True)
        print(f"\n== FusionService.Analyze: {image.name} + {speech.name} (its transcript as the text)", flush=True)
        response = analyze(config.address("fusion"), build_request(image=image, audio=speech))
        print(format_response(response), flush=True)
        message = response.audio.transcript.text.strip() or "Hello!"
        print("\n== DialogService.Chat with the fused emotion", flush=True)
        reply = chat(config.address("dialog"), message, response)
        print(reply, flush=True)
    return reply
