"""Gateway settings, read once from the environment (EMOMESH_GATEWAY_*)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from emomesh.config import ConfigError, Env, MiB, TracingSettings, listen_host
from emomesh.ports import LOOPBACK, METRICS_PORT_OFFSET, listen_port
from emomesh.security import ClientSecurity, read_token

DEFAULT_PORT = listen_port("gateway")
DEFAULT_STATIC_DIR = Path(__file__).resolve().parent / "static"
# The services the console reaches, in the order /readyz reports them. Fusion (Analyze, the live stream) and
# dialog (greetings, chat) are what the page needs; vision serves the page's fallback when the live stream
# is not available.
UPSTREAMS = ("fusion", "dialog", "vision")
REQUIRED_UPSTREAMS = ("fusion", "dialog")


@dataclass(frozen=True)
class Upstream:
    """One gRPC service the gateway calls: where it is (None: not configured) and how to reach it."""

    name: str
    address: str | None
    security: ClientSecurity = field(default_factory=ClientSecurity, repr=False)


@dataclass(frozen=True)
class GatewaySettings:
    listen: str
    metrics_port: int
    metrics_host: str
    grace_s: float
    log_level: str
    upstreams: Mapping[str, Upstream]
    # HTTPS towards browsers (a phone's camera needs a secure context); None: plain HTTP.
    tls_cert: Path | None
    tls_key: Path | None
    # A request body (JSON: an image and a recording as base64) larger than this is refused with 413.
    max_body_bytes: int
    # Body bytes all requests in progress may hold; past it, requests are refused with 429 before they are read.
    max_inflight_bytes: int
    # One WebSocket message of the live stream (a frame as base64 JSON).
    max_ws_message_bytes: int
    # Live streams bridged at once by this replica; fusion has its own limit behind it.
    max_streams: int
    # Deadline of one unary call (Analyze, Greeting...); the chat reply gets its own, longer one.
    call_timeout_s: float
    chat_timeout_s: float
    # /readyz asks the services' health at most this often (probes and every open page poll it).
    readiness_cache_s: float
    static_dir: Path
    tracing: TracingSettings = field(default_factory=TracingSettings)

    @property
    def host(self) -> str:
        return listen_host(self.listen)

    @property
    def port(self) -> int:
        try:
            return int(self.listen.rsplit(":", 1)[1])
        except (IndexError, ValueError):
            raise ConfigError(f"EMOMESH_GATEWAY_LISTEN={self.listen!r} is not HOST:PORT") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        env = Env("EMOMESH_GATEWAY_", environ)
        shared = Env("EMOMESH_", environ)
        listen = env.get_str("LISTEN", f"{LOOPBACK}:{DEFAULT_PORT}")
        # One TLS setting and token for all services (EMOMESH_GATEWAY_OUTBOUND_*); a service's own token
        # (EMOMESH_GATEWAY_<SERVICE>_TOKEN) wins over the shared one, as for fusion.
        outbound = ClientSecurity.from_env(Env("EMOMESH_GATEWAY_OUTBOUND_", environ))
        upstreams = {
            name: Upstream(
                name,
                env.get_optional_str(f"{name.upper()}_ADDR"),
                replace(outbound, token=read_token(env, f"{name.upper()}_TOKEN") or outbound.token),
            )
            for name in UPSTREAMS
        }
        cert, key = env.get_optional_str("TLS_CERT"), env.get_optional_str("TLS_KEY")
        if (cert is None) != (key is None):
            raise ConfigError("EMOMESH_GATEWAY_TLS_CERT and EMOMESH_GATEWAY_TLS_KEY go together")
        for name, path in (("TLS_CERT", cert), ("TLS_KEY", key)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"EMOMESH_GATEWAY_{name}={path}: no such file")
        static_dir = Path(env.get_str("STATIC_DIR", str(DEFAULT_STATIC_DIR)))
        if not (static_dir / "index.html").is_file():
            raise ConfigError(f"EMOMESH_GATEWAY_STATIC_DIR={static_dir}: no index.html there")
        settings = cls(
            listen=listen,
            metrics_port=env.get_int("METRICS_PORT", DEFAULT_PORT + METRICS_PORT_OFFSET, minimum=0),
            metrics_host=env.get_str("METRICS_HOST", listen_host(listen)),
            grace_s=env.get_float("GRACE_S", shared.get_float("GRACE_S", 5.0), minimum=0),
            log_level=shared.get_str("LOG_LEVEL", "INFO").upper(),
            upstreams=upstreams,
            tls_cert=None if cert is None else Path(cert),
            tls_key=None if key is None else Path(key),
            # Fusion takes a 21 MiB message; as base64 inside JSON that is 28 MiB.
            max_body_bytes=env.get_int("MAX_BODY_BYTES", 28 * MiB, minimum=1024),
            max_inflight_bytes=env.get_int("MAX_INFLIGHT_BYTES", 64 * MiB, minimum=1024),
            max_ws_message_bytes=env.get_int("MAX_WS_MESSAGE_BYTES", 4 * MiB, minimum=1024),
            max_streams=env.get_int("MAX_STREAMS", 8, minimum=1),
            call_timeout_s=env.get_float("CALL_TIMEOUT_S", 30.0, minimum=0.01),
            chat_timeout_s=env.get_float("CHAT_TIMEOUT_S", 120.0, minimum=0.01),
            readiness_cache_s=env.get_float("READINESS_CACHE_S", 1.0, minimum=0.0),
            static_dir=static_dir,
            tracing=TracingSettings.from_env(environ),
        )
        settings.port  # noqa: B018 -- fails fast on a listen address without a port
        if settings.max_inflight_bytes < settings.max_body_bytes:
            # Otherwise a body of the largest allowed size could never be admitted.
            raise ConfigError(
                f"EMOMESH_GATEWAY_MAX_INFLIGHT_BYTES={settings.max_inflight_bytes} is below the body limit "
                f"{settings.max_body_bytes}"
            )
        return settings
