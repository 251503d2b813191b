"""Admission by request bytes in flight (emomesh.admission) through a real grpc.aio server built by
GrpcServer, with a fake vision servicer that holds its calls until the test lets them go."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from emomesh.admission import OVERLOADED_HEADER, InflightBytes
from emomesh.config import ServerSettings
from emomesh.errors import InvalidInput
from emomesh.server import GrpcServer
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from tests.conftest import service_env, serving

KiB = 1024
LIMIT = 300 * KiB
MAX_MESSAGE = 200 * KiB


@dataclass
class HoldingVision(vision_pb2_grpc.VisionServiceServicer):
    """AnalyzeImage waits until `release` is set (so its request stays in flight); an image of
    b"bad..." is refused as invalid input; AnalyzeVideoStream records the bytes held per chunk."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    held_per_chunk: list[int] = field(default_factory=list)
    inflight: InflightBytes | None = None

    async def AnalyzeImage(
        self, request: vision_pb2.AnalyzeImageRequest, context: grpc.aio.ServicerContext
    ) -> vision_pb2.AnalyzeImageResponse:
        if request.image.startswith(b"bad"):
            raise InvalidInput("image could not be read")
        await self.started.put(len(request.image))
        await self.release.wait()
        return vision_pb2.AnalyzeImageResponse(image_width=len(request.image))

    async def AnalyzeVideoStream(
        self, request_iterator: AsyncIterator[vision_pb2.VideoChunk], context: grpc.aio.ServicerContext
    ) -> vision_pb2.AnalyzeVideoResponse:
        assert self.inflight is not None
        async for _chunk in request_iterator:
            self.held_per_chunk.append(self.inflight.held)
        return vision_pb2.AnalyzeVideoResponse(frames_sampled=len(self.held_per_chunk))


@dataclass
class Running:
    servicer: HoldingVision
    server: GrpcServer
    vision: vision_pb2_grpc.VisionServiceStub
    channel: grpc.aio.Channel

    @property
    def inflight(self) -> InflightBytes:
        assert self.servicer.inflight is not None
        return self.servicer.inflight


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    env = service_env(
        "vision", EMOMESH_VISION_MAX_MESSAGE_BYTES=str(MAX_MESSAGE), EMOMESH_VISION_MAX_INFLIGHT_BYTES=str(LIMIT)
    )
    settings = ServerSettings.from_env("vision", 50051, env)
    servicer = HoldingVision()
    server = GrpcServer(
        "vision",
        settings,
        lambda s: vision_pb2_grpc.add_VisionServiceServicer_to_server(servicer, s),
        [vision_pb2.DESCRIPTOR.services_by_name["VisionService"].full_name],
    )
    servicer.inflight = server.inflight
    async with serving(server) as plain:
        await plain.close()
        options = [("grpc.max_send_message_length", 4 * MAX_MESSAGE)]
        async with grpc.aio.insecure_channel(server.address, options=options) as channel:
            yield Running(servicer, server, vision_pb2_grpc.VisionServiceStub(channel), channel)
        servicer.release.set()


def image(kib: int, prefix: bytes = b"") -> vision_pb2.AnalyzeImageRequest:
    return vision_pb2.AnalyzeImageRequest(image=prefix + b"\0" * (kib * KiB - len(prefix)))


async def test_request_bytes_are_held_while_the_call_runs_and_released_after(running: Running) -> None:
    call = running.vision.AnalyzeImage(image(100), timeout=30)
    await running.servicer.started.get()
    # The serialized request: the image plus its field tag and length.
    assert 100 * KiB < running.inflight.held < 100 * KiB + 16
    running.servicer.release.set()
    assert (await call).image_width == 100 * KiB
    assert running.inflight.held == 0


async def test_a_request_past_the_limit_is_refused_as_busy_until_the_others_finish(running: Running) -> None:
    first = running.vision.AnalyzeImage(image(150), timeout=30)
    second = running.vision.AnalyzeImage(image(140), timeout=30)
    await running.servicer.started.get()
    await running.servicer.started.get()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await running.vision.AnalyzeImage(image(20), timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = refused.value.details() or ""
    assert details.startswith("vision is busy: ") and f"the limit of {LIMIT}; retry with backoff" in details
    assert (OVERLOADED_HEADER, "1") in list(refused.value.trailing_metadata() or ())
    # Probes are never counted, so a full service still answers its health checks.
    health = health_pb2_grpc.HealthStub(running.channel)
    checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    running.servicer.release.set()
    await first
    await second
    assert running.inflight.held == 0
    assert (await running.vision.AnalyzeImage(image(20), timeout=30)).image_width == 20 * KiB


async def test_a_message_over_the_size_limit_is_refused_by_grpc_unread(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await running.vision.AnalyzeImage(image(MAX_MESSAGE // KiB + 1), timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (refused.value.details() or "")
    assert running.inflight.held == 0


async def test_errors_release_the_bytes_and_leave_no_garbage_cycle(running: Running) -> None:
    # context.abort() would leave the request in a reference cycle (AbortError -> traceback ->
    # frames -> request): the interceptor sets the status instead, so plain reference counting
    # frees the request as soon as the call ends.
    gc.collect()
    gc.disable()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await running.vision.AnalyzeImage(image(150, prefix=b"bad"), timeout=30)
        await asyncio.sleep(0.1)  # the server finishes the call after the client has its status
        garbage_before = len(gc.garbage)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        requests = [o for o in gc.garbage[garbage_before:] if isinstance(o, vision_pb2.AnalyzeImageRequest)]
        del gc.garbage[garbage_before:]
    finally:
        gc.set_debug(0)
        gc.enable()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "image could not be read"
    assert requests == []
    assert running.inflight.held == 0


async def test_client_streaming_holds_one_message_at_a_time(running: Running) -> None:
    async def chunks() -> AsyncIterator[vision_pb2.VideoChunk]:
        for _ in range(4):
            yield vision_pb2.VideoChunk(data=b"\0" * (100 * KiB))

    # 400 KiB in all, more than the limit: each chunk is released when the next one is read.
    response = await running.vision.AnalyzeVideoStream(chunks(), timeout=30)
    assert response.frames_sampled == 4
    assert all(100 * KiB < held < 100 * KiB + 16 for held in running.servicer.held_per_chunk)
    assert running.inflight.held == 0


def test_the_in_flight_limit_cannot_be_below_the_message_limit() -> None:
    from emomesh.config import ConfigError

    with pytest.raises(ConfigError, match="MAX_INFLIGHT_BYTES=2048 is below the message limit 4096"):
        ServerSettings.from_env(
            "vision", 50051, {"EMOMESH_VISION_MAX_MESSAGE_BYTES": "4096", "EMOMESH_VISION_MAX_INFLIGHT_BYTES": "2048"}
        )
