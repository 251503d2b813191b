"""FusionService: Fuse is the pure late fusion (services.fusion.fuse); Analyze is the fan-out
(services.fusion.orchestrator); AnalyzeStream is the live session (services.fusion.stream). Thin on
purpose."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from services.fusion.fuse import FusionConfig, fuse
from services.fusion.metrics import FUSED_MODALITIES, FUSION_CONFLICTS
from services.fusion.orchestrator import Orchestrator
from services.fusion.stream import StreamHub


class FusionServicer(fusion_pb2_grpc.FusionServiceServicer):
    def __init__(self, fusion: FusionConfig, orchestrator: Orchestrator, streams: StreamHub) -> None:
        self.fusion = fusion
        self.orchestrator = orchestrator
        self.streams = streams

    async def Fuse(self, request: fusion_pb2.FuseRequest, context: grpc.aio.ServicerContext) -> fusion_pb2.FuseResponse:
        fused = fuse(request.results, self.fusion)
        FUSED_MODALITIES.observe(len(fused.weights))
        if fused.conflict:
            FUSION_CONFLICTS.inc()
        return fusion_pb2.FuseResponse(fused=fused)

    async def Analyze(
        self, request: fusion_pb2.AnalyzeRequest, context: grpc.aio.ServicerContext
    ) -> fusion_pb2.AnalyzeResponse:
        # time_remaining() is None when the caller set no deadline; the configured cap applies then.
        return await self.orchestrator.analyze(request, context.time_remaining())

    async def AnalyzeStream(
        self, request_iterator: AsyncIterator[fusion_pb2.StreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[fusion_pb2.StreamEvent]:
        # Closed with this generator: a caller that stops reading ends the stream's work here.
        async with aclosing(self.streams.run(request_iterator, context.time_remaining())) as events:
            async for event in events:
                yield event
