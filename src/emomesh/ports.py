"""The documented ports, in one place: each service's gRPC port (its Prometheus metrics on that port +
METRICS_PORT_OFFSET), the console gateway's HTTP port (likewise), Triton's and Redis's. The services'
settings, the embedded stack, the command line and the service image's entry point read them from here;
k8s/, deploy/prometheus/ and the docs spell them out, and tests/unit/deploy checks that they agree.

    python -m emomesh.ports vision      # prints 50051 (the service image's build step asks this way)
    python -m emomesh.ports gateway     # prints 8080
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import MappingProxyType

# In the order the contract lists them (and the stack starts them).
SERVICE_PORTS: Mapping[str, int] = MappingProxyType(
    {"vision": 50051, "audio": 50052, "text": 50053, "fusion": 50054, "dialog": 50055}
)
METRICS_PORT_OFFSET = 1000
# The console gateway (services/gateway) speaks HTTP + WebSocket to browsers, not gRPC, so it is not one of
# SERVICE_PORTS (the services every gRPC client command and health check goes through).
GATEWAY_PORT = 8080
TRITON_HTTP_PORT = 8000
TRITON_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002
REDIS_PORT = 6379
LOOPBACK = "127.0.0.1"


def service_port(service: str) -> int:
    """The documented gRPC port of a service; ValueError for a name that is not a service."""
    try:
        return SERVICE_PORTS[service]
    except KeyError:
        raise ValueError(f"unknown service {service!r}: one of {' '.join(SERVICE_PORTS)}") from None


def listen_port(name: str) -> int:
    """The documented listening port of a service or of the gateway; ValueError for any other name."""
    return GATEWAY_PORT if name == "gateway" else service_port(name)


def metrics_port(service: str) -> int:
    return listen_port(service) + METRICS_PORT_OFFSET


def local_address(service: str) -> str:
    """Where a service of the embedded stack (`emomesh up`) listens by default."""
    return f"{LOOPBACK}:{service_port(service)}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m emomesh.ports SERVICE|gateway", file=sys.stderr)
        return 2
    try:
        print(listen_port(args[0]))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
