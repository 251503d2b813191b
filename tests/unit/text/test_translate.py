import pytest

from emomesh.config import ConfigError
from services.text.config import TranslatorSettings
from services.text.translate import LlmTranslator, NoTranslator, TranslationError, translator_from_settings


def test_no_endpoint_means_no_translator() -> None:
    translator = translator_from_settings(TranslatorSettings.from_env({}))
    assert isinstance(translator, NoTranslator) and not translator.available


async def test_no_translator_refuses_to_translate() -> None:
    with pytest.raises(TranslationError, match="no translator"):
        await NoTranslator().translate("你好", "zh")


def test_llm_translator_needs_an_endpoint_and_a_model() -> None:
    with pytest.raises(ConfigError, match="BASE_URL and _MODEL"):
        TranslatorSettings.from_env({"EMOMESH_TEXT_TRANSLATOR_BACKEND": "llm"})
    with pytest.raises(ConfigError, match="use 'llm' or 'none'"):
        TranslatorSettings.from_env({"EMOMESH_TEXT_TRANSLATOR_BACKEND": "deepl"})


async def test_unreachable_llm_endpoint_is_a_translation_error_not_a_crash() -> None:
    settings = TranslatorSettings.from_env(
        {
            # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
            "EMOMESH_TEXT_TRANSLATOR_BASE_URL": "http://127.0.0.1:9/v1",
            "EMOMESH_TEXT_TRANSLATOR_MODEL": "qwen2.5",
            "EMOMESH_TEXT_TRANSLATOR_TIMEOUT_S": "2",
        }
    )
    translator = translator_from_settings(settings)
    assert isinstance(translator, LlmTranslator) and translator.name == "llm:qwen2.5"
    try:
        with pytest.raises(TranslationError, match="translator failed: APIConnectionError"):
            await translator.translate("你好", "zh")
    finally:
        await translator.close()
