"""Pluggable translation to English for text the classifier cannot read (it was trained on English).

- `LlmTranslator`: any OpenAI-compatible chat endpoint (vLLM, Ollama, a hosted API) through the
  `openai` SDK's AsyncOpenAI, with a per-call timeout and no SDK retries (the caller's deadline wins).
- `NoTranslator`: nothing configured. The service then classifies the original text but says so
  (translated=false, a note) and lowers reliability, so fusion can discount the result.

A new backend implements the `Translator` protocol and is chosen in `translator_from_settings`."""

from __future__ import annotations

from typing import Protocol

from services.text.config import TranslatorSettings

SYSTEM_PROMPT = (
    "You translate text into English for an emotion classifier. Keep the tone, intensity, emoji and "
    "swearing of the original. Reply with the English translation only, no quotes, no explanations."
)


class TranslationError(Exception):
    """The translator was configured but could not translate this text (timeout, error, empty reply)."""


class Translator(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def available(self) -> bool: ...

    async def translate(self, text: str, source_language: str) -> str:
        """English translation of text; raises TranslationError."""
        ...

    async def close(self) -> None: ...


class NoTranslator:
    name = "none"
    available = False

    async def translate(self, text: str, source_language: str) -> str:
        raise TranslationError("no translator is configured")

    async def close(self) -> None:
        return None


class LlmTranslator:
    available = True

    def __init__(self, base_url: str, api_key: str, model: str, timeout_s: float, max_chars: int) -> None:
        from openai import AsyncOpenAI

        self.model = model
        self.timeout_s = timeout_s
        self.max_chars = max_chars
        # max_retries=0: a retry would silently double the latency budget the caller set.
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)

    @property
    def name(self) -> str:
        return f"llm:{self.model}"

    async def translate(self, text: str, source_language: str) -> str:
        import openai

        try:
            reply = await self._client.chat.completions.create(
                model=self.model,
                messages=[
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": f"Language: {source_language}\n\n{text[: self.max_chars]}"},
                ],
                temperature=0.0,
                max_tokens=512,
                timeout=self.timeout_s,
            )
        except openai.APITimeoutError as exc:
            raise TranslationError(f"translator timed out after {self.timeout_s:g} s") from exc
        except openai.APIError as exc:
            raise TranslationError(f"translator failed: {type(exc).__name__}") from exc
        content = (reply.choices[0].message.content or "").strip() if reply.choices else ""
        if not content:
            raise TranslationError("translator returned an empty translation")
        return content

    async def close(self) -> None:
        await self._client.close()


def translator_from_settings(settings: TranslatorSettings) -> Translator:
    if settings.backend == "llm":
        assert settings.base_url is not None and settings.model is not None
        return LlmTranslator(
            settings.base_url, settings.api_key, settings.model, settings.timeout_s, settings.max_chars
        )
    return NoTranslator()
