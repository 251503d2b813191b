"""Health that tells the truth: liveness and readiness of a service, reported over grpc.health.v1.

- Liveness, health service name "liveness": SERVING as long as the process answers (its event loop
  runs). Kubernetes' livenessProbe asks for it: a failing dependency must not get a healthy pod
  restarted.
- Readiness, the overall name "" and each of the service's own names: SERVING only while what the
  service needs to answer is ready (Triton and its model; for fusion at least one modality
  service). Kubernetes' readinessProbe (and `emomesh health`) ask for it: a service whose Triton is
  gone leaves the load balancer until Triton is back, then returns to it by itself.

A readiness check is an async callable that returns None when the service is ready and otherwise a
short reason. A HealthReporter runs it every EMOMESH_<SVC>_READINESS_INTERVAL_S seconds and flips the
statuses on each change (logged once per change). While not ready, the reason is sent back with
every health Check as trailing metadata (`emomesh-not-ready-reason`), which `emomesh health` prints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from emomesh.procs import local_http
from emomesh.security import ClientSecurity, ClientTls, open_channel

log = logging.getLogger(__name__)

LIVENESS_SERVICE = "liveness"
NOT_READY_REASON_KEY = "emomesh-not-ready-reason"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

ReadinessCheck = Callable[[], Awaitable[str | None]]


def _metadata_safe(text: str, limit: int = 300) -> str:
    """gRPC ASCII metadata values: printable ASCII only."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:limit]


class ExplainingHealthServicer(health_aio.HealthServicer):
    """The library's health servicer, plus the reason a service is not ready as trailing metadata."""

    def __init__(self) -> None:
        super().__init__()
        self.reason: str | None = None
        self.readiness_names: frozenset[str] = frozenset()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        response: health_pb2.HealthCheckResponse = await super().Check(request, context)
        if self.reason and request.service in self.readiness_names and response.status != SERVING:
            context.set_trailing_metadata(((NOT_READY_REASON_KEY, _metadata_safe(self.reason)),))
        return response


class HealthReporter:
    """Sets liveness and readiness on a health servicer and keeps readiness current.

    Without a check, readiness is SERVING from start() to stop() (a service that can always answer,
    like dialog with its offline fallback). With one, readiness is checked once before start()
    returns and then every interval_s, each check bounded by timeout_s (a check that times out or
    raises counts as not ready; the checks below bound each of their RPCs to 1 s themselves)."""

    def __init__(
        self,
        service_names: Sequence[str],
        check: ReadinessCheck | None = None,
        interval_s: float = 1.0,
        timeout_s: float | None = None,
    ) -> None:
        self.servicer = ExplainingHealthServicer()
        self.names = ["", *service_names]
        self.servicer.readiness_names = frozenset(self.names)
        self.check = check
        self.interval_s = interval_s
        # A guard against a check that hangs, above the checks' own RPC deadlines (1 s each).
        self.timeout_s = timeout_s if timeout_s is not None else max(2 * interval_s, 2.0)
        self.ready: bool | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def reason(self) -> str | None:
        return self.servicer.reason

    async def start(self) -> None:
        await self.servicer.set(LIVENESS_SERVICE, SERVING)
        if self.check is None:
            await self._publish(None)
            return
        await self.refresh()
        self._task = asyncio.create_task(self._watch(), name="readiness")

    async def refresh(self) -> None:
        """Runs the check once and publishes its outcome."""
        assert self.check is not None
        try:
            reason = await asyncio.wait_for(self.check(), self.timeout_s)
        except TimeoutError:
            reason = f"readiness check did not answer within {self.timeout_s:.1f}s"
        except Exception as exc:  # a broken check must not kill the watcher; it means "not ready"
            reason = f"readiness check failed: {exc!r}"
        await self._publish(reason)

    async def _publish(self, reason: str | None) -> None:
        ready = reason is None
        changed = ready != self.ready
        self.ready, self.servicer.reason = ready, reason
        if not changed:
            return
        for name in self.names:
            await self.servicer.set(name, SERVING if ready else NOT_SERVING)
        if ready:
            log.info("ready: SERVING")
        else:
            log.warning("not ready: NOT_SERVING", extra={"fields": {"reason": reason}})

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.refresh()

    async def stop(self) -> None:
        """Stops checking; every name (liveness too) turns NOT_SERVING for the graceful shutdown."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.servicer.enter_graceful_shutdown()


class ModelServer(Protocol):
    """What readiness needs of a model server client (emomesh.triton.TritonClient)."""

    @property
    def url(self) -> str: ...

    async def is_live(self, timeout_s: float | None = None) -> bool: ...

    async def is_ready(self, model: str, timeout_s: float | None = None) -> bool: ...


def triton_model_readiness(client: ModelServer, models: Sequence[str], timeout_s: float = 1.0) -> ReadinessCheck:
    """Ready while each of models is ready on Triton (which implies a live server): one RPC per model
    and check; only when one is not ready, a second asks whether the server itself is live."""

    async def check() -> str | None:
        for model in models:
            if not await client.is_ready(model, timeout_s):
                if not await client.is_live(timeout_s):
                    return f"Triton at {client.url} is not live"
                return f"model {model} is not ready on Triton at {client.url}"
        return None

    return check


async def serving_status(channel: grpc.aio.Channel, timeout_s: float = 1.0) -> str:
    """A peer's overall health as a name: SERVING, NOT_SERVING..., or the status code of a failed check
    (UNAVAILABLE when nothing answers)."""
    try:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def peers_readiness(channels: Mapping[str, grpc.aio.Channel], timeout_s: float = 1.0) -> ReadinessCheck:
    """Ready while at least one of the peers (by name) reports SERVING for its overall health."""

    async def check() -> str | None:
        if not channels:
            return "no peer service is configured"
        statuses = await asyncio.gather(*(serving_status(channel, timeout_s) for channel in channels.values()))
        if "SERVING" in statuses:
            return None
        return "none is SERVING: " + ", ".join(f"{name} {s}" for name, s in zip(channels, statuses, strict=True))

    return check


@dataclass(frozen=True)
class HealthReport:
    """What `emomesh health` says about one service."""

    status: str  # SERVING, NOT_SERVING, DOWN, ...
    reason: str = ""

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"


def check_health(address: str, timeout_s: float = 2.0, tls: ClientTls | None = None) -> HealthReport:
    """Readiness of the service at address, and why it is not ready: its own reason when it gives
    one, whether the process is alive otherwise, or why it could not be reached. Health needs no
    token; TLS when the port has it."""
    with open_channel(address, ClientSecurity(tls)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response, call = stub.Check.with_call(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            return HealthReport("DOWN", f"({code.name if code else 'error'}: {details})")
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        if response.status == SERVING:
            return HealthReport(status)
        reason = dict(call.trailing_metadata() or ()).get(NOT_READY_REASON_KEY)
        if reason:
            return HealthReport(status, f"({reason})")
        try:
            alive = stub.Check(health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE), timeout=timeout_s)
            why = "alive, not ready" if alive.status == SERVING else "shutting down"
        except grpc.RpcError:
            why = "no reason given"
        return HealthReport(status, f"({why})")


def gateway_readiness(url: str, timeout_s: float = 2.0) -> dict[str, Any]:
    """The console gateway's /readyz report at url (http://host:port): {"ready", "services", ...}, whether it
    answered 200 or 503 (not ready, with the same body). HTTPError for an answer without that body, another
    OSError or ValueError when it cannot be reached or read."""
    try:
        with local_http().open(f"{url}/readyz", timeout=timeout_s) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        try:
            return dict(json.load(exc))
        except ValueError:
            raise exc from None


def check_gateway(url: str, timeout_s: float = 2.0) -> HealthReport:
    """Readiness of the console gateway at url (http://host:port): GET /readyz, and which of its services are
    not SERVING when it is not ready."""
    try:
        report = gateway_readiness(url, timeout_s)
    except urllib.error.HTTPError as exc:
        return HealthReport("NOT_SERVING", f"(HTTP {exc.code})")
    except (OSError, ValueError) as exc:
        return HealthReport("DOWN", f"({exc})")
    if report.get("ready"):
        return HealthReport("SERVING")
    down = [f"{name} {status}" for name, status in report.get("services", {}).items() if status != "SERVING"]
    reason = report.get("reason") or ", ".join(down) or "no reason given"
    return HealthReport("NOT_SERVING", f"({reason})")
