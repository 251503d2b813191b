"""The gateway's routes against fake fusion, dialog and vision services on real in-process gRPC servers:
what a browser sends arrives as the contract's message, what the services answer (or fail with) comes back
as the contract's JSON with the matching HTTP status, chat streams line by line, and the live stream is
bridged both ways and ends with a `closed` message."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from emomesh.procs import free_port
from emotion.common.v1 import common_pb2
from emotion.dialog.v1 import dialog_pb2, dialog_pb2_grpc
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.gateway.app import Gateway
from services.gateway.config import GatewaySettings

HAPPY = common_pb2.EmotionDistribution(
    probabilities=[0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.1], top=common_pb2.EMOTION_HAPPY, confidence=0.9
)


class FakeFusion(fusion_pb2_grpc.FusionServiceServicer):
    def __init__(self) -> None:
        self.requests: list[fusion_pb2.AnalyzeRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.stream_cancelled = asyncio.Event()
        self.stream_requests: list[fusion_pb2.StreamRequest] = []

    async def Analyze(
        self, request: fusion_pb2.AnalyzeRequest, context: grpc.aio.ServicerContext
    ) -> fusion_pb2.AnalyzeResponse:
        self.requests.append(request)
        self.metadata.append({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)})
        if request.text == "refuse":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "text: refused by the fake")
        if request.text == "slow":
            await asyncio.sleep(5)
        return fusion_pb2.AnalyzeResponse(fused=common_pb2.FusedEmotion(distribution=HAPPY), latency_ms=12.5)

    async def AnalyzeStream(
        self, request_iterator: AsyncIterator[fusion_pb2.StreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[fusion_pb2.StreamEvent]:
        try:
            async for request in request_iterator:
                self.stream_requests.append(request)
                kind = request.WhichOneof("message")
                if kind == "start":
                    yield fusion_pb2.StreamEvent(started=fusion_pb2.StreamStarted(max_fps=60))
                elif kind == "frame":
                    if request.frame.encoded == b"fail":
                        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "frames per second above 60")
                    box = vision_pb2.BoundingBox(x=1, y=2, width=30, height=40)
                    face = vision_pb2.Face(box=box, distribution=HAPPY)
                    yield fusion_pb2.StreamEvent(
                        faces=fusion_pb2.StreamFaces(
                            frame_index=len(self.stream_requests), timestamp_s=request.frame.timestamp_s, faces=[face]
                        )
                    )
                elif kind == "end":
                    break
            yield fusion_pb2.StreamEvent(stats=fusion_pb2.StreamStats(frames_received=2))
        except (asyncio.CancelledError, GeneratorExit):  # GeneratorExit: cancelled while at a `yield`
            self.stream_cancelled.set()
            raise


class FakeDialog(dialog_pb2_grpc.DialogServiceServicer):
    async def Greeting(
        self, request: dialog_pb2.GreetingRequest, context: grpc.aio.ServicerContext
    ) -> dialog_pb2.GreetingResponse:
        kind = dialog_pb2.PersonaKind.Name(request.persona.kind)
        return dialog_pb2.GreetingResponse(
            text=f"hello from {kind}", info=dialog_pb2.ReplyInfo(fallback=True, fallback_reason="no LLM")
        )

    async def Chat(
        self, request: dialog_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[dialog_pb2.ChatChunk]:
        if not request.message:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "message: empty")
        for word in ("I ", "hear ", "you."):
            yield dialog_pb2.ChatChunk(delta=word)
        if request.message == "break":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the LLM went away")
        yield dialog_pb2.ChatChunk(done=dialog_pb2.ReplyInfo(reply="I hear you.", model="fake"))


@dataclass
class Services:
    fusion: FakeFusion
    dialog: FakeDialog
    health: health.aio.HealthServicer
    addresses: dict[str, str]
    servers: list[grpc.aio.Server] = field(default_factory=list)


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    fusion, dialog, health_servicer = FakeFusion(), FakeDialog(), health.aio.HealthServicer()
    server = grpc.aio.server()
    fusion_pb2_grpc.add_FusionServiceServicer_to_server(fusion, server)
    dialog_pb2_grpc.add_DialogServiceServicer_to_server(dialog, server)
    vision_pb2_grpc.add_VisionServiceServicer_to_server(vision_pb2_grpc.VisionServiceServicer(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    # One server plays all three services; vision is the generated base class (UNIMPLEMENTED).
    yield Services(fusion, dialog, health_servicer, {"fusion": address, "dialog": address, "vision": address}, [server])
    await server.stop(None)


def settings_for(addresses: dict[str, str], **extra: str) -> GatewaySettings:
    environ = {f"EMOMESH_GATEWAY_{name.upper()}_ADDR": address for name, address in addresses.items()}
    environ |= {"EMOMESH_GATEWAY_READINESS_CACHE_S": "0", "EMOMESH_GATEWAY_CALL_TIMEOUT_S": "1"} | extra
    return GatewaySettings.from_env(environ)


@pytest.fixture
async def client(services: Services) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(Gateway(settings_for(services.addresses)).app())) as test_client:
        yield test_client


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- pages and probes --------------------------------------------------------------------------------


async def test_the_console_and_its_assets_are_served_with_a_strict_policy(client: TestClient[Any, Any]) -> None:
    page = await client.get("/")
    assert page.status == 200
    assert "<html" in (await page.text()).lower()
    assert page.headers["Cache-Control"] == "no-cache"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Permissions-Policy"] == "camera=(self), microphone=(self)"
    script = await client.get("/static/console.js")
    assert script.status == 200
    assert "javascript" in script.headers["Content-Type"]
    assert script.headers["Cache-Control"] == "no-cache"
    assert (await client.get("/static/../config.py")).status in (403, 404)


async def test_health_and_readiness_report_each_service(client: TestClient[Any, Any], services: Services) -> None:
    assert await (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert await ready.json() == {
        "ready": True,
        "services": {"fusion": "SERVING", "dialog": "SERVING", "vision": "SERVING"},
    }
    await services.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    not_ready = await client.get("/readyz")
    assert not_ready.status == 503
    assert (await not_ready.json())["services"]["dialog"] == "NOT_SERVING"


async def test_readiness_names_services_that_are_down_or_not_configured() -> None:
    down = f"127.0.0.1:{free_port()}"
    gateway = Gateway(settings_for({"fusion": down}))
    async with TestClient(TestServer(gateway.app())) as test_client:
        response = await test_client.get("/readyz")
        assert response.status == 503
        assert await response.json() == {
            "ready": False,
            "services": {"fusion": "UNAVAILABLE", "dialog": "NOT_CONFIGURED", "vision": "NOT_CONFIGURED"},
        }
        config = await (await test_client.get("/api/v1/config")).json()
        assert config["live"] is True
        assert config["personas"][0] == "PERSONA_KIND_DAILY_CHAT"
        assert "PERSONA_KIND_UNSPECIFIED" not in config["personas"]


# -- unary calls -------------------------------------------------------------------------------------


async def test_analyze_sends_the_bytes_and_answers_the_contracts_json(
    client: TestClient[Any, Any], services: Services
) -> None:
    body = {"image": base64.b64encode(b"\xff\xd8a-jpeg").decode(), "audio": "", "text": "hi", "speaker": "user"}
    response = await client.post("/api/v1/fusion/analyze", json=body, headers={"X-Request-Id": "req-from-page-1"})
    assert response.status == 200
    assert response.headers["X-Request-Id"] == "req-from-page-1"
    answer = await response.json()
    assert answer["fused"]["distribution"]["top"] == "EMOTION_HAPPY"
    assert answer["fused"]["distribution"]["probabilities"][3] == pytest.approx(0.9)
    assert answer["latency_ms"] == 12.5
    assert answer["modalities"] == []  # defaults are present
    sent = services.fusion.requests[-1]
    assert (sent.image, sent.text, sent.speaker) == (b"\xff\xd8a-jpeg", "hi", "user")
    # the request id travels on to the service, so its logs and the gateway's carry the same id
    assert services.fusion.metadata[-1]["x-request-id"] == "req-from-page-1"


async def test_a_refused_request_keeps_its_status_code_and_message(client: TestClient[Any, Any]) -> None:
    before = metric("emomesh_gateway_upstream_errors_total", method="Analyze", code="INVALID_ARGUMENT")
    response = await client.post("/api/v1/fusion/analyze", json={"text": "refuse"})
    assert response.status == 400
    assert await response.json() == {"error": {"code": "INVALID_ARGUMENT", "message": "text: refused by the fake"}}
    after = metric("emomesh_gateway_upstream_errors_total", method="Analyze", code="INVALID_ARGUMENT")
    assert after == before + 1
    assert metric("emomesh_gateway_http_requests_total", route="/api/v1/fusion/analyze", status="400") >= 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{broken", "not a valid AnalyzeRequest"),
        (b'{"image": "AA==", "unknown": 1}', 'no field named "unknown"'),
        (b"", "the body is empty"),
    ],
)
async def test_a_body_that_is_not_the_message_is_a_bad_request(
    client: TestClient[Any, Any], services: Services, body: bytes, message: str
) -> None:
    calls = len(services.fusion.requests)
    response = await client.post("/api/v1/fusion/analyze", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "BAD_REQUEST"
    assert message in error["message"]
    assert len(services.fusion.requests) == calls  # nothing reached the service


async def test_a_body_over_the_limit_is_refused_with_413(services: Services) -> None:
    gateway = Gateway(settings_for(services.addresses, EMOMESH_GATEWAY_MAX_BODY_BYTES="2048"))
    async with TestClient(TestServer(gateway.app())) as test_client:
        response = await test_client.post("/api/v1/fusion/analyze", json={"text": "x" * 4096})
        assert response.status == 413
        assert (await response.json())["error"] == {
            "code": "TOO_LARGE",
            "message": "the request body is larger than 2048 bytes",
        }
        # and the gateway keeps serving
        assert (await test_client.post("/api/v1/fusion/analyze", json={"text": "ok"})).status == 200


async def test_service_failures_map_to_http_statuses(services: Services) -> None:
    down = f"127.0.0.1:{free_port()}"
    gateway = Gateway(settings_for({"fusion": down, "dialog": services.addresses["dialog"]}))
    async with TestClient(TestServer(gateway.app())) as test_client:
        unavailable = await test_client.post("/api/v1/fusion/analyze", json={"text": "hi"})
        assert unavailable.status == 503
        error = (await unavailable.json())["error"]
        assert error["code"] == "UNAVAILABLE"
        # the page learns which service is down, not where it runs (a connection failure names the peer)
        assert error["message"].startswith("the fusion service is unavailable: failed to connect")
        assert "127.0.0.1" not in error["message"] and down.split(":")[1] not in error["message"]
        not_configured = await test_client.post("/api/v1/vision/analyze-image", json={"image": "AA=="})
        assert not_configured.status == 503
        assert (await not_configured.json())["error"] == {
            "code": "NOT_CONFIGURED",
            "message": "the gateway has no address for the vision service (EMOMESH_GATEWAY_VISION_ADDR)",
        }
        assert (await test_client.post("/api/v1/nothing-here", json={})).status == 404
        wrong_method = await test_client.get("/api/v1/fusion/analyze")
        assert wrong_method.status == 405
        assert (await wrong_method.json())["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_a_slow_service_is_cut_at_the_call_deadline(client: TestClient[Any, Any]) -> None:
    response = await client.post("/api/v1/fusion/analyze", json={"text": "slow"})
    assert response.status == 504
    assert (await response.json())["error"]["code"] == "DEADLINE_EXCEEDED"


async def test_unimplemented_methods_say_so(client: TestClient[Any, Any]) -> None:
    response = await client.post("/api/v1/vision/analyze-image", json={"image": "AA=="})
    assert response.status == 501


async def test_greeting_passes_the_persona(client: TestClient[Any, Any]) -> None:
    body = {"session_id": "s1", "persona": {"kind": "PERSONA_KIND_DEBATE"}}
    answer = await (await client.post("/api/v1/dialog/greeting", json=body)).json()
    assert answer["text"] == "hello from PERSONA_KIND_DEBATE"
    assert answer["info"]["fallback"] is True
    assert answer["info"]["fallback_reason"] == "no LLM"


# -- chat: NDJSON ------------------------------------------------------------------------------------


async def lines_of(response: Any) -> list[dict[str, Any]]:
    lines = []
    async for raw in response.content:
        if raw.strip():
            lines.append(json.loads(raw))
    return lines


async def test_chat_streams_one_chunk_per_line(client: TestClient[Any, Any]) -> None:
    response = await client.post("/api/v1/dialog/chat", json={"session_id": "s1", "message": "hello"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    lines = await lines_of(response)
    assert [line.get("delta") for line in lines[:3]] == ["I ", "hear ", "you."]
    assert lines[3]["done"]["reply"] == "I hear you."
    assert len(lines) == 4


async def test_chat_errors_before_the_reply_are_http_errors_and_later_ones_the_last_line(
    client: TestClient[Any, Any],
) -> None:
    refused = await client.post("/api/v1/dialog/chat", json={"session_id": "s1", "message": ""})
    assert refused.status == 400
    assert (await refused.json())["error"] == {"code": "INVALID_ARGUMENT", "message": "message: empty"}
    broken = await client.post("/api/v1/dialog/chat", json={"session_id": "s1", "message": "break"})
    assert broken.status == 200
    lines = await lines_of(broken)
    assert [line.get("delta") for line in lines[:3]] == ["I ", "hear ", "you."]
    error = {"code": "UNAVAILABLE", "message": "the dialog service is unavailable: the LLM went away"}
    assert lines[-1] == {"error": error}


# -- the live stream ---------------------------------------------------------------------------------


def frame(data: bytes, timestamp_s: float) -> dict[str, Any]:
    return {"frame": {"encoded": base64.b64encode(data).decode(), "timestamp_s": timestamp_s}}


async def events_until_closed(ws: Any) -> list[dict[str, Any]]:
    events = []
    async for message in ws:
        assert message.type == WSMsgType.TEXT
        events.append(json.loads(message.data))
        if "closed" in events[-1]:
            break
    return events


async def test_the_live_stream_is_bridged_both_ways_and_ends_with_its_status(
    client: TestClient[Any, Any], services: Services
) -> None:
    async with client.ws_connect("/api/v1/fusion/stream") as ws:
        await ws.send_json({"start": {"settings": {"transcribe": False}}})
        await ws.send_json(frame(b"jpeg-1", 0.1))
        await ws.send_json(frame(b"jpeg-2", 0.2))
        await ws.send_json({"end": {}})
        events = await events_until_closed(ws)
        assert ws.closed or (await ws.receive()).type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    kinds = [next(k for k in event if k != "time_s") for event in events]
    assert kinds == ["started", "faces", "faces", "stats", "closed"]
    assert events[1]["faces"]["timestamp_s"] == 0.1
    assert events[1]["faces"]["faces"][0]["box"] == {"x": 1, "y": 2, "width": 30, "height": 40}
    assert events[-1] == {"closed": {"code": "OK", "message": ""}}
    assert [r.frame.encoded for r in services.fusion.stream_requests if r.HasField("frame")] == [b"jpeg-1", b"jpeg-2"]


async def test_a_stream_the_service_ends_with_an_error_tells_the_page_why(client: TestClient[Any, Any]) -> None:
    async with client.ws_connect("/api/v1/fusion/stream") as ws:
        await ws.send_json({"start": {}})
        await ws.send_json(frame(b"fail", 0.1))
        events = await events_until_closed(ws)
    assert events[-1] == {"closed": {"code": "RESOURCE_EXHAUSTED", "message": "frames per second above 60"}}


@pytest.mark.parametrize(
    ("send", "message"),
    [
        ('{"frame": {"encoded": 5}}', "not a valid StreamRequest"),
        ("not json", "not a valid StreamRequest"),
        (b"\x00binary", "binary messages are not part of the protocol"),
    ],
)
async def test_a_message_that_is_not_a_stream_request_ends_the_stream_as_invalid(
    client: TestClient[Any, Any], services: Services, send: str | bytes, message: str
) -> None:
    async with client.ws_connect("/api/v1/fusion/stream") as ws:
        await ws.send_json({"start": {}})
        if isinstance(send, bytes):
            await ws.send_bytes(send)
        else:
            await ws.send_str(send)
        events = await events_until_closed(ws)
    assert events[-1]["closed"]["code"] == "INVALID_ARGUMENT"
    assert message in events[-1]["closed"]["message"]
    # the service's side of the stream is cancelled, not left running
    await asyncio.wait_for(services.fusion.stream_cancelled.wait(), 5)


async def test_a_page_that_leaves_cancels_its_stream(client: TestClient[Any, Any], services: Services) -> None:
    ws = await client.ws_connect("/api/v1/fusion/stream")
    await ws.send_json({"start": {}})
    assert "started" in json.loads((await ws.receive()).data)
    await ws.close()
    await asyncio.wait_for(services.fusion.stream_cancelled.wait(), 5)
    for _ in range(50):
        if metric("emomesh_gateway_websockets_active") == 0:
            break
        await asyncio.sleep(0.05)
    assert metric("emomesh_gateway_websockets_active") == 0


async def test_streams_over_the_limit_are_refused_and_the_first_keeps_going(services: Services) -> None:
    gateway = Gateway(settings_for(services.addresses, EMOMESH_GATEWAY_MAX_STREAMS="1"))
    async with (
        TestClient(TestServer(gateway.app())) as test_client,
        test_client.ws_connect("/api/v1/fusion/stream") as first,
    ):
        await first.send_json({"start": {}})
        assert "started" in json.loads((await first.receive()).data)
        async with test_client.ws_connect("/api/v1/fusion/stream") as second:
            refused = await events_until_closed(second)
        assert refused[-1]["closed"]["code"] == "RESOURCE_EXHAUSTED"
        assert "at most 1 live streams" in refused[-1]["closed"]["message"]
        await first.send_json(frame(b"jpeg", 0.5))
        assert "faces" in json.loads((await first.receive()).data)


async def test_shutdown_tells_open_streams_that_they_end(services: Services) -> None:
    gateway = Gateway(settings_for(services.addresses))
    server = TestServer(gateway.app())
    test_client: TestClient[Any, Any] = TestClient(server)
    await test_client.start_server()
    try:
        ws = await test_client.ws_connect("/api/v1/fusion/stream")
        await ws.send_json({"start": {}})
        await ws.receive()
        shutdown = asyncio.create_task(server.app.shutdown())
        events = await events_until_closed(ws)
        await shutdown
        assert events[-1] == {"closed": {"code": "UNAVAILABLE", "message": "the gateway is shutting down"}}
        assert (await gateway.readiness())["ready"] is False
    finally:
        await test_client.close()


async def test_bodies_in_progress_are_bounded_and_the_rest_refused_with_429(services: Services) -> None:
    gateway = Gateway(
        settings_for(
            services.addresses, EMOMESH_GATEWAY_MAX_BODY_BYTES="4096", EMOMESH_GATEWAY_MAX_INFLIGHT_BYTES="6000"
        )
    )
    padded = {"speaker": "x" * 3000}
    async with TestClient(TestServer(gateway.app())) as test_client:
        slow = asyncio.create_task(test_client.post("/api/v1/fusion/analyze", json={"text": "slow", **padded}))
        for _ in range(500):  # until the slow request's body is admitted
            if gateway.inflight.held:
                break
            await asyncio.sleep(0.01)
        refused = await test_client.post("/api/v1/fusion/analyze", json={"text": "hi", **padded})
        assert refused.status == 429
        error = (await refused.json())["error"]
        assert error["code"] == "RESOURCE_EXHAUSTED"
        assert "the gateway is busy" in error["message"]
        assert (await test_client.post("/api/v1/fusion/analyze", json={"text": "small"})).status == 200
        assert (await slow).status == 504  # the slow one ran to its deadline, unaffected
        assert gateway.inflight.held == 0
        assert (await test_client.post("/api/v1/fusion/analyze", json={"text": "hi", **padded})).status == 200


async def test_a_large_body_is_parsed_off_the_event_loop_and_arrives_whole(
    client: TestClient[Any, Any], services: Services
) -> None:
    image = bytes(range(256)) * 8192  # 2 MiB: above PARSE_IN_THREAD_BYTES once in base64
    body = io.BytesIO(json.dumps({"image": base64.b64encode(image).decode()}).encode())
    response = await client.post("/api/v1/fusion/analyze", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 200
    assert services.fusion.requests[-1].image == image
