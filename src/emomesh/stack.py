"""The embedded stack: tritonserver, redis-server and every Emomesh service on one machine (CPU).

    emomesh up          # start everything, print the endpoints, stop everything on Ctrl-C

Each service runs as its own process (as in Kubernetes), configured only through environment
variables, so what runs here is what runs in the images. While `emomesh up` waits, a Supervisor
(emomesh.supervisor) restarts any child that exits, as Kubernetes would restart a container."""

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
from emomesh.ports import METRICS_PORT_OFFSET, REDIS_PORT, service_port
from emomesh.procs import RedisServer, free_port, grpc_healthy, kill_process_group, stop_process, wait_until
from emomesh.security import ClientTls
from emomesh.supervisor import RestartPolicy, Supervised, Supervisor
from emomesh.triton_repo import RenderOptions, render_repository
from emomesh.tritonserver import TritonPorts, TritonServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    # Other services it calls: their addresses are passed as EMOMESH_<NAME>_<DEP>_ADDR.
    depends_on: tuple[str, ...] = ()
    needs_redis: bool = False
    # Serves a Triton model: not ready without Triton, and restarted only once Triton is ready.
    needs_triton: bool = False

    @property
    def default_port(self) -> int:
        return service_port(self.name)


# Services with dependencies start after the others are SERVING; all wait for health before the
# stack is "up".
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("vision", "services.vision.server", needs_triton=True),
    ServiceSpec("audio", "services.audio.server", needs_triton=True),
    ServiceSpec("text", "services.text.server", needs_triton=True),
    ServiceSpec("fusion", "services.fusion.server", depends_on=("vision", "audio", "text")),
    ServiceSpec("dialog", "services.dialog.server", needs_redis=True),
)


@dataclass
class StackConfig:
    state_dir: Path = PROJECT_ROOT / ".stack"
    # 0 = pick a free port (tests); the defaults are the documented ports.
    triton_ports: TritonPorts = field(default_factory=TritonPorts)
    redis_port: int = REDIS_PORT
    service_ports: dict[str, int] = field(default_factory=dict)
    # Metrics ports default to the gRPC port + 1000 (the documented layout, emomesh.ports); ephemeral stacks pick
    # them free as well, since a free gRPC port says nothing about the port 1000 above it.
    metrics_ports: dict[str, int] = field(default_factory=dict)
    services: tuple[str, ...] = tuple(s.name for s in SERVICES)
    ort_threads: int = 1
    extra_env: Mapping[str, str] = field(default_factory=dict)
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    # TLS towards the services' gRPC ports, when extra_env gives them certificates (health checks).
    client_tls: ClientTls | None = None

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
        return self.metrics_ports.get(service, self.port(service) + METRICS_PORT_OFFSET)

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.port(service)}"


class ServiceProcess:
    """One service's process: `python -m services.<name>.server` with its environment and log."""

    def __init__(
        self, spec: ServiceSpec, env: dict[str, str], address: str, log_path: Path, tls: ClientTls | None = None
    ) -> None:
        self.spec, self.env, self.address, self.log_path = spec, env, address, log_path
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.spec.module],
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=PROJECT_ROOT,
            )

    def is_ready(self) -> bool:
        return grpc_healthy(self.address, tls=self.tls)

    def clean_up_after_exit(self) -> None:
        if self.process is not None:
            kill_process_group(self.process.pid, grace_s=1.0)

    def stop(self) -> None:
        stop_process(self.process)


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        state = config.state_dir
        self.triton = TritonServer(state / "triton-repo", state, config.triton_ports, state / "logs" / "triton.log")
        self.redis = RedisServer(config.redis_port, state / "redis", state / "logs" / "redis.log")
        self.services: dict[str, ServiceProcess] = {}
        self.timings: dict[str, float] = {}
        self._supervisor: Supervisor | None = None

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """The current process of each started service (a restart replaces it)."""
        return {name: svc.process for name, svc in self.services.items() if svc.process is not None}

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
        # Services that call others start once those are SERVING: fusion's readiness checks its
        # modality services at once, and a channel that found nobody listening waits out its
        # reconnect backoff (up to 2 s) before it connects, so its first calls would fail.
        for wave in ([s for s in specs if not s.depends_on], [s for s in specs if s.depends_on]):
            for spec in wave:
                service = ServiceProcess(
                    spec,
                    self.service_env(spec),
                    self.config.address(spec.name),
                    state / "logs" / f"{spec.name}.log",
                    tls=self.config.client_tls,
                )
                self.services[spec.name] = service
                service.start()
            for spec in wave:
                service = self.services[spec.name]
                wait_until(service.is_ready, 120, f"{spec.name} service", service.process, service.log_path)
                self.timings[spec.name] = time.perf_counter() - begin
        self.timings["total"] = time.perf_counter() - begin

    def supervisor(self) -> Supervisor:
        """A Supervisor of every started child (tritonserver, redis-server if started, the services),
        with the stack's restart policy; stop() stops it before stopping the children. Model
        services are restarted only once Triton is ready again."""
        children: list[Supervised] = [self.triton, self.redis, *self.services.values()]
        self._supervisor = Supervisor(
            children,
            self.config.restart_policy,
            requires={name: self.triton.is_ready for name, svc in self.services.items() if svc.spec.needs_triton},
        )
        return self._supervisor

    def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop()
        for service in reversed(list(self.services.values())):
            service.stop()
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
