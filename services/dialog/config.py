"""Dialog service settings, read once from the environment (EMOMESH_DIALOG_*, EMOMESH_REDIS_*)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from emomesh.config import Env, MiB, ServerSettings
from emomesh.ports import LOOPBACK, REDIS_PORT, service_port
from emomesh.security import ClientSecurity, read_token

DEFAULT_PORT = service_port("dialog")


@dataclass(frozen=True)
class LlmSettings:
    """An OpenAI-compatible chat endpoint. No API key means the service runs offline (fallback replies)."""

    base_url: str
    api_key: str | None
    model: str
    # Per HTTP attempt: connect, and the wait for each streamed chunk.
    timeout_s: float
    # The whole reply, retries included; a stalled stream cannot hold a call longer than this.
    total_timeout_s: float
    # Extra attempts after a connection error, timeout, 429 or 5xx, only before the first token.
    max_retries: int
    # Backoff before retry n (0-based) is backoff_s * 2**n.
    backoff_s: float
    temperature: float
    max_reply_tokens: int

    @property
    def configured(self) -> bool:
        return self.api_key is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LlmSettings:
        env = Env("EMOMESH_DIALOG_LLM_", environ)
        return cls(
            base_url=env.get_str("BASE_URL", "https://api.deepseek.com"),
            api_key=env.get_optional_str("API_KEY"),
            model=env.get_str("MODEL", "deepseek-chat"),
            timeout_s=env.get_float("TIMEOUT_S", 20.0, minimum=0.001),
            total_timeout_s=env.get_float("TOTAL_TIMEOUT_S", 60.0, minimum=0.001),
            max_retries=env.get_int("MAX_RETRIES", 2, minimum=0),
            backoff_s=env.get_float("BACKOFF_S", 0.5, minimum=0.0),
            temperature=env.get_float("TEMPERATURE", 0.7, minimum=0.0),
            max_reply_tokens=env.get_int("MAX_REPLY_TOKENS", 400, minimum=16),
        )


@dataclass(frozen=True)
class HistorySettings:
    redis_url: str
    # Every Redis call is bounded by this, so a hung Redis costs a reply its history, not its answer.
    redis_timeout_s: float
    # Sessions idle longer than this are forgotten.
    ttl_s: int
    # Turns (user and assistant messages) read into one prompt, newest first...
    window_turns: int
    # ...and only as many of them as fit this estimated token budget.
    token_budget: int
    # Turns kept per session in Redis; older ones are trimmed on write so a session cannot grow forever.
    max_stored_turns: int
    # Redis AUTH password when the URL carries none (EMOMESH_REDIS_PASSWORD, from a Kubernetes Secret).
    redis_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HistorySettings:
        env = Env("EMOMESH_DIALOG_HISTORY_", environ)
        redis = Env("EMOMESH_REDIS_", environ)
        return cls(
            redis_url=redis.get_str("URL", f"redis://{LOOPBACK}:{REDIS_PORT}/0"),
            redis_password=redis.get_optional_str("PASSWORD"),
            redis_timeout_s=env.get_float("REDIS_TIMEOUT_S", 1.0, minimum=0.001),
            ttl_s=env.get_int("TTL_S", 7 * 24 * 3600, minimum=1),
            window_turns=env.get_int("WINDOW_TURNS", 20, minimum=0),
            token_budget=env.get_int("TOKEN_BUDGET", 2000, minimum=0),
            max_stored_turns=env.get_int("MAX_STORED_TURNS", 200, minimum=2),
        )


@dataclass(frozen=True)
class TextEmotionSettings:
    """The text service that reads a message's emotion when a ChatRequest carries none."""

    # None: not configured (EMOMESH_DIALOG_TEXT_ADDR unset); replies are then written without an emotion.
    address: str | None
    # A slow text service costs the reply its emotion, not its answer.
    timeout_s: float
    # The newest history turns sent as conversation context (the model reads those that fit its budget).
    context_turns: int
    # TLS and bearer token towards it (EMOMESH_DIALOG_OUTBOUND_*, EMOMESH_DIALOG_TEXT_TOKEN).
    security: ClientSecurity = field(default_factory=ClientSecurity, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TextEmotionSettings:
        env = Env("EMOMESH_DIALOG_", environ)
        outbound = ClientSecurity.from_env(Env("EMOMESH_DIALOG_OUTBOUND_", environ))
        return cls(
            address=env.get_optional_str("TEXT_ADDR"),
            timeout_s=env.get_float("TEXT_TIMEOUT_S", 2.0, minimum=0.001),
            context_turns=env.get_int("TEXT_CONTEXT_TURNS", 6, minimum=0),
            security=replace(outbound, token=read_token(env, "TEXT_TOKEN") or outbound.token),
        )


@dataclass(frozen=True)
class DialogSettings:
    server: ServerSettings
    llm: LlmSettings
    history: HistorySettings
    text: TextEmotionSettings
    max_message_chars: int
    max_custom_persona_chars: int
    max_clues: int
    max_clue_chars: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DialogSettings:
        env = Env("EMOMESH_DIALOG_", environ)
        return cls(
            # Requests are a few kB of text (message, persona, clues).
            server=ServerSettings.from_env(
                "dialog", DEFAULT_PORT, environ, max_message_bytes=MiB, max_inflight_bytes=16 * MiB
            ),
            llm=LlmSettings.from_env(environ),
            history=HistorySettings.from_env(environ),
            text=TextEmotionSettings.from_env(environ),
            max_message_chars=env.get_int("MAX_MESSAGE_CHARS", 4000, minimum=1),
            max_custom_persona_chars=env.get_int("MAX_CUSTOM_PERSONA_CHARS", 1000, minimum=1),
            max_clues=env.get_int("MAX_CLUES", 8, minimum=1),
            max_clue_chars=env.get_int("MAX_CLUE_CHARS", 4000, minimum=1),
        )
