"""Prometheus metrics shared by every service, defined once. A service's own metrics module adds
only what is specific to it, with the helpers here.

Names follow Prometheus conventions: `emomesh_` prefix, base units (seconds), `_total` counters."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from emomesh.memory import container_memory_limit

# Buckets from 1 ms to 30 s: covers a cached Triton call as well as a long video or an LLM reply.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

RPC_LATENCY = Histogram(
    "emomesh_rpc_duration_seconds",
    "Server-side gRPC call latency.",
    ["service", "method", "code"],
    buckets=LATENCY_BUCKETS,
)
RPC_IN_FLIGHT = Gauge("emomesh_rpc_in_flight", "gRPC calls being served.", ["service", "method"])
INFLIGHT_REQUEST_BYTES = Gauge(
    "emomesh_inflight_request_bytes", "Request message bytes held by the calls being served.", ["service"]
)
ADMISSION_REFUSED = Counter(
    "emomesh_admission_refused_total",
    "Calls refused (RESOURCE_EXHAUSTED) because their request would pass the in-flight bytes limit.",
    ["service", "method"],
)
TRITON_LATENCY = Histogram(
    "emomesh_triton_request_duration_seconds",
    "Latency of inference calls from a service to Triton, by model and outcome.",
    ["model", "outcome"],
    buckets=LATENCY_BUCKETS,
)
MODALITY_AVAILABLE = Gauge(
    "emomesh_modality_available",
    "1 when the last call to a modality service succeeded, 0 when it failed or timed out.",
    ["modality"],
)
MODALITY_RESULTS = Counter(
    "emomesh_modality_results_total", "Per-modality outcomes inside Analyze calls.", ["modality", "status"]
)
LLM_LATENCY = Histogram(
    "emomesh_llm_request_duration_seconds",
    "Latency of LLM calls, by operation and outcome.",
    ["operation", "outcome"],
    buckets=LATENCY_BUCKETS,
)
LLM_TOKENS = Counter("emomesh_llm_tokens_total", "Tokens used by LLM calls.", ["kind"])
REDIS_ERRORS = Counter("emomesh_redis_errors_total", "Failed Redis operations.", ["operation"])


# Beside prometheus_client's own process_resident_memory_bytes: how close a pod is to being OOM-killed
# (alert EmomeshMemoryNearLimit).
MEMORY_LIMIT = Gauge("emomesh_memory_limit_bytes", "The container's memory limit (cgroup); 0 when it has none.")


def start_metrics_server(port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> None:
    """Serves /metrics on its own port; port 0 disables it (tests start many services)."""
    if port:
        MEMORY_LIMIT.set(container_memory_limit() or 0)
        start_http_server(port, addr=addr, registry=registry)
