"""Chaos under `emomesh up`-style supervision: the embedded stack (tritonserver, redis-server,
vision, text, fusion, dialog, each its own process) with its Supervisor running in a thread, and
children killed with SIGKILL.

- Triton killed under load: vision and text turn NOT_SERVING (fusion too, having no modality left),
  their calls fail with UNAVAILABLE, the supervisor kills the old stubs and restarts Triton, and the
  services recover by themselves (SERVING, calls succeed) without being restarted.
- redis-server and a service killed: restarted.
- After the stack stops, no process of any group it started survives (Triton's stubs included).

Bounded: every wait has a limit, and the restart backoff is short. Audio is left out to keep the
stack small; it is restarted and reports readiness exactly as vision and text do."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from emomesh.procs import grpc_healthy, process_group_members
from emomesh.stack import Stack, StackConfig
from emomesh.supervisor import RestartPolicy, Supervisor
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from emotion.text.v1 import text_pb2, text_pb2_grpc
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

SERVICES = ("vision", "text", "fusion", "dialog")
TEXT = "Thank you so much, I love it!"
# Process groups this module's stack has had (each child leads one): none may survive the stack.
GROUPS: set[int] = set()


def wait_for(condition: Callable[[], bool], limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {limit_s:.0f}s")
        time.sleep(0.1)


def health_status(address: str, service: str = "") -> str:
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.RpcError as exc:
            return str(exc.code().name) if isinstance(exc, grpc.Call) else "ERROR"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def python_backend_stubs() -> dict[int, int]:
    """Triton's Python-backend stub processes on this machine: pid -> process group."""
    stubs = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"triton_python_backend_stub" not in (entry / "cmdline").read_bytes():
                continue
            stubs[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2])
        except (OSError, IndexError):
            continue
    return stubs


def remember_groups(stack: Stack) -> None:
    for process in (stack.triton.process, stack.redis.process, *stack.processes.values()):
        if process is not None:
            GROUPS.add(process.pid)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = StackConfig.ephemeral(tmp_path_factory.mktemp("chaos"), services=SERVICES)
    config.restart_policy = RestartPolicy(initial_delay_s=0.5, max_delay_s=2.0)
    with Stack(config) as running:
        remember_groups(running)
        yield running


@pytest.fixture(scope="module")
def supervisor(stack: Stack) -> Iterator[Supervisor]:
    """What `emomesh up` runs in its main loop, here in a thread (Stack.stop() stops it first)."""
    running = stack.supervisor()
    running.start()
    yield running
    running.stop()


class Load:
    """Threads calling vision and text without pause; every outcome is kept with its time."""

    def __init__(self, stack: Stack, image: bytes) -> None:
        self.outcomes: list[tuple[float, str, grpc.StatusCode]] = []
        self._stop = threading.Event()
        vision = vision_pb2_grpc.VisionServiceStub(grpc.insecure_channel(stack.config.address("vision")))
        text = text_pb2_grpc.TextServiceStub(grpc.insecure_channel(stack.config.address("text")))
        calls: dict[str, Callable[[], object]] = {
            "vision": lambda: vision.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=image), timeout=5),
            "text": lambda: text.AnalyzeText(text_pb2.AnalyzeTextRequest(text=TEXT), timeout=5),
        }
        self._threads = [threading.Thread(target=self._loop, args=(n, c), daemon=True) for n, c in calls.items()]

    def _loop(self, name: str, call: Callable[[], object]) -> None:
        while not self._stop.is_set():
            try:
                call()
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
                time.sleep(0.05)  # failing calls come back at once; do not spin
            self.outcomes.append((time.monotonic(), name, code))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


def test_killed_redis_is_restarted(stack: Stack, supervisor: Supervisor) -> None:
    assert stack.redis.process is not None
    old = stack.redis.process.pid
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: stack.redis.process is not None and stack.redis.process.pid != old, 30, "redis-server restart")
    wait_for(stack.redis.ping, 30, "redis-server answering PING")
    remember_groups(stack)
    restart = next(r for r in supervisor.restarts if r.name == "redis-server")
    assert restart.exit == "signal SIGKILL" and restart.attempt == 1
    assert not Path(f"/proc/{old}").exists(), "the killed redis-server was not reaped"
    # Dialog needs no Redis to answer: it stayed SERVING.
    assert health_status(stack.config.address("dialog")) == "SERVING"


def test_killed_service_is_restarted(stack: Stack, supervisor: Supervisor) -> None:
    old = stack.processes["text"].pid
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: stack.processes["text"].pid != old, 30, "text service restart")
    remember_groups(stack)
    wait_for(lambda: grpc_healthy(stack.config.address("text")), 120, "text service SERVING again")
    assert not Path(f"/proc/{old}").exists(), "the killed text service was not reaped"
    restart = next(r for r in supervisor.restarts if r.name == "text")
    assert restart.exit == "signal SIGKILL"
    # Fusion kept a modality (vision) all along, and reaches text again through the same channel
    # once its reconnect backoff (at most 2 s) has passed.
    assert health_status(stack.config.address("fusion")) == "SERVING"
    with grpc.insecure_channel(stack.config.address("fusion")) as channel:
        fusion = fusion_pb2_grpc.FusionServiceStub(channel)

        def text_fused() -> bool:
            try:
                response = fusion.Analyze(fusion_pb2.AnalyzeRequest(text=TEXT), timeout=30)
            except grpc.RpcError as exc:
                # Text is the only modality sent: until fusion reaches it, Analyze is UNAVAILABLE
                # (never OK without a fused result).
                assert isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                return False
            return response.fused.HasField("distribution")

        wait_for(text_fused, 15, "fusion reaching the restarted text service")


def test_killed_triton_under_load_turns_services_unready_then_recovers_without_restarting_them(
    stack: Stack, supervisor: Supervisor, astronaut_jpeg: bytes
) -> None:
    assert stack.triton.process is not None
    old_triton = stack.triton.process.pid
    services = {name: process.pid for name, process in stack.processes.items()}
    old_stubs = {pid for pid, group in python_backend_stubs().items() if group == old_triton}
    assert old_stubs, "the local models run in Python-backend stubs in Triton's process group"
    vision, text, fusion = (stack.config.address(name) for name in ("vision", "text", "fusion"))

    with Load(stack, astronaut_jpeg) as load:
        wait_for(lambda: sum(code == grpc.StatusCode.OK for *_, code in load.outcomes) >= 4, 60, "calls under load")
        killed_at = time.monotonic()
        os.kill(old_triton, signal.SIGKILL)
        # The modality services see Triton gone and say so; fusion has no modality left.
        wait_for(lambda: health_status(vision) == health_status(text) == "NOT_SERVING", 15, "NOT_SERVING")
        assert health_status(vision, "emotion.vision.v1.VisionService") == "NOT_SERVING"
        assert health_status(text, "liveness") == "SERVING", "liveness must not follow Triton"
        wait_for(lambda: health_status(fusion) == "NOT_SERVING", 15, "fusion NOT_SERVING")
        assert health_status(stack.config.address("dialog")) == "SERVING"
        # The supervisor restarts Triton, and the services come back by themselves.
        wait_for(lambda: stack.triton.process is not None and stack.triton.process.pid != old_triton, 30, "restart")
        remember_groups(stack)
        wait_for(lambda: grpc_healthy(vision) and grpc_healthy(text), 240, "vision and text SERVING again")
        wait_for(lambda: grpc_healthy(fusion), 15, "fusion SERVING again")
        recovered_at = time.monotonic()
        wait_for(
            lambda: (
                {(name, code) for at, name, code in load.outcomes if at > recovered_at}
                >= {("vision", grpc.StatusCode.OK), ("text", grpc.StatusCode.OK)}
            ),
            60,
            "calls succeeding again under load",
        )

    failures = {code for at, _, code in load.outcomes if killed_at < at < recovered_at and code != grpc.StatusCode.OK}
    assert grpc.StatusCode.UNAVAILABLE in failures
    # Nothing else than "Triton is away" (or a call cut at the moment of the kill).
    assert failures <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}, failures
    restart = next(r for r in supervisor.restarts if r.name == "tritonserver")
    assert restart.exit == "signal SIGKILL"
    assert {name: process.pid for name, process in stack.processes.items()} == services, "a service was restarted"
    # The old server's stubs (which ignore SIGTERM) are gone, with everything else of its group.
    assert process_group_members(old_triton) == []
    assert not old_stubs & set(python_backend_stubs())
    with grpc.insecure_channel(fusion) as channel:
        response = fusion_pb2_grpc.FusionServiceStub(channel).Analyze(
            fusion_pb2.AnalyzeRequest(image=astronaut_jpeg, text=TEXT), timeout=30
        )
    assert len(response.fused.weights) == 2


def test_stopped_stack_leaves_no_process_behind(stack: Stack, supervisor: Supervisor) -> None:
    # Runs last in this module: stops the stack (the fixture's own stop then finds nothing to do).
    remember_groups(stack)
    assert stack.triton.process is not None
    triton_group = stack.triton.process.pid
    stubs = {pid for pid, group in python_backend_stubs().items() if group == triton_group}
    assert stubs
    stack.stop()
    assert {group: process_group_members(group) for group in GROUPS} == {group: [] for group in GROUPS}
    assert not {pid for pid, group in python_backend_stubs().items() if group in GROUPS}
