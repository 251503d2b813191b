"""TextSettings: the multilingual model's settings and the choice for non-English text."""

from __future__ import annotations

import pytest

from emomesh.config import ConfigError
from services.text.config import (
    DEFAULT_MULTILINGUAL_MAX_TOKENS,
    DEFAULT_MULTILINGUAL_MODEL,
    DEFAULT_MULTILINGUAL_TOKENIZER,
    MultilingualSettings,
    TextSettings,
)

TRANSLATOR = {"EMOMESH_TEXT_TRANSLATOR_BASE_URL": "http://127.0.0.1:9/v1", "EMOMESH_TEXT_TRANSLATOR_MODEL": "qwen"}


def test_by_default_the_multilingual_model_reads_other_languages() -> None:
    settings = TextSettings.from_env({})
    assert settings.multilingual == MultilingualSettings(
        DEFAULT_MULTILINGUAL_MODEL, DEFAULT_MULTILINGUAL_TOKENIZER, DEFAULT_MULTILINGUAL_MAX_TOKENS
    )
    assert (DEFAULT_MULTILINGUAL_MODEL, DEFAULT_MULTILINGUAL_MAX_TOKENS) == ("text_e5_emotion", 128)
    assert DEFAULT_MULTILINGUAL_TOKENIZER.name == "e5_tokenizer.json"
    assert settings.non_english == "multilingual"


def test_the_multilingual_model_is_configurable_and_an_empty_name_turns_it_off() -> None:
    settings = TextSettings.from_env(
        {
            "EMOMESH_TEXT_MULTILINGUAL_MODEL": "text_xlmr_emotion",
            "EMOMESH_TEXT_MULTILINGUAL_TOKENIZER": "/models/xlmr.json",
            "EMOMESH_TEXT_MULTILINGUAL_MAX_TOKENS": "256",
        }
    )
    assert settings.multilingual is not None
    assert (settings.multilingual.model_name, str(settings.multilingual.tokenizer_path)) == (
        "text_xlmr_emotion",
        "/models/xlmr.json",
    )
    assert settings.multilingual.max_tokens == 256
    for off in ("", "  "):
        assert TextSettings.from_env({"EMOMESH_TEXT_MULTILINGUAL_MODEL": off}).multilingual is None
    with pytest.raises(ConfigError, match="EMOMESH_TEXT_MULTILINGUAL_MAX_TOKENS=4 is below the minimum 8"):
        TextSettings.from_env({"EMOMESH_TEXT_MULTILINGUAL_MAX_TOKENS": "4"})


def test_translate_first_needs_a_translator() -> None:
    settings = TextSettings.from_env({**TRANSLATOR, "EMOMESH_TEXT_NON_ENGLISH": "Translate"})
    assert settings.non_english == "translate" and settings.translator.backend == "llm"
    with pytest.raises(ConfigError, match="EMOMESH_TEXT_NON_ENGLISH=translate needs a translator"):
        TextSettings.from_env({"EMOMESH_TEXT_NON_ENGLISH": "translate"})
    with pytest.raises(ConfigError, match="EMOMESH_TEXT_NON_ENGLISH='deepl': use 'multilingual' or 'translate'"):
        TextSettings.from_env({"EMOMESH_TEXT_NON_ENGLISH": "deepl"})
