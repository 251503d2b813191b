"""The gateway's HTTP + WebSocket application: the console's static files, and the gRPC services behind a
JSON API (docs/console.md, "API"). It holds no business logic: each route parses the contract's JSON, makes
one gRPC call (or bridges one stream) and writes the contract's JSON back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import WSMsgType, web
from google.protobuf.message import Message

from emomesh.admission import InflightBytes
from emomesh.logs import REQUEST_ID_HEADER, new_request_id, outbound_metadata, reset_request_id, set_request_id
from emomesh.memory import HeapTrimmer
from emomesh.metrics import ADMISSION_REFUSED
from emomesh.readiness import serving_status
from emomesh.redact import scrub_addresses
from emomesh.security import open_aio_channel
from emomesh.server import grpc_options
from emomesh.tracing import client_interceptors
from emotion.dialog.v1 import dialog_pb2, dialog_pb2_grpc
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.gateway import metrics
from services.gateway.config import REQUIRED_UPSTREAMS, UPSTREAMS, GatewaySettings
from services.gateway.translate import BadRequest, compact, dumps, error_body, http_status, parse, to_json

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Headers every answer carries. The page loads nothing from elsewhere, so the policy can say so; camera and
# microphone are for this origin only. Inline styles are allowed because the page sets bar widths in JS.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(self), microphone=(self)",
}
# Bodies above this are parsed in a worker thread: parsing a 20 MB JSON body takes a few hundred ms, during which
# the event loop would answer nothing else (live streams included).
PARSE_IN_THREAD_BYTES = 1024 * 1024
# WebSocket close codes (RFC 6455) for how a live stream ended.
WS_NORMAL, WS_POLICY, WS_INTERNAL, WS_TRY_LATER = 1000, 1008, 1011, 1013


@dataclass(frozen=True)
class UnaryRoute:
    """POST `path` with the JSON of `request_type` -> the service's `method` -> its response as JSON."""

    path: str
    service: str
    method: str
    request_type: type[Message]


UNARY_ROUTES = (
    UnaryRoute("/api/v1/fusion/analyze", "fusion", "Analyze", fusion_pb2.AnalyzeRequest),
    UnaryRoute("/api/v1/vision/analyze-image", "vision", "AnalyzeImage", vision_pb2.AnalyzeImageRequest),
    UnaryRoute("/api/v1/dialog/greeting", "dialog", "Greeting", dialog_pb2.GreetingRequest),
    UnaryRoute("/api/v1/dialog/history", "dialog", "GetHistory", dialog_pb2.GetHistoryRequest),
    UnaryRoute("/api/v1/dialog/clear-history", "dialog", "ClearHistory", dialog_pb2.ClearHistoryRequest),
)
STUBS: dict[str, Callable[[grpc.aio.Channel], Any]] = {
    "fusion": fusion_pb2_grpc.FusionServiceStub,
    "dialog": dialog_pb2_grpc.DialogServiceStub,
    "vision": vision_pb2_grpc.VisionServiceStub,
}


class NotConfigured(Exception):
    """The gateway has no address for a service the route needs."""

    def __init__(self, service: str) -> None:
        super().__init__(
            f"the gateway has no address for the {service} service (EMOMESH_GATEWAY_{service.upper()}_ADDR)"
        )


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(code, message), status=status, headers=headers)


def upstream_message(service: str, code: grpc.StatusCode, details: str | None) -> str:
    """What the page is told about a failed call: the service's own message, without internal addresses (a
    connection failure's details name the peer). A service that cannot be reached is named, since the page
    does not know which service a route goes to."""
    message = scrub_addresses(details or code.name)
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"the {service} service is unavailable: {message}"
    return message


def upstream_error(service: str, method: str, exc: grpc.aio.AioRpcError) -> web.Response:
    log.info(
        "service call failed",
        extra={"fields": {"method": method, "code": exc.code().name, "details": exc.details()}},
    )
    metrics.UPSTREAM_ERRORS.labels(method, exc.code().name).inc()
    return json_error(http_status(exc.code()), exc.code().name, upstream_message(service, exc.code(), exc.details()))


class Upstreams:
    """One channel per configured service, opened once, with its TLS, token and tracing."""

    def __init__(self, settings: GatewaySettings) -> None:
        # A message as large as the biggest body the gateway accepts (the services refuse what they refuse).
        options = grpc_options(settings.max_body_bytes)
        self.channels: dict[str, grpc.aio.Channel] = {}
        for name, upstream in settings.upstreams.items():
            if upstream.address is not None:
                self.channels[name] = open_aio_channel(
                    upstream.address, upstream.security, options, client_interceptors(upstream.address)
                )
        self.stubs = {name: STUBS[name](channel) for name, channel in self.channels.items()}

    def stub(self, service: str) -> Any:
        try:
            return self.stubs[service]
        except KeyError:
            raise NotConfigured(service) from None

    async def health(self, service: str, timeout_s: float = 1.0) -> str:
        channel = self.channels.get(service)
        return "NOT_CONFIGURED" if channel is None else await serving_status(channel, timeout_s)

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self.channels.values()))


class Gateway:
    """The routes, the live streams in progress and readiness; `app()` builds the aiohttp application."""

    def __init__(self, settings: GatewaySettings, upstreams: Upstreams | None = None) -> None:
        self.settings = settings
        self.upstreams = upstreams or Upstreams(settings)
        self.shutting_down = False
        self.streams: set[web.WebSocketResponse] = set()
        self._readiness: tuple[float, dict[str, Any]] | None = None
        self._readiness_lock = asyncio.Lock()
        # A body is held about four times over while it is translated (bytes, JSON text, the parsed message,
        # the serialized call): the bytes of bodies in progress are bounded, as the services bound theirs.
        self.inflight = InflightBytes("gateway", settings.max_inflight_bytes)
        self.trimmer = HeapTrimmer()

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.settings.max_body_bytes, middlewares=[self.observe, self.api_errors, self.admit]
        )
        app.router.add_get("/", self.index)
        app.router.add_static("/static", self.settings.static_dir, follow_symlinks=False)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/api/v1/config", self.config)
        for route in UNARY_ROUTES:
            app.router.add_post(route.path, self.unary(route))
        app.router.add_post("/api/v1/dialog/chat", self.chat)
        app.router.add_get("/api/v1/fusion/stream", self.stream)
        app.on_response_prepare.append(self._add_security_headers)
        app.on_shutdown.append(self._close_streams)
        app.on_cleanup.append(lambda _: self.upstreams.close())
        app.cleanup_ctx.append(self._trim_heap_periodically)
        return app

    async def _trim_heap_periodically(self, app: web.Application) -> AsyncIterator[None]:
        """Returns freed memory to the system after large bodies, and every 30 s (emomesh.memory)."""
        task = asyncio.create_task(self.trimmer.run())
        yield
        task.cancel()
        self.trimmer.cancel()

    # -- middleware ------------------------------------------------------------------------------

    @web.middleware
    async def observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Request id (the caller's X-Request-Id, else a new one; sent on to the services), metrics by route."""
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = supplied if 0 < len(supplied) <= 64 and supplied.isprintable() else new_request_id()
        token = set_request_id(request_id)
        route = request.match_info.route.resource
        label = route.canonical if route is not None else "unmatched"
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            response.headers[REQUEST_ID_HEADER] = request_id
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            metrics.HTTP_REQUESTS.labels(label, str(status)).inc()
            metrics.HTTP_LATENCY.labels(label).observe(time.perf_counter() - start)
            reset_request_id(token)

    @web.middleware
    async def api_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Under /api/ every error is the contract's JSON error, including aiohttp's own (404, 405, 413): a
        body that is not the route's message (400) and a service without an address (503) for every route."""
        try:
            return await handler(request)
        except BadRequest as exc:
            return json_error(400, "BAD_REQUEST", str(exc))
        except NotConfigured as exc:
            return json_error(503, "NOT_CONFIGURED", str(exc))
        except web.HTTPException as exc:
            if not request.path.startswith("/api/") or exc.status < 400:
                raise
            code = {413: "TOO_LARGE", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status, "BAD_REQUEST")
            message = exc.text or exc.reason
            if exc.status == 413:
                message = f"the request body is larger than {self.settings.max_body_bytes} bytes"
            return json_error(exc.status, code, message)

    @web.middleware
    async def admit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuses a body (429) while the bodies in progress hold EMOMESH_GATEWAY_MAX_INFLIGHT_BYTES, before it is
        read; a body of unknown length counts as the largest allowed."""
        if request.method != "POST":
            return await handler(request)
        nbytes = min(request.content_length or self.settings.max_body_bytes, self.settings.max_body_bytes)
        if not self.inflight.try_hold(nbytes):
            route = request.match_info.route.resource
            ADMISSION_REFUSED.labels("gateway", route.canonical if route is not None else "unmatched").inc()
            return json_error(
                429,
                "RESOURCE_EXHAUSTED",
                f"the gateway is busy: requests in progress hold {self.inflight.held} bytes of "
                f"{self.inflight.limit}; try again shortly",
            )
        try:
            return await handler(request)
        finally:
            self.inflight.release(nbytes)
            self.trimmer.request_done(nbytes)

    async def _add_security_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.path.startswith("/static/"):
            # Revalidated on every load (a 304 when unchanged): a new console.js never meets an old page.
            response.headers.setdefault("Cache-Control", "no-cache")

    # -- pages and probes ------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        # no-cache: revalidated on every load (a 304 when unchanged), so a new console shows at once.
        return web.FileResponse(self.settings.static_dir / "index.html", headers={"Cache-Control": "no-cache"})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readiness(self) -> dict[str, Any]:
        """Each service's health; ready while fusion and dialog are SERVING. Asked at most once per
        readiness_cache_s however many probes and pages poll."""
        async with self._readiness_lock:
            now = time.monotonic()
            if self._readiness is not None and now - self._readiness[0] < self.settings.readiness_cache_s:
                report = self._readiness[1]
            else:
                statuses = await asyncio.gather(*(self.upstreams.health(name) for name in UPSTREAMS))
                services = dict(zip(UPSTREAMS, statuses, strict=True))
                ready = all(services[name] == "SERVING" for name in REQUIRED_UPSTREAMS)
                report = {"ready": ready, "services": services}
                self._readiness = (now, report)
        if self.shutting_down:
            return {**report, "ready": False, "reason": "the gateway is shutting down"}
        return report

    async def readyz(self, request: web.Request) -> web.Response:
        report = await self.readiness()
        return web.json_response(report, status=200 if report["ready"] else 503)

    async def config(self, request: web.Request) -> web.Response:
        kinds = dialog_pb2.PersonaKind.DESCRIPTOR.values
        personas = [kind.name for kind in kinds if kind.number != dialog_pb2.PERSONA_KIND_UNSPECIFIED]
        return web.json_response(
            {
                "max_body_bytes": self.settings.max_body_bytes,
                "max_ws_message_bytes": self.settings.max_ws_message_bytes,
                "live": "fusion" in self.upstreams.stubs,
                "personas": personas,
            }
        )

    # -- unary calls -----------------------------------------------------------------------------

    async def _read(self, request: web.Request, message_type: type[Message]) -> Message:
        body = await request.read()
        if len(body) > PARSE_IN_THREAD_BYTES:
            return await asyncio.to_thread(parse, body, message_type)
        return parse(body, message_type)

    def unary(self, route: UnaryRoute) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                message = await self._read(request, route.request_type)
                call = getattr(self.upstreams.stub(route.service), route.method)
                response = await call(message, timeout=self.settings.call_timeout_s, metadata=outbound_metadata())
            except grpc.aio.AioRpcError as exc:
                return upstream_error(route.service, route.method, exc)
            return web.json_response(to_json(response), dumps=compact)

        return handle

    # -- chat: a server stream as NDJSON ---------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """Chat's reply as `application/x-ndjson`, one ChatChunk per line as it streams. Errors before the
        first chunk get their HTTP status; a later one is the last line ({"error": ...})."""
        message = await self._read(request, dialog_pb2.ChatRequest)
        call = self.upstreams.stub("dialog").Chat(
            message, timeout=self.settings.chat_timeout_s, metadata=outbound_metadata()
        )
        try:
            try:
                chunk = await call.read()
            except grpc.aio.AioRpcError as exc:
                return upstream_error("dialog", "Chat", exc)
            # X-Accel-Buffering: a proxy in front (nginx) must pass the lines on as they come.
            response = web.StreamResponse(
                headers={
                    "Content-Type": "application/x-ndjson; charset=utf-8",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",
                }
            )
            await response.prepare(request)
            try:
                while chunk is not grpc.aio.EOF:
                    await response.write(dumps(chunk).encode() + b"\n")
                    chunk = await call.read()
            except grpc.aio.AioRpcError as exc:
                metrics.UPSTREAM_ERRORS.labels("Chat", exc.code().name).inc()
                line = error_body(exc.code().name, upstream_message("dialog", exc.code(), exc.details()))
                await response.write(compact(line).encode() + b"\n")
            except ConnectionResetError:
                return response  # the browser went away; the finally cancels the reply
            await response.write_eof()
            return response
        finally:
            call.cancel()  # a no-op once the reply has ended

    # -- the live stream: WebSocket <-> AnalyzeStream --------------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Bridges one WebSocket to one FusionService.AnalyzeStream: each text message from the page is a
        StreamRequest's JSON, each event goes back as a StreamEvent's JSON, and a last {"closed": {code,
        message}} says how the stream ended before the socket closes."""
        ws = web.WebSocketResponse(max_msg_size=self.settings.max_ws_message_bytes, heartbeat=30.0)
        await ws.prepare(request)
        if "fusion" not in self.upstreams.stubs:
            await _close(ws, "UNAVAILABLE", str(NotConfigured("fusion")), WS_TRY_LATER)
            return ws
        if self.shutting_down or len(self.streams) >= self.settings.max_streams:
            reason = (
                "the gateway is shutting down"
                if self.shutting_down
                else (f"this gateway bridges at most {self.settings.max_streams} live streams at once; try again later")
            )
            await _close(ws, "RESOURCE_EXHAUSTED" if not self.shutting_down else "UNAVAILABLE", reason, WS_TRY_LATER)
            return ws
        self.streams.add(ws)
        metrics.WEBSOCKETS_ACTIVE.inc()
        call = self.upstreams.stub("fusion").AnalyzeStream(metadata=outbound_metadata())
        try:
            await self._bridge(ws, call)
        finally:
            call.cancel()
            self.streams.discard(ws)
            metrics.WEBSOCKETS_ACTIVE.dec()
        return ws

    async def _bridge(self, ws: web.WebSocketResponse, call: Any) -> None:
        to_service = asyncio.create_task(self._page_to_service(ws, call))
        to_page = asyncio.create_task(self._service_to_page(ws, call))
        try:
            done, _ = await asyncio.wait({to_service, to_page}, return_when=asyncio.FIRST_COMPLETED)
            if to_service in done and to_service.exception() is None:
                return  # the page closed the socket (tab closed, navigation): nobody to answer
            if to_service in done and isinstance(to_service.exception(), BadRequest):
                await _close(ws, "INVALID_ARGUMENT", str(to_service.exception()), WS_POLICY)
                return
            # The service ended the stream (or a write to it failed because it had): tell the page how.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({to_page}, timeout=self.settings.grace_s)
            code = await call.code()
            if code != grpc.StatusCode.OK:
                metrics.UPSTREAM_ERRORS.labels("AnalyzeStream", code.name).inc()
            close_code = WS_NORMAL if code == grpc.StatusCode.OK else WS_INTERNAL
            details = await call.details()
            message = upstream_message("fusion", code, details) if code != grpc.StatusCode.OK else ""
            await _close(ws, code.name, message, close_code)
        finally:
            for task in (to_service, to_page):
                task.cancel()
            await asyncio.gather(to_service, to_page, return_exceptions=True)

    async def _page_to_service(self, ws: web.WebSocketResponse, call: Any) -> None:
        ended = False
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                metrics.WS_MESSAGES.labels("in").inc()
                request = parse(message.data, fusion_pb2.StreamRequest)
                if ended:
                    continue  # after `end` the service reads nothing more; the page may still be sending
                await call.write(request)
                if request.WhichOneof("message") == "end":
                    ended = True
                    await call.done_writing()
            elif message.type == WSMsgType.BINARY:
                raise BadRequest("binary messages are not part of the protocol: send each StreamRequest as JSON text")

    async def _service_to_page(self, ws: web.WebSocketResponse, call: Any) -> None:
        async for event in call:
            await ws.send_str(dumps(event))
            metrics.WS_MESSAGES.labels("out").inc()

    async def _close_streams(self, app: web.Application) -> None:
        """On shutdown: readiness turns false, and every live stream is told why it ends."""
        self.shutting_down = True
        await asyncio.gather(
            *(_close(ws, "UNAVAILABLE", "the gateway is shutting down", WS_TRY_LATER) for ws in list(self.streams)),
            return_exceptions=True,
        )


async def _close(ws: web.WebSocketResponse, code: str, message: str, ws_code: int) -> None:
    """The last message of a live stream, then the close; a page that already left is no error."""
    if ws.closed:
        return
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_json({"closed": {"code": code, "message": message}})
        metrics.WS_MESSAGES.labels("out").inc()
    await ws.close(code=ws_code)
