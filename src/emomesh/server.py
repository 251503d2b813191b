"""gRPC server bootstrap shared by every service: grpc.aio with health, reflection, request ids,
metrics, error-to-status mapping and graceful shutdown on SIGTERM/SIGINT."""

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
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from emomesh.admission import AdmissionInterceptor, InflightBytes
from emomesh.config import ServerSettings
from emomesh.errors import EmomeshError
from emomesh.logs import REQUEST_ID_HEADER, new_request_id, reset_request_id, set_request_id
from emomesh.memory import HeapTrimmer
from emomesh.metrics import RPC_IN_FLIGHT, RPC_LATENCY, start_metrics_server
from emomesh.redact import scrub_addresses

log = logging.getLogger(__name__)


def grpc_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """Channel/server options: message size limits on both directions and keepalive that survives
    idle load balancers."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def _request_id_from(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= 64:
            return value
    return new_request_id()


class _CallScope:
    """What the interceptor does around one call: request id, in-flight gauge, latency histogram,
    and turning exceptions into statuses."""

    def __init__(self, service: str, method: str, context: grpc.aio.ServicerContext) -> None:
        self.service, self.method, self.context = service, method, context
        self.code = grpc.StatusCode.OK

    def __enter__(self) -> _CallScope:
        self.request_id = _request_id_from(self.context)
        self.token = set_request_id(self.request_id)
        self.context.set_trailing_metadata(((REQUEST_ID_HEADER, self.request_id),))
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
            self.code = exc.code
            log.info(
                "request rejected",
                extra={"fields": {"method": self.method, "code": exc.code.name, "reason": exc.message}},
            )
            # Messages may quote a dependency's error; the caller never sees internal addresses.
            details = scrub_addresses(exc.message)
        else:
            self.code = grpc.StatusCode.INTERNAL
            log.exception("unhandled error", extra={"fields": {"method": self.method}})
            details = f"internal error (request id {self.request_id})"
        self.context.set_code(self.code)
        self.context.set_details(details)

    def __exit__(self, *exc_info: object) -> None:
        code = self.code.name if isinstance(self.code, grpc.StatusCode) else str(self.code)
        RPC_LATENCY.labels(self.service, self.method, code).observe(time.perf_counter() - self.start)
        RPC_IN_FLIGHT.labels(self.service, self.method).dec()
        reset_request_id(self.token)


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler in a _CallScope. Health and reflection calls are passed through so
    that probes do not drown the service's own metrics."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        full_method: str = handler_call_details.method
        if handler is None or full_method.startswith(("/grpc.health.", "/grpc.reflection.")):
            return handler
        method = full_method.rsplit("/", 1)[-1]
        service = self.service

        # Single-response calls (unary and client-streaming) share one wrapper, streaming-response
        # calls (server- and bidi-streaming) another; the request side is passed through untouched.
        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def single_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with _CallScope(service, method, context) as scope:
                    try:
                        return await inner(request, context)
                    except BaseException as exc:
                        await scope.fail(exc)

            make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            return make(single_response, handler.request_deserializer, handler.response_serializer)

        inner_stream = handler.unary_stream or handler.stream_stream

        async def streaming_response(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with _CallScope(service, method, context) as scope:
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except BaseException as exc:
                    await scope.fail(exc)

        make_stream = (
            grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        )
        return make_stream(streaming_response, handler.request_deserializer, handler.response_serializer)


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
    """A running Emomesh gRPC server. `start()` then `stop()`; `serve_forever()` for a main()."""

    def __init__(
        self,
        name: str,
        settings: ServerSettings,
        register: Callable[[grpc.aio.Server], None],
        service_full_names: Sequence[str],
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.on_stop = on_stop
        self.trimmer = HeapTrimmer()
        self._trimming: asyncio.Task[None] | None = None
        self.inflight = InflightBytes(name, settings.max_inflight_bytes)
        self.server = grpc.aio.server(
            options=grpc_options(settings.max_message_bytes),
            # Observability outermost: admission refusals are logged and counted like any status.
            interceptors=[ObservabilityInterceptor(name), AdmissionInterceptor(self.inflight, self.trimmer)],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
        )
        register(self.server)
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_full_names = list(service_full_names)
        reflection.enable_server_reflection(
            [
                *self.service_full_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self.port = self.server.add_insecure_port(settings.listen)
        if self.port == 0:
            raise OSError(f"{name}: cannot listen on {settings.listen}")

    @property
    def address(self) -> str:
        host = self.settings.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        start_metrics_server(self.settings.metrics_port)
        self._trimming = asyncio.create_task(self.trimmer.run(), name=f"{self.name}-heap-trim")
        await self.server.start()
        for service in ["", *self.service_full_names]:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"fields": {"address": self.address, "metrics_port": self.settings.metrics_port}})

    async def stop(self) -> None:
        # Probes see NOT_SERVING first, so load balancers stop sending before connections close.
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.grace_s)
        if self._trimming is not None:
            self._trimming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trimming
            self.trimmer.cancel()
        if self.on_stop is not None:
            await self.on_stop()
        log.info("stopped")

    async def serve_forever(self) -> None:
        await self.start()
        sig = await wait_for_signal()
        log.info("shutting down", extra={"fields": {"signal": sig.name}})
        await self.stop()
