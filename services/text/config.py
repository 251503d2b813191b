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
# The model that reads non-English text (multilingual-e5-small fine-tuned by services.text.train_e5),
# its tokenizer (which adds e5's `query: ` prefix itself) and the length it was trained with.
DEFAULT_MULTILINGUAL_MODEL = "text_e5_emotion"
DEFAULT_MULTILINGUAL_TOKENIZER = PROJECT_ROOT / "services" / "text" / "assets" / "e5_tokenizer.json"
DEFAULT_MULTILINGUAL_MAX_TOKENS = 128
# What reads text that is not English (EMOMESH_TEXT_NON_ENGLISH): the multilingual model, or the
# configured translator followed by the English model.
NON_ENGLISH_CHOICES = ("multilingual", "translate")


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
class MultilingualSettings:
    """The second model, for languages other than English."""

    model_name: str
    tokenizer_path: Path
    max_tokens: int


@dataclass(frozen=True)
class TextSettings:
    server: ServerSettings
    triton: TritonSettings
    translator: TranslatorSettings
    model_name: str
    tokenizer_path: Path
    # Tokens the model reads (special tokens included); longer texts are cut and flagged truncated.
    max_tokens: int
    # None when EMOMESH_TEXT_MULTILINGUAL_MODEL is empty: non-English text is then translated, or read
    # by the English model and flagged unreliable.
    multilingual: MultilingualSettings | None
    # "multilingual" or "translate" (NON_ENGLISH_CHOICES).
    non_english: str
    # Texts above this many UTF-8 bytes are refused (RESOURCE_EXHAUSTED); below it they are truncated.
    max_text_bytes: int
    max_batch_texts: int
    # Earlier turns one request may send as conversation context (the model reads the newest that fit).
    max_context_turns: int
    # Reliability reported for text read natively, translated, and not readable (not translated or
    # no words at all). Fusion multiplies its confidence in the text modality by this.
    reliability_translated: float
    reliability_unreadable: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TextSettings:
        env = Env("EMOMESH_TEXT_", environ)
        max_text_bytes = env.get_int("MAX_TEXT_BYTES", 4 * MiB, minimum=1)
        translator = TranslatorSettings.from_env(environ)
        # Unlike other variables, set but empty means something here: no multilingual model.
        multilingual_model = env.environ.get("EMOMESH_TEXT_MULTILINGUAL_MODEL", DEFAULT_MULTILINGUAL_MODEL).strip()
        multilingual = (
            MultilingualSettings(
                model_name=multilingual_model,
                tokenizer_path=Path(env.get_str("MULTILINGUAL_TOKENIZER", str(DEFAULT_MULTILINGUAL_TOKENIZER))),
                max_tokens=env.get_int("MULTILINGUAL_MAX_TOKENS", DEFAULT_MULTILINGUAL_MAX_TOKENS, minimum=8),
            )
            if multilingual_model
            else None
        )
        non_english = env.get_str("NON_ENGLISH", NON_ENGLISH_CHOICES[0]).lower()
        if non_english not in NON_ENGLISH_CHOICES:
            raise ConfigError(f"EMOMESH_TEXT_NON_ENGLISH={non_english!r}: use 'multilingual' or 'translate'")
        if non_english == "translate" and translator.backend == "none":
            raise ConfigError(
                "EMOMESH_TEXT_NON_ENGLISH=translate needs a translator: set EMOMESH_TEXT_TRANSLATOR_BASE_URL and _MODEL"
            )
        return cls(
            # One text at its limit, plus room for the other fields (a batch shares the same message).
            server=ServerSettings.from_env(
                "text", DEFAULT_PORT, environ, max_message_bytes=max_text_bytes + MiB, max_inflight_bytes=16 * MiB
            ),
            triton=TritonSettings.from_env(environ),
            translator=translator,
            model_name=env.get_str("MODEL", DEFAULT_MODEL),
            tokenizer_path=Path(env.get_str("TOKENIZER", str(DEFAULT_TOKENIZER))),
            max_tokens=env.get_int("MAX_TOKENS", 64, minimum=8),
            multilingual=multilingual,
            non_english=non_english,
            max_text_bytes=max_text_bytes,
            max_batch_texts=env.get_int("MAX_BATCH_TEXTS", 256, minimum=1),
            max_context_turns=env.get_int("MAX_CONTEXT_TURNS", 50, minimum=0),
            reliability_translated=env.get_float("RELIABILITY_TRANSLATED", 0.8, minimum=0.0),
            reliability_unreadable=env.get_float("RELIABILITY_UNREADABLE", 0.2, minimum=0.0),
        )
