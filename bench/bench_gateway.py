"""The console gateway (services/gateway): what the HTTP + WebSocket bridge costs a browser compared with
calling the gRPC services directly, side by side in one run, and the gateway's memory under large requests.

    python -m bench.bench_gateway --calls 40 --seconds 10 --out runs/bench/gateway.json

Starts an ephemeral embedded stack (tritonserver, redis-server, every service and the gateway, no LLM key)
unless --gateway URL --fusion ADDR --vision ADDR --dialog ADDR point at a running one (then the memory
row needs --gateway-pid, and the handler column --gateway-metrics). Every row but the live ones
alternates the two paths call by call (direct, gateway, direct, gateway, ...) after a few warm-up calls of
each, so a busy machine (a CI run on the same CPUs) slows both alike; times are client-side wall times
per call. The gRPC client uses one channel per service, the HTTP client one aiohttp session (keep-alive),
both reused for every call. Rows:

- `round trip (health)`: the floor of each protocol: grpc.health Check on the vision service vs GET
  /healthz, which the gateway answers itself (no upstream call);
- `AnalyzeImage`: samples/astronaut.jpg through VisionService.AnalyzeImage vs POST
  /api/v1/vision/analyze-image with {"image": base64} (face detection + expression model behind both);
- `Greeting`: DialogService.Greeting vs POST /api/v1/dialog/greeting, without an LLM key (the offline
  fallback: the reply costs nothing, so the row is transport, JSON and Redis);
- `Chat first delta` / `Chat end`: DialogService.Chat's stream vs POST /api/v1/dialog/chat read as NDJSON
  lines, time to the first delta and to the end of the reply (offline fallback; the request carries its
  emotion, so the text service is not asked);
- `live faces`: the live stream as the console uses it, 8 frames/s of a 640x480 JPEG of the astronaut for
  --seconds: FusionService.AnalyzeStream vs the WebSocket /api/v1/fusion/stream (JSON messages, frames as
  base64). Face-lane latency = frame sent -> its `faces` event (matched by the frame's timestamp_s). The
  two streams run one after the other (direct first, never at once), so this row is not interleaved;
- `live faces, transport only`: the same frames, each less the fusion service's own latency_ms for it
  (its `faces` event): what is left is the way to fusion and back, which the gateway changes, without the
  face lane's own variation between the two streams.

Per row: p50 / p95 of each path, and the gateway's overhead as the difference of the p50s and their ratio
(the JSON also has the median of the paired differences). `handler mean` is the gateway's own view, from
its latency histogram (emomesh_gateway_http_latency_seconds): the mean time from a request's arrival to its
response, i.e. translation plus the gateway's own gRPC call (for Chat, to the reply's end); the rest of
the overhead is HTTP between the page and the gateway. `translate` is what the gateway's JSON <-> protobuf
translation of one call costs (parse the request JSON, write each response message as JSON; timed in this
process with the gateway's own functions): the part of the overhead that is encoding, not the extra hop.

Memory: the gateway's resident set (VmRSS of /proc/PID/status) at rest, its peak while 4 POSTs of a ~20 MB
body to /api/v1/fusion/analyze are in flight at once (a valid AnalyzeRequest JSON whose "audio" is base64
of 15 MB of random bytes: fusion refuses it as bad audio, but the gateway has to read, parse and forward
it first), sampled every 20 ms, and 1 s and 5 s after they finished. `x each body` = (peak - rest) /
(4 x body): how many copies of a request body the gateway holds while it forwards it. Alongside: how
long those POSTs took against the same 4 requests sent straight to fusion, how long parsing one body's
JSON takes (the gateway does it in a worker thread above 1 MiB, services.gateway.app.PARSE_IN_THREAD_BYTES, so
its event loop stays free), and GET /healthz every 50 ms meanwhile (how long the gateway keeps its other
clients, live streams included, waiting). With the default EMOMESH_GATEWAY_MAX_INFLIGHT_BYTES (64 MiB) only
three of the four bodies are admitted at once; the fourth gets 429."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import grpc
import numpy as np
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import write_results
from bench.reliability_memory import Sampler, status_kib
from emomesh.paths import PROJECT_ROOT
from emomesh.security import open_aio_channel
from emomesh.server import grpc_options
from emomesh.stack import Stack, StackConfig
from emotion.common.v1 import common_pb2
from emotion.dialog.v1 import dialog_pb2, dialog_pb2_grpc
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.gateway.translate import dumps, parse

IMAGE = PROJECT_ROOT / "samples" / "astronaut.jpg"
WIDTH, HEIGHT = 640, 480
FPS = 8.0
WARMUP = 3
MiB = 1 << 20
# The large request of the memory row: base64 of 15 MB of random bytes (~20 MB of JSON), four at once.
BIG_AUDIO_BYTES = 15_000_000
BIG_REQUESTS = 4
RSS_INTERVAL_S = 0.02
# Calls of the in-process translation timing (median).
TRANSLATE_REPEATS = 30
# Chat's emotion, sent with the request so the dialog service does not ask the text service.
HAPPY = dialog_pb2.EmotionContext(
    fused=common_pb2.FusedEmotion(
        distribution=common_pb2.EmotionDistribution(
            probabilities=[0.02, 0.01, 0.02, 0.85, 0.03, 0.03, 0.04], top=common_pb2.EMOTION_HAPPY, confidence=0.85
        )
    )
)
CHAT_MESSAGE = "I finally finished the project today and it works."


def camera_jpeg() -> bytes:
    """samples/astronaut.jpg (512x512) scaled to 480x480 and centred on a gray 640x480 frame: a webcam-sized
    JPEG, encoded once."""
    picture = cv2.imread(str(IMAGE))
    if picture is None:
        raise SystemExit(f"{IMAGE} could not be read")
    canvas = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    left = (WIDTH - HEIGHT) // 2
    canvas[:, left : left + HEIGHT] = cv2.resize(picture, (HEIGHT, HEIGHT), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise SystemExit("the camera frame could not be encoded as JPEG")
    return encoded.tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def ms(values: list[float]) -> list[float]:
    return [v * 1000 for v in values]


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def compare(name: str, direct_ms: list[float], gateway_ms: list[float], **extra: Any) -> dict[str, Any]:
    """One row: each path's p50 / p95, and the gateway's overhead (p50 difference, p50 ratio, and the median
    of the paired differences, call i of each path having run back to back)."""
    d50, g50 = pct(direct_ms, 50), pct(gateway_ms, 50)
    # Call i of each path ran back to back; not so for the live rows, whose streams ran one after the other.
    paired = [] if extra.get("sequential") else [g - d for d, g in zip(direct_ms, gateway_ms, strict=False)]
    return {
        "row": name,
        "direct_n": len(direct_ms),
        "gateway_n": len(gateway_ms),
        "direct_p50_ms": d50,
        "direct_p95_ms": pct(direct_ms, 95),
        "gateway_p50_ms": g50,
        "gateway_p95_ms": pct(gateway_ms, 95),
        "overhead_p50_ms": round(g50 - d50, 2) if d50 is not None and g50 is not None else None,
        "ratio_p50": round(g50 / d50, 2) if d50 and g50 is not None else None,
        "overhead_paired_median_ms": round(statistics.median(paired), 2) if paired else None,
        **extra,
    }


def translate_ms(request_json: str, request_type: type[Message], responses: list[Message]) -> float:
    """The gateway's translation of one call, in this process with its own functions: parse the request's JSON,
    write each response message as JSON (median of TRANSLATE_REPEATS, milliseconds)."""
    times = []
    for _ in range(TRANSLATE_REPEATS):
        start = time.perf_counter()
        parse(request_json, request_type)
        for response in responses:
            dumps(response)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


async def interleaved(
    direct: Callable[[], Awaitable[list[float]]],
    gateway: Callable[[], Awaitable[list[float]]],
    calls: int,
    warmup: int = WARMUP,
) -> tuple[list[list[float]], list[list[float]]]:
    """direct, gateway, direct, gateway, ... after `warmup` calls of each; each call returns its timings
    (seconds): one for a unary call, several for a stream (first delta, end)."""
    for _ in range(warmup):
        await direct()
        await gateway()
    direct_times, gateway_times = [], []
    for _ in range(calls):
        direct_times.append(await direct())
        gateway_times.append(await gateway())
    return direct_times, gateway_times


async def http_json(session: aiohttp.ClientSession, url: str, body: str) -> dict[str, Any]:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        data: dict[str, Any] = await response.json(content_type=None)
        if response.status != 200:
            raise RuntimeError(f"POST {url}: HTTP {response.status}: {data}")
        return data


@dataclass
class Endpoints:
    gateway: str  # http://host:port, no trailing slash
    fusion: str
    vision: str
    dialog: str
    gateway_pid: int | None
    # The gateway's Prometheus metrics: the time its handler took per route (None: not reported).
    gateway_metrics: str | None


@dataclass
class Clients:
    session: aiohttp.ClientSession
    vision: Any
    dialog: Any
    fusion: Any
    channels: list[grpc.aio.Channel]


# -- the gateway's own view: its handler's time per route -------------------------------------------------

HANDLER_HISTOGRAM = "emomesh_gateway_http_latency_seconds"


async def handler_totals(session: aiohttp.ClientSession, metrics_url: str | None, route: str) -> tuple[float, float]:
    """(seconds, requests) the gateway's handler of `route` has spent so far, from its latency histogram."""
    total = count = 0.0
    if metrics_url is None:
        return total, count
    async with session.get(metrics_url) as response:
        text = await response.text()
    for line in text.splitlines():
        if f'route="{route}"' in line:
            if line.startswith(f"{HANDLER_HISTOGRAM}_sum"):
                total = float(line.rsplit(" ", 1)[1])
            elif line.startswith(f"{HANDLER_HISTOGRAM}_count"):
                count = float(line.rsplit(" ", 1)[1])
    return total, count


async def with_handler_time(
    c: Clients, metrics_url: str | None, route: str, rows: Awaitable[list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The rows, the last one with the mean time the gateway's handler of `route` took meanwhile (from the
    request's arrival to its response: translation plus the gateway's own gRPC call; warm-ups included)."""
    before = await handler_totals(c.session, metrics_url, route)
    result = await rows
    after = await handler_totals(c.session, metrics_url, route)
    if after[1] > before[1]:
        result[-1]["handler_mean_ms"] = round((after[0] - before[0]) / (after[1] - before[1]) * 1000, 2)
    return result


# -- unary rows ----------------------------------------------------------------------------------------


async def round_trip_row(c: Clients, gateway: str, calls: int) -> list[dict[str, Any]]:
    """The floor of each protocol: grpc.health Check on the vision service vs GET /healthz, which the gateway
    answers itself (no upstream call)."""
    health = health_pb2_grpc.HealthStub(c.channels[0])
    request = health_pb2.HealthCheckRequest(service="")

    async def direct() -> list[float]:
        start = time.perf_counter()
        await health.Check(request, timeout=10)
        return [time.perf_counter() - start]

    async def via_gateway() -> list[float]:
        start = time.perf_counter()
        async with c.session.get(f"{gateway}/healthz") as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET /healthz: HTTP {response.status}")
        return [time.perf_counter() - start]

    d, g = await interleaved(direct, via_gateway, calls)
    return [compare("round trip (health)", ms([t[0] for t in d]), ms([t[0] for t in g]))]


async def analyze_image_row(c: Clients, gateway: str, calls: int) -> list[dict[str, Any]]:
    image = IMAGE.read_bytes()
    request = vision_pb2.AnalyzeImageRequest(image=image)
    body = json.dumps({"image": b64(image)})
    faces: dict[str, int] = {}
    last: list[Message] = []

    async def direct() -> list[float]:
        start = time.perf_counter()
        response = await c.vision.AnalyzeImage(request, timeout=30)
        elapsed = time.perf_counter() - start
        faces["direct"] = len(response.faces)
        last[:] = [response]
        return [elapsed]

    async def via_gateway() -> list[float]:
        start = time.perf_counter()
        data = await http_json(c.session, f"{gateway}/api/v1/vision/analyze-image", body)
        elapsed = time.perf_counter() - start
        faces["gateway"] = len(data.get("faces", []))
        return [elapsed]

    d, g = await interleaved(direct, via_gateway, calls)
    row = compare(
        "AnalyzeImage",
        ms([t[0] for t in d]),
        ms([t[0] for t in g]),
        translate_ms=translate_ms(body, vision_pb2.AnalyzeImageRequest, last),
        request_json_bytes=len(body),
        faces=faces,
    )
    return [row]


async def greeting_row(c: Clients, gateway: str, calls: int) -> list[dict[str, Any]]:
    counter = iter(range(1 << 30))
    fallback: dict[str, bool] = {}
    last: list[Message] = []
    persona = {"kind": "PERSONA_KIND_DAILY_CHAT"}

    async def direct() -> list[float]:
        request = dialog_pb2.GreetingRequest(
            session_id=f"bench-greet-d{next(counter)}",
            persona=dialog_pb2.Persona(kind=dialog_pb2.PERSONA_KIND_DAILY_CHAT),
        )
        start = time.perf_counter()
        response = await c.dialog.Greeting(request, timeout=30)
        elapsed = time.perf_counter() - start
        fallback["direct"] = response.info.fallback
        last[:] = [response]
        return [elapsed]

    async def via_gateway() -> list[float]:
        body = json.dumps({"session_id": f"bench-greet-g{next(counter)}", "persona": persona})
        start = time.perf_counter()
        data = await http_json(c.session, f"{gateway}/api/v1/dialog/greeting", body)
        elapsed = time.perf_counter() - start
        fallback["gateway"] = bool(data["info"]["fallback"])
        return [elapsed]

    d, g = await interleaved(direct, via_gateway, calls)
    sample = json.dumps({"session_id": "bench-greet-x", "persona": persona})
    row = compare(
        "Greeting",
        ms([t[0] for t in d]),
        ms([t[0] for t in g]),
        translate_ms=translate_ms(sample, dialog_pb2.GreetingRequest, last),
        fallback=fallback,
    )
    return [row]


async def chat_rows(c: Clients, gateway: str, calls: int) -> list[dict[str, Any]]:
    counter = iter(range(1 << 30))
    emotion = json.loads(dumps(HAPPY))
    fallback: dict[str, bool] = {}
    chunks: list[Message] = []

    async def direct() -> list[float]:
        request = dialog_pb2.ChatRequest(session_id=f"bench-chat-d{next(counter)}", message=CHAT_MESSAGE, emotion=HAPPY)
        start = time.perf_counter()
        first: float | None = None
        received: list[Message] = []
        async for chunk in c.dialog.Chat(request, timeout=60):
            received.append(chunk)
            if first is None and chunk.WhichOneof("chunk") == "delta":
                first = time.perf_counter() - start
            if chunk.WhichOneof("chunk") == "done":
                fallback["direct"] = chunk.done.fallback
        end = time.perf_counter() - start
        chunks[:] = received
        return [first if first is not None else end, end]

    async def via_gateway() -> list[float]:
        body = json.dumps({"session_id": f"bench-chat-g{next(counter)}", "message": CHAT_MESSAGE, "emotion": emotion})
        start = time.perf_counter()
        first: float | None = None
        headers = {"Content-Type": "application/json"}
        async with c.session.post(f"{gateway}/api/v1/dialog/chat", data=body, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"POST /api/v1/dialog/chat: HTTP {response.status}: {await response.text()}")
            async for line in response.content:
                if not line.strip():
                    continue
                chunk = json.loads(line)
                if "error" in chunk:
                    raise RuntimeError(f"chat stream failed: {chunk['error']}")
                if first is None and "delta" in chunk:
                    first = time.perf_counter() - start
                if "done" in chunk:
                    fallback["gateway"] = bool(chunk["done"]["fallback"])
        end = time.perf_counter() - start
        return [first if first is not None else end, end]

    d, g = await interleaved(direct, via_gateway, calls)
    sample = json.dumps({"session_id": "bench-chat-x", "message": CHAT_MESSAGE, "emotion": emotion})
    translation = translate_ms(sample, dialog_pb2.ChatRequest, chunks)
    return [
        compare("Chat first delta", ms([t[0] for t in d]), ms([t[0] for t in g]), fallback=fallback),
        compare(
            "Chat end",
            ms([t[1] for t in d]),
            ms([t[1] for t in g]),
            translate_ms=translation,
            chunks=len(chunks),
            fallback=fallback,
        ),
    ]


# -- the live stream -----------------------------------------------------------------------------------


@dataclass
class StreamProbe:
    """One live stream's frames, on the client's clock: when each was sent (by timestamp_s) and how long
    its faces took to come back."""

    sent: dict[float, float] = field(default_factory=dict)
    latency_s: list[float] = field(default_factory=list)
    service_latency_ms: list[float] = field(default_factory=list)
    events: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    closed: str = ""
    last_faces: Message | None = None

    def transport_ms(self) -> list[float]:
        """Each frame's latency less the fusion service's own latency_ms for it: the way there and back."""
        return [s * 1000 - service for s, service in zip(self.latency_s, self.service_latency_ms, strict=True)]

    def sending(self, timestamp_s: float) -> None:
        self.sent[round(timestamp_s, 6)] = time.perf_counter()

    def faces(self, timestamp_s: float, latency_ms: float) -> None:
        sent = self.sent.get(round(timestamp_s, 6))
        if sent is not None:
            self.latency_s.append(time.perf_counter() - sent)
            self.service_latency_ms.append(latency_ms)


STATS_FIELDS = ("frames_received", "frames_analysed", "frames_dropped", "frames_failed", "events_dropped")


async def paced(seconds: float, send: Callable[[float], Awaitable[None]]) -> None:
    """send(timestamp_s) for each frame at FPS, on time (a late frame goes at once, the next keeps the beat)."""
    start = time.perf_counter()
    for index in range(int(seconds * FPS)):
        at = index / FPS
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(at)


async def direct_stream(c: Clients, frame: bytes, seconds: float) -> StreamProbe:
    probe = StreamProbe()
    call = c.fusion.AnalyzeStream(timeout=seconds + 60)

    async def read() -> None:
        while True:
            event = await call.read()
            if event is grpc.aio.EOF:
                return
            probe.events += 1
            kind = event.WhichOneof("event")
            if kind == "faces":
                probe.faces(event.faces.timestamp_s, event.faces.latency_ms)
                probe.last_faces = event
            elif kind == "stats":
                probe.stats = {name: getattr(event.stats, name) for name in STATS_FIELDS}

    reader = asyncio.create_task(read())

    async def send(at: float) -> None:
        probe.sending(at)
        await call.write(fusion_pb2.StreamRequest(frame=fusion_pb2.StreamFrame(encoded=frame, timestamp_s=at)))

    settings = fusion_pb2.StreamSettings(transcribe=False)
    await call.write(fusion_pb2.StreamRequest(start=fusion_pb2.StreamStart(settings=settings)))
    await paced(seconds, send)
    await call.write(fusion_pb2.StreamRequest(end=fusion_pb2.StreamEnd()))
    await call.done_writing()
    await reader
    probe.closed = (await call.code()).name
    return probe


async def gateway_stream(c: Clients, gateway: str, frame: bytes, seconds: float) -> StreamProbe:
    probe = StreamProbe()
    encoded = b64(frame)
    url = "ws" + gateway.removeprefix("http") + "/api/v1/fusion/stream"
    async with c.session.ws_connect(url, max_msg_size=16 * MiB) as ws:

        async def read() -> None:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                probe.events += 1
                event = json.loads(message.data)
                if "faces" in event:
                    probe.faces(float(event["faces"]["timestamp_s"]), float(event["faces"]["latency_ms"]))
                elif "stats" in event:
                    probe.stats = {name: int(event["stats"].get(name, 0)) for name in STATS_FIELDS}
                elif "closed" in event:
                    probe.closed = str(event["closed"]["code"])

        reader = asyncio.create_task(read())

        async def send(at: float) -> None:
            probe.sending(at)
            await ws.send_str(json.dumps({"frame": {"encoded": encoded, "timestamp_s": at}}))

        await ws.send_str(json.dumps({"start": {"settings": {"transcribe": False}}}))
        await paced(seconds, send)
        await ws.send_str(json.dumps({"end": {}}))
        await asyncio.wait_for(reader, timeout=60)
    return probe


async def live_rows(c: Clients, gateway: str, seconds: float) -> list[dict[str, Any]]:
    frame = camera_jpeg()
    # Warm-up: a short stream on each path (the face lane's first frames, the gateway's channel to fusion).
    await direct_stream(c, frame, 1.5)
    await gateway_stream(c, gateway, frame, 1.5)
    # One after the other, never at once: each stream has the machine to itself.
    direct = await direct_stream(c, frame, seconds)
    via_gateway = await gateway_stream(c, gateway, frame, seconds)
    for name, probe in (("direct", direct), ("gateway", via_gateway)):
        if probe.closed != "OK" or not probe.latency_s:
            raise RuntimeError(f"the {name} live stream ended {probe.closed or 'without a closing status'}")
    frame_json = json.dumps({"frame": {"encoded": b64(frame), "timestamp_s": 1.25}})
    events = [direct.last_faces] if direct.last_faces is not None else []
    details = {
        "sequential": True,
        "fps": FPS,
        "seconds": seconds,
        "frame_bytes": len(frame),
        "frame_json_bytes": len(frame_json),
        "frames_sent": {"direct": len(direct.sent), "gateway": len(via_gateway.sent)},
        "faces_events": {"direct": len(direct.latency_s), "gateway": len(via_gateway.latency_s)},
        "service_latency_p50_ms": {
            "direct": pct(direct.service_latency_ms, 50),
            "gateway": pct(via_gateway.service_latency_ms, 50),
        },
        "stats": {"direct": direct.stats, "gateway": via_gateway.stats},
    }
    return [
        compare(
            "live faces",
            ms(direct.latency_s),
            ms(via_gateway.latency_s),
            translate_ms=translate_ms(frame_json, fusion_pb2.StreamRequest, events),
            **details,
        ),
        # The two streams ran at different times: less each frame's own fusion latency_ms, what is left is the
        # way to fusion and back, the part of the latency that the gateway changes.
        compare("live faces, transport only", direct.transport_ms(), via_gateway.transport_ms(), sequential=True),
    ]


# -- memory --------------------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    """The process's resident set in MiB; fails once it is gone (a bench about its memory is then void)."""
    kib = status_kib(pid, "VmRSS")
    if not kib:
        raise RuntimeError(f"process {pid} is gone (no VmRSS in /proc/{pid}/status)")
    return kib / 1024


def sampled_mib(sampler: Sampler) -> list[float]:
    """The gateway's RSS samples of a Sampler, in MiB (status_kib gives 0 once the process is gone)."""
    samples = [mib for _, mib in sampler.series["gateway"]]
    if not samples or not all(samples):
        raise RuntimeError("the gateway's process is gone")
    return samples


async def memory_row(c: Clients, gateway: str, pid: int) -> dict[str, Any]:
    audio = np.random.default_rng(0).integers(0, 256, BIG_AUDIO_BYTES, dtype=np.uint8).tobytes()
    body = json.dumps({"audio": b64(audio), "transcript_as_text": False}).encode()
    request = fusion_pb2.AnalyzeRequest(audio=audio, transcript_as_text=False)
    del audio
    # What the gateway does with each body before it calls fusion: parse the JSON (in a worker thread).
    start = time.perf_counter()
    parse(body, fusion_pb2.AnalyzeRequest)
    parse_ms = (time.perf_counter() - start) * 1000
    await asyncio.sleep(1.0)
    with Sampler({"gateway": pid}, RSS_INTERVAL_S) as resting:
        await asyncio.sleep(1.0)
    rest = statistics.median(sampled_mib(resting))
    url = f"{gateway}/api/v1/fusion/analyze"
    timeout = aiohttp.ClientTimeout(total=180)

    async def post() -> tuple[int, str, float]:
        start = time.perf_counter()
        headers = {"Content-Type": "application/json"}
        async with c.session.post(url, data=body, headers=headers, timeout=timeout) as response:
            data = await response.json(content_type=None)
            code = str(data.get("error", {}).get("code", "OK")) if isinstance(data, dict) else "?"
            return response.status, code, time.perf_counter() - start

    async def direct() -> tuple[str, float]:
        start = time.perf_counter()
        try:
            await c.fusion.Analyze(request, timeout=180)
            code = "OK"
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        return code, time.perf_counter() - start

    # Meanwhile, a small request every 50 ms: how long the gateway keeps its other clients waiting.
    pings: list[float] = []
    posting = True

    async def ping() -> None:
        while posting:
            start = time.perf_counter()
            async with c.session.get(f"{gateway}/healthz") as response:
                await response.read()
            pings.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(0.05)

    pinger = asyncio.create_task(ping())
    with Sampler({"gateway": pid}, RSS_INTERVAL_S) as loaded:
        answers = await asyncio.gather(*(post() for _ in range(BIG_REQUESTS)))
    posting = False
    await pinger
    await asyncio.sleep(1.0)
    after_1s = rss_mib(pid)
    await asyncio.sleep(4.0)
    after_5s = rss_mib(pid)
    # The same requests straight to fusion, four at once as well, for what the service itself takes.
    direct_answers = await asyncio.gather(*(direct() for _ in range(BIG_REQUESTS)))
    loaded_mib = sampled_mib(loaded)
    peak = max(loaded_mib)
    body_mib = len(body) / MiB
    return {
        "pid": pid,
        "requests": BIG_REQUESTS,
        "body_mib": round(body_mib, 2),
        "rest_mib": round(rest, 1),
        "peak_mib": round(peak, 1),
        "after_1s_mib": round(after_1s, 1),
        "after_5s_mib": round(after_5s, 1),
        "peak_over_rest_mib": round(peak - rest, 1),
        "copies_per_body": round((peak - rest) / (BIG_REQUESTS * body_mib), 2),
        "rss_samples": len(loaded_mib),
        "parse_ms_per_body": round(parse_ms, 1),
        "healthz_during_p50_ms": pct(pings, 50),
        "healthz_during_max_ms": round(max(pings), 1) if pings else None,
        "gateway_seconds": [round(t, 2) for _, _, t in answers],
        "direct_seconds": [round(t, 2) for _, t in direct_answers],
        "answers": sorted({f"HTTP {status} {code}" for status, code, _ in answers}),
        "direct_answers": sorted({code for code, _ in direct_answers}),
    }


# -- the run -------------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| row | direct p50 / p95 ms | gateway p50 / p95 ms | overhead p50 ms | ratio | handler mean ms "
        "| translate ms | n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {r['direct_p50_ms']} / {r['direct_p95_ms']} | {r['gateway_p50_ms']} / "
            f"{r['gateway_p95_ms']} | {r['overhead_p50_ms']} | {r['ratio_p50']} | {r.get('handler_mean_ms', '-')} | "
            f"{r.get('translate_ms', '-')} | {r['direct_n']} + {r['gateway_n']} |"
        )
    return "\n".join(lines)


def memory_lines(memory: dict[str, Any] | None) -> str:
    if memory is None:
        return "gateway memory: not measured (a running stack without --gateway-pid)"
    m = memory
    return (
        f"gateway RSS: rest {m['rest_mib']} MiB, peak {m['peak_mib']} MiB with {m['requests']} x {m['body_mib']} MiB "
        f"POST /api/v1/fusion/analyze in flight (+{m['peak_over_rest_mib']} MiB = {m['copies_per_body']} x each "
        f"body), {m['after_1s_mib']} MiB 1 s after, {m['after_5s_mib']} MiB 5 s after ({', '.join(m['answers'])})\n"
        f"  those POSTs took {min(m['gateway_seconds'])}-{max(m['gateway_seconds'])} s, the same 4 requests "
        f"straight to fusion {min(m['direct_seconds'])}-{max(m['direct_seconds'])} s "
        f"({', '.join(m['direct_answers'])}); "
        f"parsing one body's JSON takes {m['parse_ms_per_body']} ms (in a worker thread); GET /healthz "
        f"meanwhile p50 {m['healthz_during_p50_ms']} ms, max {m['healthz_during_max_ms']} ms"
    )


async def measure(endpoints: Endpoints, calls: int, seconds: float) -> dict[str, Any]:
    options = grpc_options(32 * MiB)
    channels = [open_aio_channel(address, None, options) for address in (endpoints.vision, endpoints.dialog)]
    channels.append(open_aio_channel(endpoints.fusion, None, options))
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        c = Clients(
            session,
            vision_pb2_grpc.VisionServiceStub(channels[0]),
            dialog_pb2_grpc.DialogServiceStub(channels[1]),
            fusion_pb2_grpc.FusionServiceStub(channels[2]),
            channels,
        )
        gateway, metrics = endpoints.gateway, endpoints.gateway_metrics
        try:
            rows = await round_trip_row(c, gateway, calls)
            for route, measured in (
                ("/api/v1/vision/analyze-image", analyze_image_row(c, gateway, calls)),
                ("/api/v1/dialog/greeting", greeting_row(c, gateway, calls)),
                ("/api/v1/dialog/chat", chat_rows(c, gateway, calls)),
            ):
                rows.extend(await with_handler_time(c, metrics, route, measured))
                print(table(rows), flush=True)
            rows.extend(await live_rows(c, gateway, seconds))
            memory = None
            if endpoints.gateway_pid is not None:
                memory = await memory_row(c, endpoints.gateway, endpoints.gateway_pid)
        finally:
            await asyncio.gather(*(channel.close() for channel in c.channels))
    return {"rows": rows, "memory": memory}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=40, help="timed calls per path in each unary / chat row")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each live stream")
    parser.add_argument("--gateway", help="a running gateway's base URL (default: start an ephemeral stack)")
    parser.add_argument("--fusion", help="the running stack's fusion gRPC address (with --gateway)")
    parser.add_argument("--vision", help="the running stack's vision gRPC address (with --gateway)")
    parser.add_argument("--dialog", help="the running stack's dialog gRPC address (with --gateway)")
    parser.add_argument("--gateway-pid", type=int, help="the running gateway's pid, for the memory row")
    parser.add_argument("--gateway-metrics", help="the running gateway's metrics URL (http://HOST:9080/metrics)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/gateway.json"))
    args = parser.parse_args(argv)
    if args.calls < 1 or args.seconds <= 0:
        parser.error("--calls must be at least 1 and --seconds positive")
    if args.gateway and not (args.fusion and args.vision and args.dialog):
        parser.error("--gateway needs --fusion, --vision and --dialog (the direct side of each row)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.gateway:
            endpoints = Endpoints(
                args.gateway.rstrip("/"), args.fusion, args.vision, args.dialog, args.gateway_pid, args.gateway_metrics
            )
            results = asyncio.run(measure(endpoints, args.calls, args.seconds))
        else:
            # The offline fallback for Greeting and Chat: the stack's services inherit this environment.
            os.environ.pop("EMOMESH_DIALOG_LLM_API_KEY", None)
            config = StackConfig.ephemeral(Path(tmp) / "stack")
            with Stack(config) as stack:
                assert stack.console_url is not None
                gateway = stack.services["gateway"].process
                assert gateway is not None
                endpoints = Endpoints(
                    stack.console_url.rstrip("/"),
                    stack.config.address("fusion"),
                    stack.config.address("vision"),
                    stack.config.address("dialog"),
                    gateway.pid,
                    f"http://127.0.0.1:{config.metrics_port('gateway')}/metrics",
                )
                results = asyncio.run(measure(endpoints, args.calls, args.seconds))
    print(table(results["rows"]))
    print(
        f"live faces: {FPS:g} frames/s of a 640x480 JPEG for {args.seconds:g} s per path; the direct stream and "
        "the WebSocket stream ran one after the other (not at once), so that row is not interleaved"
    )
    print(memory_lines(results["memory"]))
    write_results(
        args.out,
        {**results, "calls": args.calls, "seconds": args.seconds, "fps": FPS, "warmup_calls": WARMUP},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
