"""The embedded stack: tritonserver, redis-server, every Emomesh service and the console gateway on one
machine (CPU).

    emomesh up          # start everything, print the endpoints, stop everything on Ctrl-C

Each service runs as its own process (as in Kubernetes), configured only through environment
variables, so what runs here is what runs in the images. While `emomesh up` waits, a Supervisor
(emomesh.supervisor) restarts any child that exits, as Kubernetes would restart a container.

Before it starts anything, a stack locks its state directory and checks its binaries and ports
(emomesh.startup); once up, it writes where everything listens to `<state-dir>/endpoints.json`
(StackEndpoints), which the client commands read with `--stack <state-dir>`, and removes it on stop."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emomesh.paths import MODEL_REPOSITORY, PROJECT_ROOT
from emomesh.ports import METRICS_PORT_OFFSET, REDIS_PORT, listen_port
from emomesh.procs import (
    RedisServer,
    free_port,
    grpc_healthy,
    http_healthy,
    kill_process_group,
    stop_process,
    wait_until,
)
from emomesh.security import ClientTls
from emomesh.startup import (
    ModelLoadFailed,
    StartupError,
    StateLock,
    check_assembled_models,
    check_binary,
    check_ports,
    check_tritonserver,
    last_log_line,
    model_load_errors,
    read_from,
)
from emomesh.supervisor import RestartPolicy, Supervised, Supervisor
from emomesh.triton_repo import RenderOptions, load_specs, render_repository
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
    # "grpc" (grpc.health.v1 tells readiness) or "http" (the gateway: GET /healthz).
    protocol: str = "grpc"

    @property
    def default_port(self) -> int:
        return listen_port(self.name)


# Services with dependencies start after the others are SERVING; all wait for health before the
# stack is "up".
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("vision", "services.vision.server", needs_triton=True),
    ServiceSpec("audio", "services.audio.server", needs_triton=True),
    ServiceSpec("text", "services.text.server", needs_triton=True),
    ServiceSpec("fusion", "services.fusion.server", depends_on=("vision", "audio", "text")),
    # Dialog asks text for the emotion of a message sent without one (with the session's history as context).
    ServiceSpec("dialog", "services.dialog.server", depends_on=("text",), needs_redis=True),
)
# The console gateway (HTTP + WebSocket for browsers) over fusion, dialog and vision. It is no gRPC service, so
# the client commands and `emomesh health` (which go through SERVICES) leave it out; the stack starts it last.
GATEWAY = ServiceSpec("gateway", "services.gateway.server", depends_on=("fusion", "dialog", "vision"), protocol="http")
ALL_SPECS: tuple[ServiceSpec, ...] = (*SERVICES, GATEWAY)


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
    services: tuple[str, ...] = tuple(s.name for s in ALL_SPECS)
    ort_threads: int = 1
    # Triton's dynamic batcher waits each model's configured delay for more requests, as on GPU (None: not
    # on this CPU; bench.bench_batch_delay compares the two).
    batch_delay: bool | None = None
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
            service_ports={s.name: free_port() for s in ALL_SPECS},
            metrics_ports={s.name: free_port() for s in ALL_SPECS},
            services=services or tuple(s.name for s in ALL_SPECS),
        )

    def port(self, service: str) -> int:
        spec = next(s for s in ALL_SPECS if s.name == service)
        return self.service_ports.get(service, spec.default_port)

    def metrics_port(self, service: str) -> int:
        return self.metrics_ports.get(service, self.port(service) + METRICS_PORT_OFFSET)

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.port(service)}"

    def needs_redis(self) -> bool:
        return any(s.needs_redis for s in SERVICES if s.name in self.services)

    def listening_ports(self) -> dict[str, int]:
        """Every port the stack will listen on, by what it is for ("fusion gRPC", "Triton HTTP"...)."""
        ports: dict[str, int] = {}
        for name in self.services:
            ports[f"{name} {'HTTP' if name == GATEWAY.name else 'gRPC'}"] = self.port(name)
            ports[f"{name} metrics"] = self.metrics_port(name)
        p = self.triton_ports
        ports.update({"Triton HTTP": p.http, "Triton gRPC": p.grpc, "Triton metrics": p.metrics})
        if self.needs_redis():
            ports["Redis"] = self.redis_port
        return ports


ENDPOINTS_FILE = "endpoints.json"


@dataclass(frozen=True)
class StackEndpoints:
    """Where a running stack listens, as `emomesh up` writes it to `<state-dir>/endpoints.json`."""

    # The `emomesh up` (or other launcher) process that runs the stack.
    pid: int
    state_dir: str
    # Service name -> {"grpc": "127.0.0.1:50051", "metrics": "http://127.0.0.1:51051/metrics"}.
    services: dict[str, dict[str, str]]
    # {"grpc": "127.0.0.1:8001", "http": "http://127.0.0.1:8000", "metrics": "http://127.0.0.1:8002/metrics"}
    triton: dict[str, str]
    # redis://127.0.0.1:6379/0, or None when no service of the stack needs Redis.
    redis: str | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> StackEndpoints:
        data: dict[str, Any] = json.loads(text)
        return cls(
            pid=int(data["pid"]),
            state_dir=str(data["state_dir"]),
            services={str(k): {str(a): str(b) for a, b in v.items()} for k, v in data["services"].items()},
            triton={str(k): str(v) for k, v in data["triton"].items()},
            redis=None if data.get("redis") is None else str(data["redis"]),
        )

    @classmethod
    def read(cls, state_dir: Path) -> StackEndpoints:
        """The endpoints of the stack running with state_dir. FileNotFoundError when no stack wrote
        them (none is up, or it stopped), ValueError when the file is damaged."""
        path = state_dir / ENDPOINTS_FILE
        try:
            return cls.from_json(path.read_text())
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not an endpoints file written by `emomesh up`: {exc!r}") from exc


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
        if self.spec.protocol == "http":
            return http_healthy(f"http://{self.address}/healthz")
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
        self.lock = StateLock(state)
        self.endpoints_path = state / ENDPOINTS_FILE
        self._wrote_endpoints = False

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

    def preflight(self) -> None:
        """What must hold before anything starts: the state directory is ours (locked before anything
        is written into it: another stack's logs, model repository and Redis data stay untouched),
        the binaries are installed, the ports are free. Raises a StartupError."""
        self.lock.acquire()
        if self.config.needs_redis():
            check_binary("redis-server")
        check_tritonserver()
        check_assembled_models(load_specs(), MODEL_REPOSITORY)
        check_ports(self.config.listening_ports())

    def start(self) -> None:
        begin = time.perf_counter()
        state = self.config.state_dir
        self.preflight()
        (state / "logs").mkdir(parents=True, exist_ok=True)
        specs = [s for s in ALL_SPECS if s.name in self.config.services]
        if self.config.needs_redis():
            with _reported_as_startup_error(self.redis.log_path):
                self.redis.start()
            self.timings["redis"] = time.perf_counter() - begin
        render_repository(
            state / "triton-repo",
            RenderOptions("local", ort_threads=self.config.ort_threads, batch_delay=self.config.batch_delay),
        )
        self.triton.start()
        self._wait_triton()
        self.timings["triton"] = time.perf_counter() - begin
        # Services that call others start once those are SERVING: fusion's readiness checks its
        # modality services at once, and a channel that found nobody listening waits out its
        # reconnect backoff (up to 2 s) before it connects, so its first calls would fail.
        for wave in start_waves(specs):
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
                with _reported_as_startup_error(service.log_path):
                    wait_until(service.is_ready, 120, f"{spec.name} service", service.process, service.log_path)
                self.timings[spec.name] = time.perf_counter() - begin
        self.timings["total"] = time.perf_counter() - begin
        self.write_endpoints()

    def _wait_triton(self) -> None:
        """Waits for Triton; when it exits or stays unready, says which model failed and why, from its log."""
        try:
            self.triton.wait_ready()
        except (RuntimeError, TimeoutError) as exc:
            log_text = read_from(self.triton.log_path, self.triton.log_offset)
            errors = model_load_errors(log_text)
            if not errors:
                raise _startup_error(exc, self.triton.log_path) from exc
            failed = "; ".join(f"model {name}: {error}" for name, error in errors.items())
            raise ModelLoadFailed(
                f"Triton could not load the model repository {self.triton.model_repository} ({failed}); "
                f"fix or restore the model's files under deploy/triton/models/ (`git status deploy/triton`) "
                f"or its entry in deploy/triton/models.yaml; full log: {self.triton.log_path}"
            ) from exc

    def endpoints(self) -> StackEndpoints:
        def listens(spec: ServiceSpec) -> dict[str, str]:
            address = self.config.address(spec.name)
            return {"http": f"http://{address}"} if spec.protocol == "http" else {"grpc": address}

        services = {
            name: {**listens(service.spec), "metrics": f"http://127.0.0.1:{self.config.metrics_port(name)}/metrics"}
            for name, service in self.services.items()
        }
        p = self.config.triton_ports
        triton = {
            "grpc": f"127.0.0.1:{p.grpc}",
            "http": f"http://127.0.0.1:{p.http}",
            "metrics": f"http://127.0.0.1:{p.metrics}/metrics",
        }
        redis = self.redis.url if self.redis.process is not None else None
        return StackEndpoints(os.getpid(), str(self.config.state_dir.resolve()), services, triton, redis)

    def write_endpoints(self) -> None:
        """<state-dir>/endpoints.json, replaced at once (a reader never sees half a file)."""
        partial = self.endpoints_path.with_name(self.endpoints_path.name + ".tmp")
        partial.write_text(self.endpoints().to_json())
        partial.replace(self.endpoints_path)
        self._wrote_endpoints = True

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
        if not self.lock.held:
            return  # never started (another stack holds the state directory): nothing of ours to stop
        if self._wrote_endpoints:
            self.endpoints_path.unlink(missing_ok=True)
            self._wrote_endpoints = False
        if self._supervisor is not None:
            self._supervisor.stop()
        for service in reversed(list(self.services.values())):
            service.stop()
        self.triton.stop()
        self.redis.stop()
        self.lock.release()

    def describe(self, console_hint: bool = True) -> str:
        """What runs where, for people; console_hint: end with the console's URL (`emomesh up`, not the demo,
        whose stack stops before anyone could open it)."""
        lines = [f"Emomesh stack up in {self.timings.get('total', 0):.1f}s (state and logs in {self.config.state_dir})"]
        for name in self.processes:
            port = self.config.port(name)
            metrics = self.config.metrics_port(name)
            where = f"http 127.0.0.1:{port}" if name == GATEWAY.name else f"grpc 127.0.0.1:{port}"
            lines.append(f"  {name:<8} {where}   metrics http://127.0.0.1:{metrics}/metrics")
        p = self.config.triton_ports
        lines.append(
            f"  triton   grpc 127.0.0.1:{p.grpc}   http 127.0.0.1:{p.http}   metrics http://127.0.0.1:{p.metrics}/metrics"
        )
        if self.redis.process is not None:
            lines.append(f"  redis    {self.redis.url}")
        if self._wrote_endpoints:
            lines.append(f"  (these endpoints are in {self.endpoints_path}: `--stack {self.config.state_dir}`)")
        if console_hint and self.console_url is not None:
            lines.append(f"Console: open {self.console_url} in a browser (camera and microphone work on this machine)")
        return "\n".join(lines)

    @property
    def console_url(self) -> str | None:
        """The web console's address, when this stack runs the gateway."""
        if GATEWAY.name not in self.services:
            return None
        return f"http://{self.config.address(GATEWAY.name)}/"

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_waves(specs: list[ServiceSpec]) -> list[list[ServiceSpec]]:
    """The services in the order they can start: each wave once every service it calls (among those this
    stack runs) is SERVING. A dependency the stack does not run is not waited for."""
    running = {spec.name for spec in specs}
    started: set[str] = set()
    waves: list[list[ServiceSpec]] = []
    remaining = list(specs)
    while remaining:
        wave = [s for s in remaining if all(dep in started or dep not in running for dep in s.depends_on)]
        if not wave:
            raise ValueError(f"services that depend on each other: {', '.join(s.name for s in remaining)}")
        waves.append(wave)
        started.update(s.name for s in wave)
        remaining = [s for s in remaining if s not in wave]
    return waves


def _startup_error(exc: BaseException, log_path: Path) -> StartupError:
    """A child that died or never got ready while the stack started: the error and its log's last line."""
    last = last_log_line(read_from(log_path, 0))
    return StartupError(f"{exc}" + (f"; its log ends with: {last}" if last else ""))


@contextlib.contextmanager
def _reported_as_startup_error(log_path: Path) -> Iterator[None]:
    try:
        yield
    except (RuntimeError, TimeoutError) as exc:
        if isinstance(exc, StartupError):
            raise
        raise _startup_error(exc, log_path) from exc
