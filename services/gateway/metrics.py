"""The gateway's Prometheus metrics (served on EMOMESH_GATEWAY_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from emomesh.metrics import LATENCY_BUCKETS

# route: the route's pattern ("/api/v1/fusion/analyze", "/static"), never the raw path, so that the label
# set stays small whatever browsers ask for; "unmatched" for paths without a route.
HTTP_REQUESTS = Counter(
    "emomesh_gateway_http_requests_total", "HTTP requests answered by the gateway.", ["route", "status"]
)
HTTP_LATENCY = Histogram(
    "emomesh_gateway_http_latency_seconds",
    "Time to answer an HTTP request (for the chat, until its reply has streamed).",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
WEBSOCKETS_ACTIVE = Gauge("emomesh_gateway_websockets_active", "Live streams bridged now (WebSocket to AnalyzeStream).")
WS_MESSAGES = Counter(
    "emomesh_gateway_ws_messages_total", "WebSocket messages of the live streams, by direction.", ["direction"]
)
UPSTREAM_ERRORS = Counter(
    "emomesh_gateway_upstream_errors_total",
    "gRPC calls to the services that ended with an error, by method and status code.",
    ["method", "code"],
)
