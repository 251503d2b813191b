"""The one shape every Emomesh server interceptor has: look up the call's handler, let probe calls
(health, reflection) through untouched, and wrap the others. Subclasses say which methods pass and
how a handler is wrapped; the observability, authentication and admission interceptors are three."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

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
