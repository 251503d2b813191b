"""`emomesh demo`: the whole product in one run on the embedded stack — a face and a voice analysed
and fused through FusionService.Analyze (the voice's transcript becomes the text), an empathetic
reply streamed by DialogService.Chat with that emotion (an offline fallback, clearly marked, when no
LLM endpoint is configured); then a Mandarin voice through Analyze the same way (its transcript,
detected language, the text model that read it, the fused result), two Chinese sentences through
TextService.AnalyzeText, and a 4-s live session through FusionService.AnalyzeStream (the photo gliding
across 640x480 frames at 30 fps with the voice, at real time: its timeline and the face lane's latency).

The demo prints what the models answer and asserts no emotion; it fails (DemoFailed) only when the
Mandarin clip comes back without any transcript, since then speech recognition is not working."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import cv2
import grpc

from emomesh.analyze_cli import DETAIL, analyze, build_request, format_response, text_lines
from emomesh.labels import status_name
from emomesh.live_cli import LiveReport, Timeline, audio_chunks, decode_pcm16, gliding_frames, replay, summary
from emomesh.paths import SAMPLES_DIR
from emomesh.ports import GATEWAY_PORT, LOOPBACK
from emomesh.procs import local_http
from emomesh.readiness import gateway_readiness
from emomesh.render import top_text
from emomesh.server import grpc_options
from emomesh.stack import Stack, StackConfig
from emotion.common.v1 import common_pb2
from emotion.dialog.v1 import dialog_pb2, dialog_pb2_grpc
from emotion.fusion.v1 import fusion_pb2
from emotion.text.v1 import text_pb2, text_pb2_grpc

SAMPLE_IMAGE = SAMPLES_DIR / "astronaut.jpg"
SAMPLE_SPEECH = SAMPLES_DIR / "speech.wav"
# "我们明天一起去北京吧。" (let's go to Beijing together tomorrow) by espeak-ng's Mandarin voice
# (samples/README.md): one of the few espeak-ng Mandarin sentences Whisper base identifies as `zh`.
SAMPLE_SPEECH_ZH = SAMPLES_DIR / "speech_zh.wav"
# Weibo-style posts written for the demo, one plainly happy, one plainly sad (bench.bench_languages
# times the multilingual text model on them too).
CHINESE_TEXTS = (
    "终于拿到录取通知书了，开心得睡不着！",
    "一个人在外地过年，好想家，心里空落落的。",
)


class DemoFailed(RuntimeError):
    """Something the demo exists to show did not work at all (not: a model answered differently)."""


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


def analyze_mandarin(config: StackConfig, speech: Path) -> fusion_pb2.AnalyzeResponse:
    """The Mandarin clip through Analyze, its transcript as the text; DemoFailed when nothing was transcribed."""
    print(f"\n== FusionService.Analyze: {speech.name} (Mandarin, its transcript as the text)", flush=True)
    response = analyze(config.address("fusion"), build_request(audio=speech))
    print(format_response(response), flush=True)
    transcript = response.audio.transcript
    if not transcript.text.strip():
        audio = next((r for r in response.modalities if r.modality == common_pb2.MODALITY_AUDIO), None)
        outcome = "no audio result" if audio is None else f"audio {status_name(audio.status)}"
        if audio is not None and audio.detail:
            outcome += f": {audio.detail}"
        raise DemoFailed(
            f"the Mandarin clip {speech} came back without a transcript ({outcome}): speech recognition is "
            f"not working (see {config.state_dir / 'logs' / 'audio.log'})"
        )
    if transcript.language != "zh":
        # Not an error: an English-only recogniser (EMOMESH_AUDIO_ASR_MODEL=tiny.en) hears English.
        print(f"  (the recogniser heard {transcript.language or 'no language'!r}, not 'zh')", flush=True)
    return response


def analyze_chinese_texts(address: str, texts: tuple[str, ...] = CHINESE_TEXTS) -> list[text_pb2.AnalyzeTextResponse]:
    """Each text through TextService.AnalyzeText: emotion, reliability, language and the model that read it."""
    print("\n== TextService.AnalyzeText: Chinese text", flush=True)
    responses = []
    with grpc.insecure_channel(address, options=grpc_options(16 * 1024 * 1024)) as channel:
        stub = text_pb2_grpc.TextServiceStub(channel)
        for text in texts:
            response: text_pb2.AnalyzeTextResponse = stub.AnalyzeText(
                text_pb2.AnalyzeTextRequest(text=text), timeout=60
            )
            print(text, flush=True)
            print(f"{DETAIL}{top_text(response.distribution)}, reliability {response.reliability:.2f}", flush=True)
            for line in text_lines(response):
                print(DETAIL + line, flush=True)
            responses.append(response)
    return responses


def live_session(address: str, image: Path, speech: Path, seconds: float = 4.0) -> LiveReport:
    print(
        f"\n== FusionService.AnalyzeStream: {image.name} gliding across 640x480 frames at 30 fps + {speech.name}, "
        "at real time",
        flush=True,
    )
    picture = cv2.imread(str(image))
    if picture is None:
        raise DemoFailed(f"{image} could not be read")
    sound = decode_pcm16(speech, seconds)
    media = [gliding_frames(cv2.resize(picture, (320, 320), interpolation=cv2.INTER_AREA), seconds)]
    if sound is not None:
        media.append(audio_chunks(sound))
    report = asyncio.run(replay(address, None, media, audio=sound is not None, on_event=Timeline()))
    print(summary(report), flush=True)
    return report


def console_check(stack: Stack) -> None:
    """The web console through the gateway: the page is served and the gateway sees its services ready. The
    demo's stack stops at the end, so it says how to keep one running to open the console in a browser."""
    url = stack.console_url
    if url is None:
        return
    print(f"\n== Web console (gateway): {url}", flush=True)
    with local_http().open(url, timeout=10) as page:
        size = len(page.read())
    readiness = gateway_readiness(url.rstrip("/"), timeout_s=10)
    services = ", ".join(f"{name} {status}" for name, status in readiness["services"].items())
    print(f"  the page: {size} bytes; ready: {'yes' if readiness['ready'] else 'no'} ({services})", flush=True)
    print(
        f"  To try it in a browser: `.venv/bin/emomesh up`, then open http://{LOOPBACK}:{GATEWAY_PORT}/ "
        "(camera, push-to-talk and chat; docs/console.md). This demo's stack stops now.",
        flush=True,
    )


def run_demo(
    state_dir: Path, image: Path = SAMPLE_IMAGE, speech: Path = SAMPLE_SPEECH, speech_zh: Path = SAMPLE_SPEECH_ZH
) -> str:
    """Starts the stack on free ports, runs the samples through it, stops it; returns the report."""
    config = StackConfig.ephemeral(state_dir)
    with Stack(config) as stack:
        print(stack.describe(console_hint=False), flush=True)
        print(f"\n== FusionService.Analyze: {image.name} + {speech.name} (its transcript as the text)", flush=True)
        response = analyze(config.address("fusion"), build_request(image=image, audio=speech))
        print(format_response(response), flush=True)
        message = response.audio.transcript.text.strip() or "Hello!"
        print("\n== DialogService.Chat with the fused emotion", flush=True)
        reply = chat(config.address("dialog"), message, response)
        print(reply, flush=True)
        analyze_mandarin(config, speech_zh)
        analyze_chinese_texts(config.address("text"))
        live_session(config.address("fusion"), image, speech)
        console_check(stack)
    return reply
