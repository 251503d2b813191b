"""JSON logging with a request id carried in a context variable, so every line logged while
serving one RPC (in the servicer, the Triton client, a fan-out) names that RPC, and the trace and
span ids when the call is traced (emomesh.tracing), so a log line leads to its trace."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import uuid

from emomesh.tracing import current_ids, trace_metadata

REQUEST_ID_HEADER = "x-request-id"
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def get_request_id() -> str:
    return _request_id.get()


def set_request_id(request_id: str) -> contextvars.Token[str]:
    return _request_id.set(request_id)


def reset_request_id(token: contextvars.Token[str]) -> None:
    _request_id.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, service, trace and span ids
    (inside a traced call) and extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": get_request_id(),
        }
        ids = current_ids()
        if ids is not None:
            payload["trace_id"], payload["span_id"] = ids
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Routes all logging to stderr as JSON lines. Idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def outbound_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata for calls to other services, so one request id, and the trace, follow a request
    across services (the W3C trace context of the current span; nothing when tracing is off)."""
    return ((REQUEST_ID_HEADER, get_request_id()), *trace_metadata())
