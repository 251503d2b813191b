"""Reading settings from the environment. Each service declares a frozen dataclass and builds it
with these helpers; a missing or malformed variable fails at start-up, not at the first request."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emomesh.security import ClientTls, ServerTls, TokenAuth

from emomesh.ports import LOOPBACK, METRICS_PORT_OFFSET, TRITON_GRPC_PORT


class ConfigError(ValueError):
    """A variable is missing or cannot be parsed."""


class Env:
    """Typed accessors over an environment mapping (os.environ by default), all with a prefix."""

    def __init__(self, prefix: str = "", environ: Mapping[str, str] | None = None) -> None:
        self.prefix = prefix
        self.environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> str | None:
        value = self.environ.get(self.prefix + name)
        return None if value is None or value.strip() == "" else value.strip()

    def get_str(self, name: str, default: str | None = None) -> str:
        value = self._raw(name)
        if value is None:
            if default is None:
                raise ConfigError(f"environment variable {self.prefix + name} is required")
            return default
        return value

    def get_optional_str(self, name: str) -> str | None:
        return self._raw(name)

    def get_int(self, name: str, default: int, *, minimum: int | None = None) -> int:
        value = self._raw(name)
        try:
            result = default if value is None else int(value)
        except ValueError as exc:
            raise ConfigError(f"{self.prefix + name}={value!r} is not an integer") from exc
        if minimum is not None and result < minimum:
            raise ConfigError(f"{self.prefix + name}={result} is below the minimum {minimum}")
        return result

    def get_float(self, name: str, default: float, *, minimum: float | None = None) -> float:
        value = self._raw(name)
        try:
            result = default if value is None else float(value)
        except ValueError as exc:
            raise ConfigError(f"{self.prefix + name}={value!r} is not a number") from exc
        if minimum is not None and result < minimum:
            raise ConfigError(f"{self.prefix + name}={result} is below the minimum {minimum}")
        return result

    def get_bool(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{self.prefix + name}={value!r} is not a boolean")


MiB = 1024 * 1024


def listen_host(listen: str) -> str:
    """The host part of a gRPC listen address ("0.0.0.0:50051" -> "0.0.0.0", "[::1]:50051" -> "::1");
    loopback for addresses without one (unix sockets)."""
    if listen.startswith("unix:"):
        return "127.0.0.1"
    host = listen.rsplit(":", 1)[0] if ":" in listen else listen
    return host.removeprefix("[").removesuffix("]") or "127.0.0.1"


# Span exporters a service can be configured with (OTEL_TRACES_EXPORTER); "none" is tracing off.
TRACE_EXPORTERS = ("none", "otlp", "console")


@dataclass(frozen=True)
class TracingSettings:
    """OpenTelemetry tracing, read from the standard OTEL_* variables, so that they mean what they mean
    to every other OpenTelemetry SDK, the Collector's docs and the OpenTelemetry Operator's injection.
    One deliberate difference: tracing is OFF unless asked for (the spec's default exporter is `otlp`):
    OTEL_TRACES_EXPORTER=otlp|console, or an OTLP endpoint set, turns it on. The exporter and the SDK
    read the rest themselves (OTEL_EXPORTER_OTLP_*, OTEL_BSP_*, OTEL_TRACES_SAMPLER[_ARG],
    OTEL_RESOURCE_ATTRIBUTES, OTEL_PROPAGATORS)."""

    exporter: str = "none"
    # None: emomesh-<service>.
    service_name: str | None = None
    # Where OTLP spans go, as configured (for the start-up log; the exporter reads it itself).
    endpoint: str | None = None

    @property
    def enabled(self) -> bool:
        return self.exporter != "none"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TracingSettings:
        env = Env("OTEL_", environ)
        endpoint = env.get_optional_str("EXPORTER_OTLP_TRACES_ENDPOINT") or env.get_optional_str(
            "EXPORTER_OTLP_ENDPOINT"
        )
        exporter = env.get_str("TRACES_EXPORTER", "otlp" if endpoint else "none").lower()
        if exporter not in TRACE_EXPORTERS:
            raise ConfigError(f"OTEL_TRACES_EXPORTER={exporter!r} is not one of {', '.join(TRACE_EXPORTERS)}")
        if env.get_bool("SDK_DISABLED", False):
            exporter = "none"
        return cls(exporter, env.get_optional_str("SERVICE_NAME"), endpoint)


@dataclass(frozen=True)
class ServerSettings:
    """What every gRPC service needs, read from EMOMESH_<SERVICE>_* with shared fallbacks. Each
    service passes its own defaults for the memory limits (sized in docs/operations.md, "Memory")."""

    listen: str
    metrics_port: int
    grace_s: float
    # gRPC refuses a larger message from its length prefix, before reading it: keep it close to the
    # service's real input limit.
    max_message_bytes: int
    log_level: str
    # Request bytes all calls in progress may hold; past it, calls are refused (emomesh.admission).
    max_inflight_bytes: int = 64 * MiB
    # gRPC's own cap on calls in progress (health probes included); 0 = none.
    max_concurrent_rpcs: int = 0
    # How often readiness (Triton and the model, or fusion's modality services) is re-checked.
    readiness_interval_s: float = 1.0
    # Where /metrics listens: by default the host gRPC listens on, so a service kept on loopback
    # does not publish its metrics to the network.
    metrics_host: str = "127.0.0.1"
    # A second, plaintext port that serves only grpc.health.v1 (0: none), for probes that cannot
    # speak TLS (Kubernetes' native gRPC probes) when the gRPC port requires it.
    health_port: int = 0
    tls: ServerTls | None = None
    auth: TokenAuth | None = None
    tracing: TracingSettings = field(default_factory=TracingSettings)

    @classmethod
    def from_env(
        cls,
        service: str,
        default_port: int,
        environ: Mapping[str, str] | None = None,
        *,
        max_message_bytes: int = 32 * MiB,
        max_inflight_bytes: int = 64 * MiB,
    ) -> ServerSettings:
        # Imported here: emomesh.security reads its own settings with Env, defined in this module.
        from emomesh.security import ServerTls, TokenAuth

        env = Env(f"EMOMESH_{service.upper()}_", environ)
        shared = Env("EMOMESH_", environ)
        message = env.get_int("MAX_MESSAGE_BYTES", shared.get_int("MAX_MESSAGE_BYTES", max_message_bytes), minimum=1024)
        inflight = env.get_int("MAX_INFLIGHT_BYTES", max(max_inflight_bytes, message), minimum=1024)
        if inflight < message:
            # Otherwise a request of the largest allowed size could never be admitted.
            raise ConfigError(
                f"EMOMESH_{service.upper()}_MAX_INFLIGHT_BYTES={inflight} is below the message limit {message}"
            )
        listen = env.get_str("LISTEN", f"{LOOPBACK}:{default_port}")
        return cls(
            listen=listen,
            metrics_port=env.get_int("METRICS_PORT", default_port + METRICS_PORT_OFFSET, minimum=0),
            grace_s=env.get_float("GRACE_S", shared.get_float("GRACE_S", 5.0), minimum=0),
            max_message_bytes=message,
            max_inflight_bytes=inflight,
            max_concurrent_rpcs=env.get_int("MAX_CONCURRENT_RPCS", 0, minimum=0),
            log_level=shared.get_str("LOG_LEVEL", "INFO").upper(),
            readiness_interval_s=env.get_float("READINESS_INTERVAL_S", 1.0, minimum=0.05),
            metrics_host=env.get_str("METRICS_HOST", listen_host(listen)),
            health_port=env.get_int("HEALTH_PORT", shared.get_int("HEALTH_PORT", 0, minimum=0), minimum=0),
            tls=ServerTls.from_env(env, shared),
            auth=TokenAuth.from_env(env, shared),
            tracing=TracingSettings.from_env(environ),
        )


@dataclass(frozen=True)
class TritonSettings:
    """Where Triton is, how long one inference may take, and TLS towards it (None: plaintext)."""

    url: str
    timeout_s: float
    tls: ClientTls | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TritonSettings:
        from emomesh.security import ClientTls

        env = Env("EMOMESH_TRITON_", environ)
        return cls(
            url=env.get_str("URL", f"{LOOPBACK}:{TRITON_GRPC_PORT}"),
            timeout_s=env.get_float("TIMEOUT_S", 10.0, minimum=0.001),
            tls=ClientTls.from_env(env),
        )
