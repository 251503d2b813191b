"""The embedded stack: tritonserver, redis-server and every Emomesh service on one machine (CPU).

    emomesh up          # start everything, print the endpoints, stop everything on Ctrl-C

Each service runs as its own process (as in Kubernetes), configured only through environment
variables, so what runs here is what runs in the images."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from emomesh.paths import PROJECT_ROOT
from emomesh.procs import RedisServer, free_port, grpc_healthy, stop_process, wait_until
from emomesh.triton_repo import RenderOptions, render_repository
from emomesh.tritonserver import TritonPorts, TritonServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    default_port: int
    # Other services it calls: their addresses are passed as EMOMESH_<NAME>_<DEP>_ADDR.
    depends_on: tuple[str, ...] = ()
    needs_redis: bool = False


# Start order matters only for dependencies; all wait for health before the stack is "up".
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("vision", "services.vision.server", 50051),
    ServiceSpec("audio", "services.audio.server", 50052),
    ServiceSpec("text", "services.text.server", 50053),
    ServiceSpec("fusion", "services.fusion.server", 50054, depends_on=("vision", "audio", "text")),
    ServiceSpec("dialog", "services.dialog.server", 50055, needs_redis=True),
)


@dataclass
class StackConfig:
    state_dir: Path = PROJECT_ROOT / ".stack"
    # 0 = pick a free port (tests); the defaults are the documented ports.
    triton_ports: TritonPorts = field(default_factory=TritonPorts)
    redis_port: int = 6379
    service_ports: dict[str, int] = field(default_factory=dict)
    # Metrics ports default to the gRPC port + 1000 (the documented layout); ephemeral stacks pick
    # them free as well, since a free gRPC port says nothing about the port 1000 above it.
    metrics_ports: dict[str, int] = field(default_factory=dict)
    services: tuple[str, ...] = tuple(s.name for s in SERVICES)
    ort_threads: int = 1
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def ephemeral(cls, state_dir: Path, services: tuple[str, ...] | None = None) -> StackConfig:
        """All ports picked free: for tests and benches that must not collide with a running stack."""
        return cls(
            state_dir=state_dir,
            triton_ports=TritonPorts(free_port(), free_port(), free_port()),
            redis_port=free_port(),
            service_ports={s.name: free_port() for s in SERVICES},
            metrics_ports={s.name: free_port() for s in SERVICES},
            services=services or tuple(s.name for s in SERVICES),
        )

    def port(self, service: str) -> int:
        spec = next(s for s in SERVICES if s.name == service)
        return self.service_ports.get(service, spec.default_port)

    def metrics_port(self, service: str) -> int:
        return self.metrics_ports.get(service, self.port(service) + 1000)

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.port(service)}"


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        state = config.state_dir
        self.triton = TritonServer(state / "triton-repo", state, config.triton_ports, state / "logs" / "triton.log")
        self.redis = RedisServer(config.redis_port, state / "redis", state / "logs" / "redis.log")
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.timings: dict[str, float] = {}

    def service_env(self, spec: ServiceSpec) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                f"EMOMESH_{spec.name.upper()}_LISTEN": self.config.address(spec.name),
                f"EMOMESH_{spec.name.upper()}_METRICS_PORT": str(self.config.metrics_port(spec.name)),
                "EMOMESH_TRITON_URL": self.triton.grpc_url,
                "EMOMESH_REDIS_URL": self.redis.url,
                "PYTHONUNBUFFERED": "1",
            }
        )
        # glibc malloc: two arenas instead of eight per core, so less freed memory is stranded
        # between them (emomesh.memory); the images and manifests set the same.
        env.setdefault("MALLOC_ARENA_MAX", "2")
        registered = {s.name for s in SERVICES}
        for dep in spec.depends_on:
            # A dependency this stack does not run gets no address: the caller reports it unavailable.
            if dep in registered and dep in self.config.services:
                env[f"EMOMESH_{spec.name.upper()}_{dep.upper()}_ADDR"] = self.config.address(dep)
        env.update(self.config.extra_env)
        return env

    def start(self) -> None:
        begin = time.perf_counter()
        state = self.config.state_dir
        (state / "logs").mkdir(parents=True, exist_ok=True)
        specs = [s for s in SERVICES if s.name in self.config.services]
        if any(s.needs_redis for s in specs):
            self.redis.start()
            self.timings["redis"] = time.perf_counter() - begin
        render_repository(state / "triton-repo", RenderOptions("local", ort_threads=self.config.ort_threads))
        self.triton.start()
        self.triton.wait_ready()
        self.timings["triton"] = time.perf_counter() - begin
        for spec in specs:
            log_path = state / "logs" / f"{spec.name}.log"
            with log_path.open("ab") as log_file:
                self.processes[spec.name] = subprocess.Popen(
                    [sys.executable, "-m", spec.module],
                    env=self.service_env(spec),
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=PROJECT_ROOT,
                )
        for spec in specs:
            address = self.config.address(spec.name)
            wait_until(
                lambda a=address: grpc_healthy(a),
                120,
                f"{spec.name} service",
                self.processes[spec.name],
                state / "logs" / f"{spec.name}.log",
            )
            self.timings[spec.name] = time.perf_counter() - begin
        self.timings["total"] = time.perf_counter() - begin

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            stop_process(self.processes[name])
        self.triton.stop()
        self.redis.stop()

    def describe(self) -> str:
        lines = [f"Emomesh stack up in {self.timings.get('total', 0):.1f}s (state and logs in {self.config.state_dir})"]
        for name in self.processes:
            port = self.config.port(name)
            metrics = self.config.metrics_port(name)
            lines.append(f"  {name:<8} grpc 127.0.0.1:{port}   metrics http://127.0.0.1:{metrics}/metrics")
        p = self.config.triton_ports
        lines.append(
            f"  triton   grpc 127.0.0.1:{p.grpc}   http 127.0.0.1:{p.http}   metrics http://127.0.0.1:{p.metrics}/metrics"
        )
        if self.redis.process is not None:
            lines.append(f"  redis    {self.redis.url}")
        return "\n".join(lines)

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
