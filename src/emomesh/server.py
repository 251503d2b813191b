"""gRPC server bootstrap shared by every service: grpc.aio with health, reflection, request ids,
metrics, a trace span per call, error-to-status mapping and graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from emomesh.admission import AdmissionInterceptor, InflightBytes
from emomesh.config import ServerSettings, listen_host
from emomesh.errors import EmomeshError
from emomesh.interceptors import Behavior, HandlerInterceptor, rewrap_handler
from emomesh.logs import REQUEST_ID_HEADER, new_request_id, reset_request_id, set_request_id
from emomesh.memory import HeapTrimmer
from emomesh.metrics import RPC_IN_FLIGHT, RPC_LATENCY, start_metrics_server
from emomesh.readiness import HealthReporter, ReadinessCheck
from emomesh.redact import scrub_addresses
from emomesh.security import bind, server_interceptors
from emomesh.tracing import ServerCallSpan, start_tracing

log = logging.getLogger(__name__)


# Every channel made with grpc_options pings its server this often, also while a call waits for its answer
# with no data moving (a minute-long Analyze, a quiet live stream), so that idle load balancers keep the
# connection. A gRPC server takes a ping that comes sooner than its min_ping_interval_without_data (5 min by
# default) as a strike and, after two, sends GOAWAY "too_many_pings", which ends every call on the
# connection as UNAVAILABLE. The servers here accept such pings up to three times as often as these
# clients send them.
KEEPALIVE_TIME_MS = 30_000
MIN_PING_INTERVAL_MS = 10_000


def grpc_options(max_message_bytes: int, keepalive_time_ms: int = KEEPALIVE_TIME_MS) -> list[tuple[str, Any]]:
    """Channel options: message size limits on both directions and keepalive that survives idle load
    balancers."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", keepalive_time_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def server_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """Server options: grpc_options (the server pings its clients too, to find dead ones) and a ping
    policy that lets clients ping as grpc_options makes them, with or without calls in flight."""
    return [
        *grpc_options(max_message_bytes),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
    ]


def _request_id_from(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= 64:
            return value
    return new_request_id()


class _CallScope:
    """What the interceptor does around one call: request id, server span, in-flight gauge, latency
    histogram, and turning exceptions into statuses."""

    def __init__(self, service: str, full_method: str, context: grpc.aio.ServicerContext) -> None:
        self.service, self.full_method, self.context = service, full_method, context
        self.method = full_method.rsplit("/", 1)[-1]
        self.code = grpc.StatusCode.OK
        self.message = ""

    def __enter__(self) -> _CallScope:
        self.request_id = _request_id_from(self.context)
        self.token = set_request_id(self.request_id)
        self.context.set_trailing_metadata(((REQUEST_ID_HEADER, self.request_id),))
        self.span = ServerCallSpan(self.full_method, self.context.invocation_metadata(), self.request_id)
        RPC_IN_FLIGHT.labels(self.service, self.method).inc()
        self.start = time.perf_counter()
        return self

    async def fail(self, exc: BaseException) -> None:
        """Ends the call with the status that exc stands for; re-raises cancellation and aborts.

        The status is set on the context and the handler returns, instead of context.abort(): the
        AbortError that abort() raises stays on grpc's call state with a traceback whose frames hold
        the request (its serialized bytes and the parsed message), a reference cycle that only a full
        garbage collection frees. Every refused 20 MB image stayed in memory that way."""
        if isinstance(exc, asyncio.CancelledError):
            self.code = grpc.StatusCode.CANCELLED
            raise exc
        if isinstance(exc, grpc.aio.AbortError):
            # The servicer aborted by itself; its code is already on the context.
            self.code = self.context.code() or grpc.StatusCode.UNKNOWN
            raise exc
        if isinstance(exc, EmomeshError):
            self.code, self.message = exc.code, exc.message
            log.info(
                "request rejected",
                extra={"fields": {"method": self.method, "code": exc.code.name, "reason": exc.message}},
            )
            # Messages may quote a dependency's error; the caller never sees internal addresses.
            details = scrub_addresses(exc.message)
        else:
            self.code = grpc.StatusCode.INTERNAL
            self.span.record_exception(exc)
            log.exception("unhandled error", extra={"fields": {"method": self.method}})
            details = f"internal error (request id {self.request_id})"
        self.context.set_code(self.code)
        self.context.set_details(details)

    def __exit__(self, *exc_info: object) -> None:
        code = self.code.name if isinstance(self.code, grpc.StatusCode) else str(self.code)
        RPC_LATENCY.labels(self.service, self.method, code).observe(time.perf_counter() - self.start)
        RPC_IN_FLIGHT.labels(self.service, self.method).dec()
        self.span.end(self.code, self.message)
        reset_request_id(self.token)


# How long a failed client-streaming call keeps reading (and dropping) what the caller still sends.
DRAIN_LIMIT_S = 2.0


async def drain_requests(requests: AsyncIterator[Any], limit_s: float = DRAIN_LIMIT_S) -> None:
    """Reads and drops the rest of a client-streaming call that failed early (an upload refused at
    the chunk that passed its limit), for at most limit_s. A client still sending when the server
    ends the call can see grpc.aio's "Internal error from Core" instead of the status; once the
    upload is read to its end, it gets the status. The drop keeps memory flat."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(limit_s):
            async for _ in requests:
                pass


class ObservabilityInterceptor(HandlerInterceptor):
    """Wraps every handler in a _CallScope. Health and reflection calls are passed through so
    that probes do not drown the service's own metrics and traces."""

    def __init__(self, service: str) -> None:
        self.service = service

    def wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        full_method: str = details.method
        service = self.service

        # The request side is passed through untouched; a client-streaming call that fails drains
        # the rest of its upload (drain_requests).
        client_streaming = handler.stream_unary is not None

        def single(inner: Behavior) -> Behavior:
            async def single_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with _CallScope(service, full_method, context) as scope:
                    try:
                        return await inner(request, context)
                    except BaseException as exc:
                        await scope.fail(exc)
                        if client_streaming:
                            await drain_requests(request)

            return single_response

        def streaming(inner: Behavior) -> Behavior:
            async def streaming_response(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                with _CallScope(service, full_method, context) as scope:
                    try:
                        async for item in inner(request, context):
                            yield item
                    except BaseException as exc:
                        await scope.fail(exc)

            return streaming_response

        return rewrap_handler(handler, single, streaming)


async def wait_for_signal(signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)) -> signal.Signals:
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await received
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


class GrpcServer:
    """A running Emomesh gRPC server. `start()` then `stop()`; `serve_forever()` for a main().

    Health (emomesh.readiness): "liveness" is SERVING while the server runs; "" and the service's
    names follow `readiness` (checked every settings.readiness_interval_s), or are SERVING from
    start to stop when it is None."""

    def __init__(
        self,
        name: str,
        settings: ServerSettings,
        register: Callable[[grpc.aio.Server], None],
        service_full_names: Sequence[str],
        on_stop: Callable[[], Awaitable[None]] | None = None,
        readiness: ReadinessCheck | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.on_stop = on_stop
        self.stop_tracing: Callable[[], None] | None = None
        self.trimmer = HeapTrimmer()
        self._trimming: asyncio.Task[None] | None = None
        self.inflight = InflightBytes(name, settings.max_inflight_bytes)
        # Observability outermost: calls refused by authentication or admission are counted and
        # logged like any status; authentication before admission, so strangers hold no budget.
        self.server = grpc.aio.server(
            options=server_options(settings.max_message_bytes),
            interceptors=[
                ObservabilityInterceptor(name),
                *server_interceptors(settings.auth),
                AdmissionInterceptor(self.inflight, self.trimmer),
            ],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
        )
        register(self.server)
        self.service_full_names = list(service_full_names)
        self.health = HealthReporter(self.service_full_names, readiness, settings.readiness_interval_s)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.server)
        reflection.enable_server_reflection(
            [
                *self.service_full_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self.port = bind(self.server, settings.listen, settings.tls)
        if self.port == 0:
            raise OSError(f"{name}: cannot listen on {settings.listen}")
        self.health_server: grpc.aio.Server | None = None
        if settings.health_port:
            # The same HealthServicer on a plaintext port of its own: probes see the same status.
            self.health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.health_server)
            host = listen_host(settings.listen)
            health_address = f"[{host}]:{settings.health_port}" if ":" in host else f"{host}:{settings.health_port}"
            if self.health_server.add_insecure_port(health_address) == 0:
                raise OSError(f"{name}: cannot listen on {health_address} (health)")

    @property
    def address(self) -> str:
        host = self.settings.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        start_metrics_server(self.settings.metrics_port, self.settings.metrics_host)
        self.stop_tracing = start_tracing(self.name, self.settings.tracing)
        # Readiness first: the port must not answer SERVING before the first check has run.
        await self.health.start()
        self._trimming = asyncio.create_task(self.trimmer.run(), name=f"{self.name}-heap-trim")
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        tls = self.settings.tls
        fields = {
            "address": self.address,
            "metrics": f"{self.settings.metrics_host}:{self.settings.metrics_port}",
            "tls": "off" if tls is None else "mutual" if tls.mutual else "on",
            "auth": "off" if self.settings.auth is None else "bearer tokens",
        }
        log.info("serving", extra={"fields": fields})

    async def stop(self) -> None:
        # Probes see NOT_SERVING first, so load balancers stop sending before connections close.
        await self.health.stop()
        await self.server.stop(self.settings.grace_s)
        if self.health_server is not None:
            await self.health_server.stop(0)
        if self._trimming is not None:
            self._trimming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trimming
            self.trimmer.cancel()
        if self.on_stop is not None:
            await self.on_stop()
        if self.stop_tracing is not None:
            # Flushes the spans still batched (the exporter's own timeout bounds it); off the loop.
            await asyncio.to_thread(self.stop_tracing)
        log.info("stopped")

    async def serve_forever(self) -> None:
        await self.start()
        sig = await wait_for_signal()
        log.info("shutting down", extra={"fields": {"signal": sig.name}})
        await self.stop()
