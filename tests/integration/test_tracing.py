"""Tracing across the services: one Analyze is one trace, from fusion's server span through a client
span per modality call to each modality service's server span and its Triton calls, with the real
tritonserver and models; a Chat's trace holds its LLM and Redis calls. Then a service configured only
through the standard OTEL_* variables, run as its own process, exports its spans over OTLP to a
receiver in the test and flushes them when it stops gracefully; its log lines name the trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from emomesh.paths import PROJECT_ROOT
from emomesh.procs import RedisServer, free_port, grpc_healthy, stop_process, wait_until
from emomesh.tracing import (
    DB_SYSTEM,
    GEN_AI_INPUT_TOKENS,
    GEN_AI_OUTPUT_TOKENS,
    OUTCOME,
    RPC_SERVICE,
    RPC_STATUS_CODE,
    TRITON_BATCH_SIZE,
    TRITON_MODEL,
)
from emomesh.tritonserver import TritonServer
from emotion.common.v1 import common_pb2
from emotion.dialog.v1 import dialog_pb2, dialog_pb2_grpc
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from emotion.text.v1 import text_pb2, text_pb2_grpc
from services.audio.config import AudioSettings
from services.audio.server import build_server as build_audio
from services.dialog.config import DialogSettings
from services.dialog.server import build_server as build_dialog
from services.fusion.config import FusionSettings
from services.fusion.server import build_server as build_fusion
from services.text.config import TextSettings
from services.text.server import build_server as build_text
from services.vision.config import VisionSettings
from services.vision.server import build_server as build_vision
from tests.audio_media import espeak
from tests.conftest import service_env, serving
from tests.integration.openai_server import COMPLETION_TOKENS, PROMPT_TOKENS, OpenAIStub

pytestmark = pytest.mark.integration

FUSION = "emotion.fusion.v1.FusionService"
MODALITY_SERVICES = {
    "vision": "emotion.vision.v1.VisionService",
    "audio": "emotion.audio.v1.AudioService",
    "text": "emotion.text.v1.TextService",
}
TEXT = "Thank you so much, I love it!"
# An upstream caller's trace (W3C traceparent), which the traced service must join.
UPSTREAM_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
UPSTREAM_SPAN_ID = "00f067aa0ba902b7"


def attribute(span: ReadableSpan, name: str) -> object:
    return (span.attributes or {}).get(name)


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


@dataclass(frozen=True)
class ModelNames:
    vision: str
    detector: str
    audio: str
    text: str


@pytest.fixture
async def analyze_stack(
    triton_server: TritonServer,
) -> AsyncIterator[tuple[fusion_pb2_grpc.FusionServiceStub, ModelNames]]:
    """Vision, audio (without ASR: the request brings its own text) and text served in this process
    against the real tritonserver, and fusion in front of them."""
    vision_settings = VisionSettings.from_env(service_env("vision", triton_server))
    audio_settings = AudioSettings.from_env(service_env("audio", triton_server, EMOMESH_AUDIO_ASR_ENABLED="false"))
    text_settings = TextSettings.from_env(service_env("text", triton_server))
    async with AsyncExitStack() as stack:
        vision = await build_vision(vision_settings)
        await stack.enter_async_context(serving(vision))
        audio = await build_audio(audio_settings)
        await stack.enter_async_context(serving(audio))
        text = await build_text(text_settings)
        await stack.enter_async_context(serving(text))
        fusion_env = service_env(
            "fusion",
            EMOMESH_FUSION_VISION_ADDR=vision.address,
            EMOMESH_FUSION_AUDIO_ADDR=audio.address,
            EMOMESH_FUSION_TEXT_ADDR=text.address,
        )
        channel = await stack.enter_async_context(serving(build_fusion(FusionSettings.from_env(fusion_env))))
        models = ModelNames(
            vision_settings.model_name,
            vision_settings.detector_model,
            audio_settings.model_name,
            text_settings.model_name,
        )
        yield fusion_pb2_grpc.FusionServiceStub(channel), models


async def test_one_analyze_is_one_trace(
    spans: InMemorySpanExporter,
    analyze_stack: tuple[fusion_pb2_grpc.FusionServiceStub, ModelNames],
    astronaut_jpeg: bytes,
) -> None:
    fusion, models = analyze_stack
    request = fusion_pb2.AnalyzeRequest(image=astronaut_jpeg, audio=espeak(TEXT), text=TEXT)
    response = await fusion.Analyze(request, timeout=60)
    assert [r.status for r in response.modalities] == [common_pb2.MODALITY_STATUS_OK] * 3

    recorded = spans.get_finished_spans()
    (root,) = [s for s in recorded if s.name == f"{FUSION}/Analyze"]
    assert root.kind == SpanKind.SERVER and root.parent is None
    assert {s.context.trace_id for s in recorded} == {root.context.trace_id}

    # One client span per modality call, children of fusion's server span ...
    clients = {
        attribute(s, RPC_SERVICE): s
        for s in recorded
        if s.kind == SpanKind.CLIENT
        and s.name
        in {
            f"{MODALITY_SERVICES['vision']}/AnalyzeImage",
            f"{MODALITY_SERVICES['audio']}/AnalyzeAudio",
            f"{MODALITY_SERVICES['text']}/AnalyzeText",
        }
    }
    assert set(clients) == set(MODALITY_SERVICES.values())
    assert {parent_id(s) for s in clients.values()} == {root.context.span_id}
    # ... each the parent of that service's server span ...
    servers = {s.name: s for s in recorded if s.kind == SpanKind.SERVER and s is not root}
    assert set(servers) == {client.name for client in clients.values()}
    for server in servers.values():
        assert parent_id(server) == clients[attribute(server, RPC_SERVICE)].context.span_id
        assert attribute(server, RPC_STATUS_CODE) == 0
    # ... which is the parent of its Triton calls.
    server_of = {s.context.span_id: name for name, s in servers.items()}
    triton = [s for s in recorded if s.name.startswith("triton infer ")]
    # Vision calls two models: the face detector (BlazeFace), then the expression model.
    models_by_service = {
        f"{MODALITY_SERVICES['vision']}/AnalyzeImage": {models.detector, models.vision},
        f"{MODALITY_SERVICES['audio']}/AnalyzeAudio": {models.audio},
        f"{MODALITY_SERVICES['text']}/AnalyzeText": {models.text},
    }
    assert {server_of[parent_id(s) or 0] for s in triton} == set(servers)
    called: dict[str, set[object]] = {name: set() for name in servers}
    for span in triton:
        called[server_of[parent_id(span) or 0]].add(attribute(span, TRITON_MODEL))
        assert attribute(span, OUTCOME) == "ok" and span.status.status_code == StatusCode.UNSET
        batch = attribute(span, TRITON_BATCH_SIZE)
        assert isinstance(batch, int) and batch >= 1
    assert called == models_by_service
    assert all(s.status.status_code != StatusCode.ERROR for s in recorded)


async def test_a_modality_that_is_down_shows_in_the_trace(spans: InMemorySpanExporter) -> None:
    """Nothing listens at the text address and only text is sent: Analyze is UNAVAILABLE (never OK
    without a fused result), and its trace says which call failed."""
    env = service_env("fusion", EMOMESH_FUSION_TEXT_ADDR=f"127.0.0.1:{free_port()}")
    async with serving(build_fusion(FusionSettings.from_env(env))) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await fusion_pb2_grpc.FusionServiceStub(channel).Analyze(fusion_pb2.AnalyzeRequest(text=TEXT), timeout=30)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    by_kind = {s.kind: s for s in spans.get_finished_spans()}
    client, server = by_kind[SpanKind.CLIENT], by_kind[SpanKind.SERVER]
    assert client.name == f"{MODALITY_SERVICES['text']}/AnalyzeText"
    assert client.status.status_code == StatusCode.ERROR
    assert attribute(client, RPC_STATUS_CODE) == grpc.StatusCode.UNAVAILABLE.value[0]
    assert parent_id(client) == server.context.span_id
    assert attribute(server, RPC_STATUS_CODE) == grpc.StatusCode.UNAVAILABLE.value[0]
    assert server.status.status_code == StatusCode.ERROR


async def test_a_chat_traces_its_llm_and_redis_calls(spans: InMemorySpanExporter, redis_server: RedisServer) -> None:
    """Chat (a streaming response) through the dialog service, with the local OpenAI-compatible
    endpoint and the real redis-server: the LLM and each Redis call are spans under Chat's."""
    llm = OpenAIStub().start()
    try:
        env = service_env(
            "dialog",
            EMOMESH_REDIS_URL=redis_server.url,
            EMOMESH_DIALOG_LLM_BASE_URL=llm.base_url,
            EMOMESH_DIALOG_LLM_API_KEY="test-key",
            EMOMESH_DIALOG_GRACE_S="0",
        )
        async with serving(build_dialog(DialogSettings.from_env(env))) as channel:
            request = dialog_pb2.ChatRequest(session_id=f"trace-{free_port()}", message="I got the job!")
            chunks = [chunk async for chunk in dialog_pb2_grpc.DialogServiceStub(channel).Chat(request, timeout=30)]
    finally:
        llm.stop()
    assert chunks[-1].WhichOneof("chunk") == "done" and not chunks[-1].done.fallback

    recorded = spans.get_finished_spans()
    (server,) = [s for s in recorded if s.kind == SpanKind.SERVER]
    assert server.name == "emotion.dialog.v1.DialogService/Chat" and attribute(server, RPC_STATUS_CODE) == 0
    clients = {s.name: s for s in recorded if s.kind == SpanKind.CLIENT}
    assert {"llm chat", "redis read", "redis write"} <= set(clients)
    for span in clients.values():
        assert parent_id(span) == server.context.span_id and span.status.status_code == StatusCode.UNSET
    llm_span = clients["llm chat"]
    assert attribute(llm_span, OUTCOME) == "ok"
    assert attribute(llm_span, GEN_AI_OUTPUT_TOKENS) == COMPLETION_TOKENS
    assert attribute(llm_span, GEN_AI_INPUT_TOKENS) == PROMPT_TOKENS
    assert attribute(clients["redis write"], DB_SYSTEM) == "redis"


# --- a service process exporting over OTLP ------------------------------------------------------------


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """The receiving end of OTLP/gRPC traces (what an OpenTelemetry Collector listens on at :4317)."""

    def __init__(self) -> None:
        self.received: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self.lock:
            self.received.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[str, trace_pb2.Span]]:
        """(service.name, span) of every span received."""
        out: list[tuple[str, trace_pb2.Span]] = []
        with self.lock:
            for request in self.received:
                for resource_spans in request.resource_spans:
                    names = [
                        a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"
                    ]
                    for scope_spans in resource_spans.scope_spans:
                        out.extend((names[0] if names else "", span) for span in scope_spans.spans)
        return out


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[OtlpReceiver, int]]:
    receiver = OtlpReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield receiver, port
    finally:
        server.stop(None)


def test_a_service_exports_over_otlp_and_flushes_on_stop(
    triton_server: TritonServer, otlp_receiver: tuple[OtlpReceiver, int], tmp_path: Path
) -> None:
    receiver, port = otlp_receiver
    env = {
        **os.environ,
        **service_env("text", triton_server),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        # Batches are sent every 10 minutes only: what arrives was flushed by the graceful stop.
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
        "PYTHONUNBUFFERED": "1",
    }
    for name in (
        "OTEL_SERVICE_NAME",
        "OTEL_TRACES_EXPORTER",
        "OTEL_SDK_DISABLED",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        env.pop(name, None)
    log_path = tmp_path / "text.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.text.server"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
    try:
        address = env["EMOMESH_TEXT_LISTEN"]
        wait_until(lambda: grpc_healthy(address), 120, "text service", process, log_path)
        upstream = (("traceparent", f"00-{UPSTREAM_TRACE_ID}-{UPSTREAM_SPAN_ID}-01"),)
        with grpc.insecure_channel(address) as channel:
            stub = text_pb2_grpc.TextServiceStub(channel)
            stub.AnalyzeText(text_pb2.AnalyzeTextRequest(text=TEXT), timeout=30, metadata=upstream)
            with pytest.raises(grpc.RpcError) as rejected:
                stub.AnalyzeText(text_pb2.AnalyzeTextRequest(text="  "), timeout=30, metadata=upstream)
        assert isinstance(rejected.value, grpc.Call) and rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert receiver.spans() == []
    finally:
        stop_process(process)
    assert process.returncode == 0

    exported = receiver.spans()
    assert {service for service, _ in exported} == {"emomesh-text"}
    servers = [s for _, s in exported if s.name == f"{MODALITY_SERVICES['text']}/AnalyzeText"]
    assert len(servers) == 2
    for server in servers:
        assert server.kind == trace_pb2.Span.SPAN_KIND_SERVER
        assert (server.trace_id.hex(), server.parent_span_id.hex()) == (UPSTREAM_TRACE_ID, UPSTREAM_SPAN_ID)
    (triton,) = [s for _, s in exported if s.name.startswith("triton infer ")]
    assert triton.parent_span_id in {server.span_id for server in servers}

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    (rejected_line,) = [line for line in lines if line["msg"] == "request rejected"]
    assert rejected_line["trace_id"] == UPSTREAM_TRACE_ID
    assert rejected_line["span_id"] in {server.span_id.hex() for server in servers}
