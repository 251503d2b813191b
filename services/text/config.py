"""Text service settings, read once from the environment (EMOMESH_TEXT_*)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from emomesh.config import ConfigError, Env, MiB, ServerSettings, TritonSettings
from emomesh.paths import PROJECT_ROOT, model_file
from emomesh.ports import service_port

DEFAULT_PORT = service_port("text")
DEFAULT_TOKENIZER = PROJECT_ROOT / "services" / "text" / "assets" / "tokenizer.json"
# The Triton model the service calls by default, and its ONNX file (written by services.text.export,
# run in-process by services.text.evaluate and the benches).
DEFAULT_MODEL = "text_minilm_emotion"
DEFAULT_MODEL_FILE = model_file(DEFAULT_MODEL)


@dataclass(frozen=True)
class TranslatorSettings:
    # "llm" (an OpenAI-compatible endpoint) or "none".
    backend: str
    base_url: str | None
    api_key: str
    model: str | None
    timeout_s: float
    # Longer texts are cut before translation: the classifier reads 64 tokens anyway.
    max_chars: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TranslatorSettings:
        env = Env("EMOMESH_TEXT_TRANSLATOR_", environ)
        base_url = env.get_optional_str("BASE_URL")
        # Default: the LLM when an endpoint is configured, else none (the text service still works).
        backend = env.get_str("BACKEND", "llm" if base_url else "none").lower()
        if backend not in {"llm", "none"}:
            raise ConfigError(f"EMOMESH_TEXT_TRANSLATOR_BACKEND={backend!r}: use 'llm' or 'none'")
        model = env.get_optional_str("MODEL")
        if backend == "llm" and (base_url is None or model is None):
            raise ConfigError("the llm translator needs EMOMESH_TEXT_TRANSLATOR_BASE_URL and _MODEL")
        return cls(
            backend=backend,
            base_url=base_url,
            # Local OpenAI-compatible servers (vLLM, Ollama) accept any key; the SDK requires one.
            api_key=env.get_str("API_KEY", "unused"),
            model=model,
            timeout_s=env.get_float("TIMEOUT_S", 5.0, minimum=0.01),
            max_chars=env.get_int("MAX_CHARS", 2000, minimum=16),
        )


@dataclass(frozen=True)
class TextSettings:
    server: ServerSettings
    triton: TritonSettings
    translator: TranslatorSettings
    model_name: str
    tokenizer_path: Path
    # Tokens the model reads (special tokens included); longer texts are cut and flagged truncated.
    max_tokens: int
    # Texts above this many UTF-8 bytes are refused (RESOURCE_EXHAUSTED); below it they are truncated.
    max_text_bytes: int
    max_batch_texts: int
    # Reliability reported for text read natively, translated, and not readable (not translated or
    # no words at all). Fusion multiplies its confidence in the text modality by this.
    reliability_translated: float
    reliability_unreadable: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TextSettings:
        env = Env("EMOMESH_TEXT_", environ)
        max_text_bytes = env.get_int("MAX_TEXT_BYTES", 4 * MiB, minimum=1)
        return cls(
            # One text at its limit, plus room for the other fields (a batch shares the same message).
            server=ServerSettings.from_env(
                "text", DEFAULT_PORT, environ, max_message_bytes=max_text_bytes + MiB, max_inflight_bytes=16 * MiB
            ),
            triton=TritonSettings.from_env(environ),
            translator=TranslatorSettings.from_env(environ),
            model_name=env.get_str("MODEL", DEFAULT_MODEL),
            tokenizer_path=Path(env.get_str("TOKENIZER", str(DEFAULT_TOKENIZER))),
            max_tokens=env.get_int("MAX_TOKENS", 64, minimum=8),
            max_text_bytes=max_text_bytes,
            max_batch_texts=env.get_int("MAX_BATCH_TEXTS", 256, minimum=1),
            reliability_translated=env.get_float("RELIABILITY_TRANSLATED", 0.8, minimum=0.0),
            reliability_unreadable=env.get_float("RELIABILITY_UNREADABLE", 0.2, minimum=0.0),
        )
