"""A small OpenAI-compatible chat endpoint for tests: stdlib http.server in a thread, serving
POST /v1/chat/completions streamed (server-sent events) and not streamed. It records every request
it received, and can be told to fail, or to stream slowly and notice when the client goes away."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "stub-model"
PROMPT_TOKENS = 123
COMPLETION_TOKENS = 7


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class OpenAIStub:
    reply: str = "I hear you, and that sounds like a lot. What happened next?"
    # Answer this HTTP status instead of a completion, to the first `fail_times` requests (None: all).
    fail_status: int | None = None
    fail_times: int | None = None
    # Stream the reply word by word this many times over, with a pause between chunks (cancellation tests).
    slow_repeats: int = 0
    slow_delay_s: float = 0.05
    # Drop the connection after this many deltas, without finishing the reply.
    cut_after: int | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    client_went_away: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                stub._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> OpenAIStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def deltas(self) -> list[str]:
        """How the reply is split into streamed chunks: word by word, spaces kept."""
        words = self.reply.split(" ")
        return [w + " " for w in words[:-1]] + [words[-1]]

    def _should_fail(self) -> bool:
        with self._lock:
            if self.fail_status is None:
                return False
            if self.fail_times is None:
                return True
            failed_so_far = len(self.requests) - 1
            return failed_so_far < self.fail_times

    def _handle(self, http: BaseHTTPRequestHandler) -> None:
        length = int(http.headers.get("Content-Length", "0"))
        body = json.loads(http.rfile.read(length) or b"{}")
        with self._lock:
            self.requests.append(RecordedRequest(http.path, {k.lower(): v for k, v in http.headers.items()}, body))
        if not http.path.endswith("/chat/completions"):
            self._json(http, 404, {"error": {"message": f"no route {http.path}", "type": "invalid_request_error"}})
        elif self._should_fail():
            assert self.fail_status is not None
            self._json(http, self.fail_status, {"error": {"message": "stub failure", "type": "server_error"}})
        elif body.get("stream"):
            self._stream(http, include_usage=bool((body.get("stream_options") or {}).get("include_usage")))
        else:
            self._json(
                http,
                200,
                {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "created": 0,
                    "model": MODEL,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": self.reply}, "finish_reason": "stop"}
                    ],
                    "usage": self._usage(),
                },
            )

    @staticmethod
    def _usage() -> dict[str, int]:
        return {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }

    @staticmethod
    def _json(http: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        http.send_response(status)
        http.send_header("Content-Type", "application/json")
        http.send_header("Content-Length", str(len(data)))
        http.end_headers()
        http.wfile.write(data)

    def _stream(self, http: BaseHTTPRequestHandler, include_usage: bool) -> None:
        http.send_response(200)
        http.send_header("Content-Type", "text/event-stream")
        http.send_header("Cache-Control", "no-cache")
        http.end_headers()

        def event(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0, "model": MODEL}
            http.wfile.write(f"data: {json.dumps({**chunk, 'choices': choices, **extra})}\n\n".encode())
            http.wfile.flush()

        try:
            deltas = self.deltas() * max(1, self.slow_repeats)
            for i, text in enumerate(deltas):
                if i == self.cut_after:
                    return  # HTTP/1.0: returning closes the connection mid-reply
                delta = {"role": "assistant", "content": text} if i == 0 else {"content": text}
                event([{"index": 0, "delta": delta, "finish_reason": None}])
                if self.slow_repeats:
                    time.sleep(self.slow_delay_s)
            event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
            if include_usage:
                event([], usage=self._usage())
            http.wfile.write(b"data: [DONE]\n\n")
            http.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.client_went_away.set()
