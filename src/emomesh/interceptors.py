"""The one shape every Emomesh server interceptor has: look up the call's handler, let probe calls
(health, reflection) through untouched, and wrap the others. Subclasses say which methods pass and
how a handler is wrapped; the observability, authentication and admission interceptors are three."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

# A handler's behavior: (request or request iterator, context) -> response, or an async generator of
# responses for streamed replies.
Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]
_HANDLER_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
)

# Health checks and reflection: polled by probes and tools, not requests to measure, trace or count.
PROBE_METHOD_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that replaces the handler of every call whose method does not start
    with one of `passthrough_prefixes`."""

    passthrough_prefixes: tuple[str, ...] = PROBE_METHOD_PREFIXES

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        full_method: str = handler_call_details.method
        if handler is None or full_method.startswith(self.passthrough_prefixes):
            return handler
        return self.wrap(handler, handler_call_details)

    def wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        """The handler that serves the call instead of `handler`."""
        raise NotImplementedError


def rewrap_handler(
    handler: grpc.RpcMethodHandler,
    single: Callable[[Behavior], Behavior],
    streaming: Callable[[Behavior], Behavior],
) -> grpc.RpcMethodHandler:
    """The same handler with its behavior replaced: `single` for one-response calls (unary and
    client-streaming), `streaming` (an async generator function) for streamed responses; the
    request side and the serializers are kept."""
    for attribute, make, streams in _HANDLER_KINDS:
        behavior = getattr(handler, attribute)
        if behavior is not None:
            wrapped = streaming(behavior) if streams else single(behavior)
            return make(wrapped, handler.request_deserializer, handler.response_serializer)
    return handler
