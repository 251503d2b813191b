"""Admission by request bytes in flight, shared by every service.

Each service holds at most `max_inflight_bytes` of request messages at once. A request is counted
when gRPC hands over its serialized bytes, before they are parsed into a message, copied out of it
or decoded: a request that would pass the ceiling is refused there with RESOURCE_EXHAUSTED ("vision
is busy"), and costs nothing beyond the bytes gRPC already received. The bytes are released when the
call ends (for client-streaming calls, when the servicer asks for the next message). Health and
reflection calls are never counted.

This bounds what the service does with requests (a parsed message, the `bytes` a servicer reads out
of it, decoded pixels or samples are each about one more copy per request byte). What gRPC buffers
while messages arrive is bounded by the message size limit (`EMOMESH_<SVC>_MAX_MESSAGE_BYTES`,
enforced from the length prefix before the message is read) times the calls arriving at once; see
docs/operations.md ("Memory") for the arithmetic behind each service's limits.

Refusals carry the trailing metadata key OVERLOADED_HEADER, so a caller (fusion) can tell "busy,
retry" from "this input is too large", which share the status code."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from emomesh.errors import Overloaded
from emomesh.interceptors import HandlerInterceptor
from emomesh.memory import HeapTrimmer
from emomesh.metrics import ADMISSION_REFUSED, INFLIGHT_REQUEST_BYTES

log = logging.getLogger(__name__)

# Trailing metadata on a refusal for load: "1". Callers treat such a RESOURCE_EXHAUSTED as
# "unavailable, retry later", not as a bad input.
OVERLOADED_HEADER = "x-emomesh-overloaded"


class InflightBytes:
    """Request bytes held by the calls in progress, with a ceiling. Used from the event loop thread
    only (grpc.aio deserializes and runs handlers there), so it needs no lock."""

    def __init__(self, service: str, limit: int) -> None:
        self.service = service
        self.limit = limit
        self.held = 0
        self._gauge = INFLIGHT_REQUEST_BYTES.labels(service)

    def try_hold(self, nbytes: int) -> bool:
        if self.held + nbytes > self.limit:
            return False
        self.held += nbytes
        self._gauge.set(self.held)
        return True

    def release(self, nbytes: int) -> None:
        self.held -= nbytes
        self._gauge.set(self.held)


@dataclass(frozen=True)
class _Admitted:
    request: Any
    nbytes: int


@dataclass(frozen=True)
class _Refused:
    nbytes: int


class AdmissionInterceptor(HandlerInterceptor):
    """Counts every request message against the service's InflightBytes before it is parsed, and
    refuses the call (Overloaded) when it would not fit. Put it after ObservabilityInterceptor, so
    refusals are logged, counted and carry the request id like any other status."""

    def __init__(self, inflight: InflightBytes, trimmer: HeapTrimmer | None = None) -> None:
        self.inflight = inflight
        self.trimmer = trimmer

    def wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        full_method: str = details.method
        method = full_method.rsplit("/", 1)[-1]
        deserialize = self._deserializer(handler.request_deserializer)
        serialize = handler.response_serializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(self._unary(method, handler.unary_unary), deserialize, serialize)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_streaming(method, handler.unary_stream), deserialize, serialize
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._streamed(method, handler.stream_unary), deserialize, serialize
            )
        return grpc.stream_stream_rpc_method_handler(
            self._streamed_streaming(method, handler.stream_stream), deserialize, serialize
        )

    def _deserializer(self, inner: Callable[[bytes], Any] | None) -> Callable[[bytes], _Admitted | _Refused]:
        inflight = self.inflight

        def deserialize(raw: bytes) -> _Admitted | _Refused:
            # grpc.aio calls this in the event loop right after the message arrived, with no await
            # between it and the handler receiving the result: a hold is never left behind.
            nbytes = len(raw)
            if not inflight.try_hold(nbytes):
                return _Refused(nbytes)
            try:
                return _Admitted(inner(raw) if inner is not None else raw, nbytes)
            except BaseException:
                inflight.release(nbytes)
                raise

        return deserialize

    def _refusal(self, method: str, refused: _Refused, context: grpc.aio.ServicerContext) -> Overloaded:
        """The error to raise for a refused message; marks the call's trailers as overloaded."""
        ADMISSION_REFUSED.labels(self.inflight.service, method).inc()
        context.set_trailing_metadata((*(context.trailing_metadata() or ()), (OVERLOADED_HEADER, "1")))
        self._done(refused.nbytes)
        return Overloaded(
            f"{self.inflight.service} is busy: {self.inflight.held} request bytes in progress, this request "
            f"({refused.nbytes} bytes) would pass the limit of {self.inflight.limit}; retry with backoff"
        )

    def _done(self, nbytes: int) -> None:
        if self.trimmer is not None and nbytes:
            self.trimmer.request_done(nbytes)

    def _unary(self, method: str, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def admitted(message: _Admitted | _Refused, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(message, _Refused):
                raise self._refusal(method, message, context)
            try:
                return await inner(message.request, context)
            finally:
                self.inflight.release(message.nbytes)
                self._done(message.nbytes)

        return admitted

    def _unary_streaming(
        self, method: str, inner: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def admitted(message: _Admitted | _Refused, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(message, _Refused):
                raise self._refusal(method, message, context)
            try:
                async for item in inner(message.request, context):
                    yield item
            finally:
                self.inflight.release(message.nbytes)
                self._done(message.nbytes)

        return admitted

    async def _requests(
        self, method: str, messages: AsyncIterator[_Admitted | _Refused], context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[Any, None]:
        """The client's messages, each held until the servicer asks for the next one."""
        held = 0
        try:
            async for message in messages:
                self.inflight.release(held)
                self._done(held)
                held = 0
                if isinstance(message, _Refused):
                    raise self._refusal(method, message, context)
                held = message.nbytes
                yield message.request
        finally:
            self.inflight.release(held)
            self._done(held)

    def _streamed(self, method: str, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def admitted(messages: AsyncIterator[_Admitted | _Refused], context: grpc.aio.ServicerContext) -> Any:
            requests = self._requests(method, messages, context)
            try:
                return await inner(requests, context)
            finally:
                await requests.aclose()

        return admitted

    def _streamed_streaming(
        self, method: str, inner: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def admitted(
            messages: AsyncIterator[_Admitted | _Refused], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            requests = self._requests(method, messages, context)
            try:
                async for item in inner(requests, context):
                    yield item
            finally:
                await requests.aclose()

        return admitted
