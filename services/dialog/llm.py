"""The LLM as the dialog service sees it: any OpenAI-compatible chat endpoint (DeepSeek by default),
through the official `openai` SDK.

Retries are ours, not the SDK's (its max_retries is 0): a failed attempt is retried with exponential
backoff only before the first token, because tokens already streamed to the caller cannot be taken
back. Every attempt has a per-request timeout and the whole call a total one. When the gRPC caller
goes away, the servicer's task is cancelled and the HTTP stream is closed in `finally`, so the
endpoint stops generating."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import openai
from openai import AsyncOpenAI
from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from emomesh.metrics import LLM_LATENCY, LLM_TOKENS
from emomesh.tracing import (
    GEN_AI_INPUT_TOKENS,
    GEN_AI_OPERATION,
    GEN_AI_OUTPUT_TOKENS,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    end_client_span,
    start_client_span,
)
from services.dialog.config import LlmSettings
from services.dialog.metrics import LLM_RETRIES
from services.dialog.prompts import Message, estimate_tokens

log = logging.getLogger(__name__)

T = TypeVar("T")

# HTTP statuses worth another attempt: rate limiting and server-side failures.
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}

# Seconds of the caller's deadline kept for building and sending the fallback and storing the turn.
RESERVE_S = 0.5


class LlmUnavailable(Exception):
    """No reply could be obtained; `reason` is safe to show the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LlmInterrupted(LlmUnavailable):
    """The reply broke off after some tokens were already streamed."""


@dataclass
class LlmResult:
    text: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"LLM endpoint answered HTTP {exc.status_code}"
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return "LLM endpoint timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "LLM endpoint unreachable"
    return f"LLM call failed ({type(exc).__name__})"


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRYABLE_STATUS
    return isinstance(exc, openai.APIConnectionError | TimeoutError)  # APITimeoutError is a connection error


class ChatLlm(Protocol):
    """What the dialog servicer needs from the LLM: LlmClient, or a fake in unit tests."""

    @property
    def configured(self) -> bool:
        """False when no endpoint is configured: every call then raises LlmUnavailable."""
        ...

    @property
    def model(self) -> str: ...

    def stream_chat(
        self, messages: Sequence[Message], result: LlmResult, caller_limit_s: float | None = None
    ) -> AsyncGenerator[str, None]:
        """Yields the reply's text deltas and fills result; raises LlmUnavailable or LlmInterrupted."""
        ...

    async def complete(
        self, messages: Sequence[Message], operation: str, caller_limit_s: float | None = None
    ) -> LlmResult: ...


class LlmClient:
    def __init__(self, settings: LlmSettings, client: AsyncOpenAI | None = None) -> None:
        self.settings = settings
        self.client = client
        if client is None and settings.api_key is not None:
            self.client = AsyncOpenAI(
                api_key=settings.api_key,
                base_url=settings.base_url,
                timeout=settings.timeout_s,
                max_retries=0,
            )

    @property
    def configured(self) -> bool:
        return self.client is not None

    @property
    def model(self) -> str:
        return self.settings.model

    def _remaining(self, deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return remaining

    async def _with_retries(self, start_call: Callable[[], Awaitable[T]], deadline: float) -> T:
        """Runs start_call, retrying retryable failures with exponential backoff within the deadline."""
        attempt = 0
        while True:
            try:
                return await asyncio.wait_for(start_call(), min(self.settings.timeout_s, self._remaining(deadline)))
            except (openai.APIError, TimeoutError) as exc:
                backoff = self.settings.backoff_s * 2**attempt
                if not is_retryable(exc) or attempt >= self.settings.max_retries:
                    raise LlmUnavailable(describe_error(exc)) from exc
                if time.monotonic() + backoff >= deadline:
                    raise LlmUnavailable(describe_error(exc)) from exc
                attempt += 1
                LLM_RETRIES.inc()
                log.info(
                    "retrying LLM call",
                    extra={"fields": {"attempt": attempt, "backoff_s": backoff, "error": describe_error(exc)}},
                )
                await asyncio.sleep(backoff)

    def _request(self, messages: Sequence[Message], **extra: Any) -> dict[str, Any]:
        return {
            "model": self.settings.model,
            "messages": cast(Any, list(messages)),
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_reply_tokens,
            "timeout": self.settings.timeout_s,
            **extra,
        }

    def _account(self, result: LlmResult, messages: Sequence[Message]) -> None:
        """Fills in token counts the endpoint did not report, then records them."""
        if not result.prompt_tokens:
            result.prompt_tokens = sum(estimate_tokens(m["content"]) for m in messages)
        if not result.completion_tokens:
            result.completion_tokens = estimate_tokens(result.text)
        LLM_TOKENS.labels("prompt").inc(result.prompt_tokens)
        LLM_TOKENS.labels("completion").inc(result.completion_tokens)

    def _span(self, operation: str) -> Span:
        """The trace span of one call (all its attempts); not current, as stream_chat yields while it runs."""
        return start_client_span(f"llm {operation}", {GEN_AI_OPERATION: "chat", GEN_AI_REQUEST_MODEL: self.model})

    @staticmethod
    def _end_span(span: Span, outcome: str, result: LlmResult | None) -> None:
        usage: dict[str, AttributeValue] = {}
        if result is not None:
            usage = {
                GEN_AI_RESPONSE_MODEL: result.model,
                GEN_AI_INPUT_TOKENS: result.prompt_tokens,
                GEN_AI_OUTPUT_TOKENS: result.completion_tokens,
            }
        end_client_span(span, outcome, usage)

    def _time_limit(self, caller_limit_s: float | None) -> float:
        """The total time this call may take: the configured limit, or less when the gRPC caller's
        deadline is nearer, keeping RESERVE_S so the fallback can still reach the caller in time."""
        if caller_limit_s is None:
            return self.settings.total_timeout_s
        return max(0.0, min(self.settings.total_timeout_s, caller_limit_s - RESERVE_S))

    async def stream_chat(
        self, messages: Sequence[Message], result: LlmResult, caller_limit_s: float | None = None
    ) -> AsyncGenerator[str, None]:
        """Yields the reply's text deltas; fills result (text, model, usage) as it goes.
        Raises LlmUnavailable before the first delta, LlmInterrupted after it."""
        if self.client is None:
            raise LlmUnavailable("no LLM API key configured")
        client = self.client
        start = time.monotonic()
        deadline = start + self._time_limit(caller_limit_s)
        outcome = "error"
        span = self._span("chat")
        try:
            stream = await self._with_retries(
                lambda: client.chat.completions.create(
                    **self._request(messages, stream=True, stream_options={"include_usage": True})
                ),
                deadline,
            )
            finished = False
            try:
                chunks = aiter(stream)
                while True:
                    try:
                        chunk = await asyncio.wait_for(
                            anext(chunks), min(self.settings.timeout_s, self._remaining(deadline))
                        )
                    except StopAsyncIteration:
                        break
                    result.model = chunk.model or result.model
                    if chunk.usage is not None:
                        result.prompt_tokens = chunk.usage.prompt_tokens
                        result.completion_tokens = chunk.usage.completion_tokens
                    if chunk.choices and chunk.choices[0].finish_reason is not None:
                        finished = True
                    delta = chunk.choices[0].delta.content if chunk.choices else None
                    if delta:
                        result.text += delta
                        yield delta
            except Exception as exc:
                # Anything the transport raises mid-stream (SDK errors, HTTP read errors, timeouts):
                # the reply is cut, whatever the cause.
                raise (LlmInterrupted if result.text else LlmUnavailable)(describe_error(exc)) from exc
            finally:
                await stream.close()
            if not result.text:
                raise LlmUnavailable("LLM endpoint returned an empty reply")
            if not finished:
                # The connection ended without a finish_reason: the reply was cut, not completed.
                raise LlmInterrupted("LLM stream ended before the reply was finished")
            outcome = "ok"
            self._account(result, messages)
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        finally:
            LLM_LATENCY.labels("chat", outcome).observe(time.monotonic() - start)
            self._end_span(span, outcome, result)

    async def complete(
        self, messages: Sequence[Message], operation: str, caller_limit_s: float | None = None
    ) -> LlmResult:
        """One non-streamed reply (greetings, analyses)."""
        if self.client is None:
            raise LlmUnavailable("no LLM API key configured")
        client = self.client
        start = time.monotonic()
        outcome = "error"
        result: LlmResult | None = None
        span = self._span(operation)
        try:
            completion = await self._with_retries(
                lambda: client.chat.completions.create(**self._request(messages, stream=False)),
                start + self._time_limit(caller_limit_s),
            )
            text = (completion.choices[0].message.content or "").strip() if completion.choices else ""
            if not text:
                raise LlmUnavailable("LLM endpoint returned an empty reply")
            result = LlmResult(text=text, model=completion.model)
            if completion.usage is not None:
                result.prompt_tokens = completion.usage.prompt_tokens
                result.completion_tokens = completion.usage.completion_tokens
            self._account(result, messages)
            outcome = "ok"
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            LLM_LATENCY.labels(operation, outcome).observe(time.monotonic() - start)
            self._end_span(span, outcome, result)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
