"""OpenTelemetry tracing shared by every service: a server span per RPC (opened by the interceptor in
emomesh.server), a client span per outbound gRPC call (fusion's calls to the modality services) and per
Triton inference, with the W3C trace context (`traceparent`, `tracestate`) carried in gRPC metadata,
and trace/span ids in the JSON logs.

Off by default, and then nearly free: until `start_tracing` (or a test) installs the SDK's
TracerProvider, every helper here returns at once (no span, no context parsed or injected, nothing
exported), at the cost of one check of the API's global provider. `start_tracing` is called by
GrpcServer.start when TracingSettings (the standard OTEL_* variables, see emomesh.config) ask for an
exporter, and its provider is flushed and shut down by GrpcServer.stop. A process holds one provider
(the API's global one): in tests several services run in one process and share it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import Token
from typing import Any

import grpc
from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from emomesh.config import TracingSettings
from emomesh.interceptors import PROBE_METHOD_PREFIXES

log = logging.getLogger(__name__)

TRACER_NAME = "emomesh"

# Attribute names (OpenTelemetry semantic conventions where there is one, `emomesh.*` otherwise).
RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
RPC_STATUS_CODE = "rpc.grpc.status_code"
SERVER_ADDRESS = "server.address"
REQUEST_ID = "emomesh.request_id"
TRITON_MODEL = "emomesh.triton.model"
TRITON_BATCH_SIZE = "emomesh.triton.batch_size"
OUTCOME = "emomesh.outcome"
DB_SYSTEM = "db.system"
DB_OPERATION = "db.operation.name"
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"

# Codes that make a SERVER span an error: the service failed, not the caller (as the semantic
# conventions say, and the same split as the dashboards' server error ratio). A CLIENT span is an
# error for every code but OK.
SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

# A proxy: spans come from whatever provider is global when they start (none: the no-op tracer).
_tracer = trace.get_tracer(TRACER_NAME)

Metadata = Sequence[tuple[str, str | bytes]]


# Set once a provider is installed (there is no uninstalling one). A flag, not a look at the API's
# global provider, because that look reads os.environ: microseconds on every call of an untraced service.
_installed = False


def install_tracer_provider(provider: trace.TracerProvider) -> bool:
    """Makes provider the process's global one and turns the helpers here on. False (and nothing
    changes) when the process already has one: OpenTelemetry allows one per process."""
    global _installed
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return False
    trace.set_tracer_provider(provider)
    _installed = trace.get_tracer_provider() is provider
    return _installed


def tracing_active() -> bool:
    """Whether spans are recorded (subject to sampling); without a provider they could only be no-ops."""
    return _installed


# --- propagation ------------------------------------------------------------------------------------


# The context travels as the global propagator writes it: OTEL_PROPAGATORS, by default the W3C trace
# context (`traceparent`, `tracestate`) and W3C baggage.


def extract_context(metadata: Metadata | None) -> context.Context:
    """The trace context a caller sent in gRPC metadata (an empty context when it sent none)."""
    carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
    return propagate.extract(carrier)


def trace_headers(ctx: context.Context | None = None) -> dict[str, str]:
    """The trace context of ctx (default: the current one) as headers; empty when no span is recording."""
    carrier: dict[str, str] = {}
    if tracing_active():
        propagate.inject(carrier, context=ctx)
    return carrier


def trace_metadata(ctx: context.Context | None = None) -> tuple[tuple[str, str], ...]:
    """trace_headers as gRPC metadata pairs."""
    return tuple(trace_headers(ctx).items())


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span in W3C hex form, or None outside a recorded trace."""
    if not _installed:
        return None
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return trace.format_trace_id(span_context.trace_id), trace.format_span_id(span_context.span_id)


def split_method(full_method: str | bytes) -> tuple[str, str]:
    """'/emotion.vision.v1.VisionService/AnalyzeImage' -> ('emotion.vision.v1.VisionService', 'AnalyzeImage')."""
    name = full_method.decode() if isinstance(full_method, bytes) else full_method
    service, _, method = name.lstrip("/").rpartition("/")
    return service, method


# --- spans ------------------------------------------------------------------------------------------


class ServerCallSpan:
    """The server span of one RPC, parented on the caller's trace context, current while the handler
    runs (so Triton calls, outbound calls and log lines join it). Used by emomesh.server's _CallScope."""

    def __init__(self, full_method: str, metadata: Metadata | None, request_id: str) -> None:
        self.span: Span = trace.INVALID_SPAN
        self._token: Token[context.Context] | None = None
        if not tracing_active():
            return
        service, method = split_method(full_method)
        self.span = _tracer.start_span(
            f"{service}/{method}",
            context=extract_context(metadata),
            kind=SpanKind.SERVER,
            attributes={RPC_SYSTEM: "grpc", RPC_SERVICE: service, RPC_METHOD: method, REQUEST_ID: request_id},
        )
        self._token = context.attach(trace.set_span_in_context(self.span))

    def record_exception(self, exc: BaseException) -> None:
        self.span.record_exception(exc)

    def end(self, code: grpc.StatusCode | int, message: str = "") -> None:
        if self._token is None:
            return
        status = code if isinstance(code, grpc.StatusCode) else _STATUS_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
        self.span.set_attribute(RPC_STATUS_CODE, status.value[0])
        if status in SERVER_ERROR_CODES:
            self.span.set_status(Status(StatusCode.ERROR, message or status.name))
        context.detach(self._token)
        self.span.end()


# What client_span gives when tracing is off: no span, no generator to run.
_NO_SPAN: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)


def client_span(
    name: str, attributes: dict[str, AttributeValue], *, make_current: bool = True
) -> AbstractContextManager[Span]:
    """A CLIENT span around an outbound call: an exception marks it ERROR (and is recorded) on its way
    out; cancellation (BaseException) only ends it. make_current=False for async generators, whose
    steps may run in different contexts (the span is then still parented on the current one)."""
    return _client_span(name, attributes, make_current) if _installed else _NO_SPAN


@contextmanager
def _client_span(name: str, attributes: dict[str, AttributeValue], make_current: bool) -> Iterator[Span]:
    span = _tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
    token = context.attach(trace.set_span_in_context(span)) if make_current else None
    try:
        yield span
    except Exception as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        if token is not None:
            context.detach(token)
        span.end()


def start_client_span(name: str, attributes: dict[str, AttributeValue]) -> Span:
    """A CLIENT span that is not made current, for calls whose code cannot wrap a `with` around them
    (an async generator that yields while the call runs); end it with end_client_span."""
    return _tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


def end_client_span(span: Span, outcome: str, attributes: dict[str, AttributeValue] | None = None) -> None:
    """Ends a span of start_client_span: its outcome (ERROR unless "ok" or "cancelled") and last attributes."""
    span.set_attribute(OUTCOME, outcome)
    if attributes:
        span.set_attributes(attributes)
    if outcome not in ("ok", "cancelled"):
        span.set_status(Status(StatusCode.ERROR, outcome))
    span.end()


def triton_span(model: str, batch_size: int) -> AbstractContextManager[Span]:
    """The CLIENT span of one Triton inference (current, so trace_headers() names it)."""
    return client_span(
        f"triton infer {model}",
        {
            RPC_SYSTEM: "grpc",
            RPC_SERVICE: "inference.GRPCInferenceService",
            RPC_METHOD: "ModelInfer",
            TRITON_MODEL: model,
            TRITON_BATCH_SIZE: batch_size,
        },
    )


# Health checks and reflection are not traced, on either side: readiness polls every second and would
# bury the traces of real requests.
UNTRACED_METHOD_PREFIXES = PROBE_METHOD_PREFIXES


class TracingClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """One CLIENT span per unary call on a channel, its context written into the call's metadata in
    place of the caller's, so that the server's span is its child. Fusion puts one on each modality
    channel: a slow Analyze shows which modality call was slow."""

    def __init__(self, target: str) -> None:
        self.target = target

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> grpc.aio.UnaryUnaryCall:
        full_method = client_call_details.method
        full_method = full_method.decode() if isinstance(full_method, bytes) else full_method
        if not tracing_active() or full_method.startswith(UNTRACED_METHOD_PREFIXES):
            return await continuation(client_call_details, request)
        service, method = split_method(client_call_details.method)
        span = _tracer.start_span(
            f"{service}/{method}",
            kind=SpanKind.CLIENT,
            attributes={RPC_SYSTEM: "grpc", RPC_SERVICE: service, RPC_METHOD: method, SERVER_ADDRESS: self.target},
        )
        headers = trace_headers(trace.set_span_in_context(span))
        # The caller's context (outbound_metadata's) is replaced, not sent twice.
        replaced = propagate.get_global_textmap().fields
        metadata = [(k, v) for k, v in client_call_details.metadata or () if k not in replaced]
        details = grpc.aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            grpc.aio.Metadata(*metadata, *headers.items()),
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        try:
            call = await continuation(details, request)
            try:
                # Waits for the call to finish (without raising) so the span covers the whole call.
                code = await call.code()
            except asyncio.CancelledError:
                # The caller gave up (a cancelled stream, fusion's deadline backstop): so does the call,
                # instead of running on in the server with nobody waiting for it.
                call.cancel()
                span.set_status(Status(StatusCode.ERROR, "CANCELLED: the caller gave up"))
                raise
            span.set_attribute(RPC_STATUS_CODE, code.value[0])
            if code != grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, f"{code.name}: {await call.details()}"))
            return call
        finally:
            span.end()


def client_interceptors(target: str) -> list[grpc.aio.ClientInterceptor]:
    """What a channel to another Emomesh service is opened with."""
    return [TracingClientInterceptor(target)]


# --- set-up -----------------------------------------------------------------------------------------


def start_tracing(service: str, settings: TracingSettings) -> Callable[[], None] | None:
    """Installs the SDK's TracerProvider for this process (service.name emomesh-<service> unless
    OTEL_SERVICE_NAME says otherwise) with a batching exporter. Returns its shutdown (which flushes),
    or None when tracing is off or this process already has a provider."""
    if not settings.enabled:
        return None
    if tracing_active():
        log.info("tracing already set up in this process", extra={"fields": {"service": service}})
        return None
    # Imported here: a service without tracing never loads the SDK or the exporter.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    service_name = settings.service_name or f"emomesh-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if not install_tracer_provider(provider):
        log.warning("another tracer provider is installed; not tracing", extra={"fields": {"service": service}})
        provider.shutdown()
        return None
    log.info(
        "tracing on",
        extra={"fields": {"exporter": settings.exporter, "endpoint": settings.endpoint, "service_name": service_name}},
    )
    return provider.shutdown
