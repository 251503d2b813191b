"""emomesh.tracing: the W3C trace context in and out of gRPC metadata, the server and client spans, the
settings, and trace ids in the JSON logs. Spans are recorded in memory (the `spans` fixture); the
RPC tests run a real grpc.aio server (GrpcServer with its interceptor) on a loopback port."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from emomesh.config import ConfigError, ServerSettings, TracingSettings
from emomesh.errors import InvalidInput
from emomesh.logs import REQUEST_ID_HEADER, JsonFormatter, outbound_metadata, reset_request_id, set_request_id
from emomesh.server import GrpcServer
from emomesh.tracing import (
    OUTCOME,
    RPC_METHOD,
    RPC_SERVICE,
    RPC_STATUS_CODE,
    RPC_SYSTEM,
    ServerCallSpan,
    client_interceptors,
    client_span,
    current_ids,
    end_client_span,
    extract_context,
    split_method,
    start_client_span,
    start_tracing,
    trace_metadata,
)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
ECHO_SERVICE = "test.tracing.v1.EchoService"


def by_name(recorded: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in recorded.get_finished_spans()}


# --- settings -----------------------------------------------------------------------------------------


def test_tracing_is_off_unless_asked_for() -> None:
    assert not TracingSettings.from_env({}).enabled
    assert not ServerSettings.from_env("text", 50053, {}).tracing.enabled


@pytest.mark.parametrize(
    ("environ", "exporter"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_TRACES_EXPORTER": "OTLP"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_TRACES_EXPORTER": "none"}, "none"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "true"}, "none"),
    ],
)
def test_exporter_follows_the_standard_variables(environ: dict[str, str], exporter: str) -> None:
    assert TracingSettings.from_env(environ).exporter == exporter


def test_service_name_and_endpoint_are_read() -> None:
    settings = ServerSettings.from_env(
        "vision",
        50051,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SERVICE_NAME": "vision-canary"},
    ).tracing
    assert settings == TracingSettings("otlp", "vision-canary", "http://collector:4317")


def test_unknown_exporter_fails_at_start() -> None:
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        TracingSettings.from_env({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_start_tracing_does_nothing_when_off() -> None:
    assert start_tracing("text", TracingSettings()) is None


def test_start_tracing_keeps_a_provider_already_installed(spans: InMemorySpanExporter) -> None:
    # The process's provider (the test's) stays: OpenTelemetry has one per process.
    assert start_tracing("text", TracingSettings("console")) is None
    with trace.get_tracer("test").start_as_current_span("still recorded"):
        pass
    assert [s.name for s in spans.get_finished_spans()] == ["still recorded"]


def test_off_nothing_is_recorded_injected_or_logged() -> None:
    """The default, in a fresh process (this one has a provider once any test used `spans`): even a
    caller's traceparent is neither joined nor passed on."""
    script = f"""
import grpc
from emomesh.tracing import ServerCallSpan, client_span, current_ids, trace_metadata, tracing_active
assert not tracing_active()
call = ServerCallSpan("/{ECHO_SERVICE}/Echo", [("traceparent", "{TRACEPARENT}")], "r")
with client_span("triton infer m", {{}}) as span:
    assert not span.is_recording() and trace_metadata() == () and current_ids() is None
call.end(grpc.StatusCode.INTERNAL)
print("untraced")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout.strip()) == (0, "untraced"), result.stderr


# --- propagation --------------------------------------------------------------------------------------


def test_outbound_metadata_carries_the_current_span(spans: InMemorySpanExporter) -> None:
    token = set_request_id("req-1")
    try:
        with trace.get_tracer("test").start_as_current_span("caller") as caller:
            metadata = dict(outbound_metadata())
    finally:
        reset_request_id(token)
    ids = caller.get_span_context()
    assert metadata[REQUEST_ID_HEADER] == "req-1"
    assert metadata["traceparent"] == f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"
    assert ids.trace_flags.sampled


def test_no_trace_context_is_sent_outside_a_span(spans: InMemorySpanExporter) -> None:
    assert trace_metadata() == ()
    assert [key for key, _ in outbound_metadata()] == [REQUEST_ID_HEADER]


def test_extract_reads_traceparent_and_tracestate() -> None:
    ctx = extract_context([("traceparent", TRACEPARENT), ("tracestate", "vendor=abc"), ("x-other", "1")])
    remote = trace.get_current_span(ctx).get_span_context()
    assert remote.is_valid and remote.is_remote and remote.trace_flags.sampled
    assert (f"{remote.trace_id:032x}", f"{remote.span_id:016x}") == (TRACE_ID, PARENT_SPAN_ID)
    assert remote.trace_state.get("vendor") == "abc"


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        [],
        [("traceparent", "00-not-a-trace-01")],
        [("traceparent", f"00-{'0' * 32}-{PARENT_SPAN_ID}-01")],  # the all-zero trace id is invalid
        [("traceparent-bin", b"\x00\x01")],
    ],
)
def test_missing_or_malformed_context_starts_a_new_trace(metadata: list[tuple[str, str | bytes]] | None) -> None:
    assert not trace.get_current_span(extract_context(metadata)).get_span_context().is_valid


def test_tracestate_is_passed_on(spans: InMemorySpanExporter) -> None:
    call = ServerCallSpan(f"/{ECHO_SERVICE}/Echo", [("traceparent", TRACEPARENT), ("tracestate", "vendor=abc")], "r")
    try:
        sent = dict(trace_metadata())
    finally:
        call.end(grpc.StatusCode.OK)
    assert sent["tracestate"] == "vendor=abc"
    assert sent["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert not sent["traceparent"].startswith(f"00-{TRACE_ID}-{PARENT_SPAN_ID}")


def test_a_callers_decision_not_to_sample_is_kept_and_passed_on(spans: InMemorySpanExporter) -> None:
    call = ServerCallSpan(f"/{ECHO_SERVICE}/Echo", [("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN_ID}-00")], "r")
    try:
        assert not call.span.is_recording()
        sent = dict(trace_metadata())
    finally:
        call.end(grpc.StatusCode.OK)
    assert sent["traceparent"].startswith(f"00-{TRACE_ID}-") and sent["traceparent"].endswith("-00")
    assert spans.get_finished_spans() == ()


def test_split_method() -> None:
    assert split_method("/emotion.vision.v1.VisionService/AnalyzeImage") == (
        "emotion.vision.v1.VisionService",
        "AnalyzeImage",
    )
    assert split_method(b"/a.B/C") == ("a.B", "C")


# --- spans --------------------------------------------------------------------------------------------


def test_server_span_joins_the_callers_trace(spans: InMemorySpanExporter) -> None:
    call = ServerCallSpan(f"/{ECHO_SERVICE}/Echo", [("traceparent", TRACEPARENT)], "req-7")
    assert current_ids() == (TRACE_ID, f"{call.span.get_span_context().span_id:016x}")
    call.end(grpc.StatusCode.OK)
    assert current_ids() is None
    (span,) = spans.get_finished_spans()
    assert span.name == f"{ECHO_SERVICE}/Echo" and span.kind == SpanKind.SERVER
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT_SPAN_ID
    assert dict(span.attributes or {}) == {
        RPC_SYSTEM: "grpc",
        RPC_SERVICE: ECHO_SERVICE,
        RPC_METHOD: "Echo",
        "emomesh.request_id": "req-7",
        RPC_STATUS_CODE: 0,
    }
    assert span.status.status_code == StatusCode.UNSET


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INTERNAL, StatusCode.ERROR),
        (grpc.StatusCode.UNAVAILABLE, StatusCode.ERROR),
        (grpc.StatusCode.DEADLINE_EXCEEDED, StatusCode.ERROR),
        (grpc.StatusCode.INVALID_ARGUMENT, StatusCode.UNSET),  # the caller's mistake, not the server's
        (grpc.StatusCode.NOT_FOUND, StatusCode.UNSET),
        (grpc.StatusCode.CANCELLED, StatusCode.UNSET),
        (13, StatusCode.ERROR),  # a numeric code, as a servicer context may report it
    ],
)
def test_server_span_status(spans: InMemorySpanExporter, code: grpc.StatusCode | int, status: StatusCode) -> None:
    ServerCallSpan(f"/{ECHO_SERVICE}/Echo", None, "r").end(code, "why")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == status
    assert (span.attributes or {})[RPC_STATUS_CODE] == (code if isinstance(code, int) else code.value[0])


def test_client_span_marks_an_exception_as_error(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ConnectionError), client_span("redis read", {"db.system": "redis"}):
        raise ConnectionError("refused")
    (span,) = spans.get_finished_spans()
    assert span.kind == SpanKind.CLIENT and span.status.status_code == StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


def test_cancelled_client_span_is_not_an_error(spans: InMemorySpanExporter) -> None:
    with pytest.raises(asyncio.CancelledError), client_span("redis read", {}):
        raise asyncio.CancelledError
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == StatusCode.UNSET


@pytest.mark.parametrize(("outcome", "status"), [("ok", StatusCode.UNSET), ("error", StatusCode.ERROR)])
def test_end_client_span_records_the_outcome(spans: InMemorySpanExporter, outcome: str, status: StatusCode) -> None:
    end_client_span(start_client_span("llm chat", {}), outcome, {"gen_ai.usage.output_tokens": 12})
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == status
    assert dict(span.attributes or {}) == {OUTCOME: outcome, "gen_ai.usage.output_tokens": 12}


# --- logs ---------------------------------------------------------------------------------------------


def test_log_lines_carry_the_trace_inside_a_span(spans: InMemorySpanExporter) -> None:
    formatter = JsonFormatter("text")
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    assert "trace_id" not in json.loads(formatter.format(record))
    with trace.get_tracer("test").start_as_current_span("work") as span:
        line = json.loads(formatter.format(record))
    ids = span.get_span_context()
    assert (line["trace_id"], line["span_id"]) == (f"{ids.trace_id:032x}", f"{ids.span_id:016x}")


# --- over a real gRPC call ----------------------------------------------------------------------------


# Set while an `b"hold"` echo waits, and when the server cancels it.
HOLDING = asyncio.Event()
RELEASED_BY_CANCEL = asyncio.Event()


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"hold":
        HOLDING.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            RELEASED_BY_CANCEL.set()
            raise
    if request == b"invalid":
        raise InvalidInput("not this")
    if request == b"crash":
        raise RuntimeError("boom")
    return request


@pytest.fixture
async def echo_channel() -> AsyncIterator[grpc.aio.Channel]:
    """A GrpcServer (with the shared interceptor) serving one echo method, and a channel to it opened
    the way fusion opens its channels to the modality services."""
    handler = grpc.method_handlers_generic_handler(ECHO_SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    settings = ServerSettings.from_env(
        "echo", 0, {"EMOMESH_ECHO_LISTEN": "127.0.0.1:0", "EMOMESH_ECHO_METRICS_PORT": "0"}
    )
    server = GrpcServer("echo", settings, lambda s: s.add_generic_rpc_handlers((handler,)), [ECHO_SERVICE])
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address, interceptors=client_interceptors(server.address)) as ch:
            yield ch
    finally:
        await server.stop()


async def call_echo(channel: grpc.aio.Channel, payload: bytes) -> bytes:
    method = channel.unary_unary(f"/{ECHO_SERVICE}/Echo")
    with trace.get_tracer("test").start_as_current_span("caller"):
        response: bytes = await method(payload, timeout=10, metadata=outbound_metadata())
    return response


async def test_client_and_server_spans_form_one_trace(
    spans: InMemorySpanExporter, echo_channel: grpc.aio.Channel
) -> None:
    assert await call_echo(echo_channel, b"hi") == b"hi"
    recorded = spans.get_finished_spans()
    caller, client, server = (
        next(s for s in recorded if s.kind == kind) for kind in (SpanKind.INTERNAL, SpanKind.CLIENT, SpanKind.SERVER)
    )
    assert len(recorded) == 3
    assert len({s.context.trace_id for s in recorded}) == 1
    assert client.parent is not None and client.parent.span_id == caller.context.span_id
    # The server's parent is the client span, not the caller: the interceptor replaced the caller's
    # traceparent (put there by outbound_metadata) with its own.
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    for span in (client, server):
        assert span.name == f"{ECHO_SERVICE}/Echo"
        assert (span.attributes or {})[RPC_STATUS_CODE] == 0
    address = (client.attributes or {})["server.address"]
    assert isinstance(address, str) and address.startswith("127.0.0.1:")


@pytest.mark.parametrize(
    ("payload", "code", "server_status"),
    [
        (b"invalid", grpc.StatusCode.INVALID_ARGUMENT, StatusCode.UNSET),
        (b"crash", grpc.StatusCode.INTERNAL, StatusCode.ERROR),
    ],
)
async def test_failed_calls_are_marked(
    spans: InMemorySpanExporter,
    echo_channel: grpc.aio.Channel,
    payload: bytes,
    code: grpc.StatusCode,
    server_status: StatusCode,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call_echo(echo_channel, payload)
    assert failure.value.code() == code
    spans_by_kind = {s.kind: s for s in spans.get_finished_spans()}
    client, server = spans_by_kind[SpanKind.CLIENT], spans_by_kind[SpanKind.SERVER]
    assert client.status.status_code == StatusCode.ERROR  # every non-OK code fails the client side
    assert server.status.status_code == server_status
    for span in (client, server):
        assert (span.attributes or {})[RPC_STATUS_CODE] == code.value[0]
    if code == grpc.StatusCode.INTERNAL:
        assert [event.name for event in server.events] == ["exception"]


async def test_cancelling_a_traced_call_cancels_it_on_the_server(
    spans: InMemorySpanExporter, echo_channel: grpc.aio.Channel
) -> None:
    HOLDING.clear()
    RELEASED_BY_CANCEL.clear()
    caller = asyncio.create_task(call_echo(echo_channel, b"hold"))
    await asyncio.wait_for(HOLDING.wait(), 5)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    # The interceptor waits on the call for its span; a caller that gives up must not leave the call
    # running on the server (a cancelled live stream's frames, fusion's deadline backstop).
    await asyncio.wait_for(RELEASED_BY_CANCEL.wait(), 5)
    client = next(s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT)
    assert client.status.status_code == StatusCode.ERROR
