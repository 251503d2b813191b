"""Reading settings from the environment. Each service declares a frozen dataclass and builds it
with these helpers; a missing or malformed variable fails at start-up, not at the first request."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


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
    # Request bytes all calls in progress may hold; past it, calls are refused (emomesh.admission).
    max_inflight_bytes: int
    # gRPC's own cap on calls in progress (health probes included); 0 = none.
    max_concurrent_rpcs: int
    log_level: str

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
        env = Env(f"EMOMESH_{service.upper()}_", environ)
        shared = Env("EMOMESH_", environ)
        message = env.get_int("MAX_MESSAGE_BYTES", shared.get_int("MAX_MESSAGE_BYTES", max_message_bytes), minimum=1024)
        inflight = env.get_int("MAX_INFLIGHT_BYTES", max(max_inflight_bytes, message), minimum=1024)
        if inflight < message:
            # Otherwise a request of the largest allowed size could never be admitted.
            raise ConfigError(
                f"EMOMESH_{service.upper()}_MAX_INFLIGHT_BYTES={inflight} is below the message limit {message}"
            )
        return cls(
            listen=env.get_str("LISTEN", f"127.0.0.1:{default_port}"),
            metrics_port=env.get_int("METRICS_PORT", default_port + 1000, minimum=0),
            grace_s=env.get_float("GRACE_S", shared.get_float("GRACE_S", 5.0), minimum=0),
            max_message_bytes=message,
            max_inflight_bytes=inflight,
            max_concurrent_rpcs=env.get_int("MAX_CONCURRENT_RPCS", 0, minimum=0),
            log_level=shared.get_str("LOG_LEVEL", "INFO").upper(),
        )


@dataclass(frozen=True)
class TritonSettings:
    """Where Triton is and how long one inference may take."""

    url: str
    timeout_s: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TritonSettings:
        env = Env("EMOMESH_TRITON_", environ)
        return cls(url=env.get_str("URL", "127.0.0.1:8001"), timeout_s=env.get_float("TIMEOUT_S", 10.0, minimum=0.001))
