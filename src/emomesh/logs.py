"""JSON logging with a request id carried in a context variable, so every line logged while
serving one RPC (in the servicer, the Triton client, a fan-out) names that RPC, and the trace and
span ids when the call is traced (emomesh.tracing), so a log line leads to its trace; and OutageLog,
which logs a dependency's outage without one line per failed call."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable

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


class OutageLog:
    """Logs the failures of one dependency (Redis, Triton, an HTTP endpoint) at a bounded rate.

    While the dependency answers, it logs nothing. The first failure logs one warning, "<what>
    unavailable", with the error; while it stays down, at most one "<what> still unavailable" warning
    per interval_s, with the number of failures since the previous line and the last error (lazily, on
    a failure: no timer runs); the first success after that logs one info line, "<what> available
    again", with how long it was down and how many calls failed. Count every failure in a metric
    besides: the log tells that and when, the metric how many.

    Thread-safe; success() costs one attribute read while nothing is failing."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.what, self.interval_s, self.clock = logger, what, interval_s, clock
        self.down = False
        self._lock = threading.Lock()
        self._since = 0.0  # when the outage began
        self._last_line = 0.0  # when its last warning was logged
        self._failures = 0  # failed calls in this outage
        self._unreported = 0  # failed calls since the last warning

    def failure(self, error: BaseException | str, **fields: object) -> None:
        """Call on every failed call; fields (the operation, say) go into the logged line."""
        described = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
        extra: dict[str, object]
        with self._lock:
            now = self.clock()
            self._failures += 1
            if not self.down:
                self.down, self._since, self._last_line, self._unreported = True, now, now, 0
                message, extra = f"{self.what} unavailable", {"error": described}
            elif now - self._last_line >= self.interval_s:
                self._unreported += 1
                message = f"{self.what} still unavailable"
                extra = {
                    "failures": self._unreported,
                    "down_s": round(now - self._since, 1),
                    "last_error": described,
                }
                self._last_line, self._unreported = now, 0
            else:
                self._unreported += 1
                return
        self.logger.warning(message, extra={"fields": {**extra, **fields}})

    def success(self) -> None:
        """Call on every successful call."""
        if not self.down:
            return
        with self._lock:
            if not self.down:
                return
            self.down = False
            down_s, failures = self.clock() - self._since, self._failures
            self._failures = self._unreported = 0
        self.logger.info(
            f"{self.what} available again", extra={"fields": {"down_s": round(down_s, 1), "failures": failures}}
        )
