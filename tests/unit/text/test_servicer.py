"""The servicer's routing (native / multilingual / translated / untranslated / unreadable) and
validation, with fake models and fake translators; the real models and Triton are exercised in
tests/integration/test_text.py."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, cast

import grpc
import numpy as np
import pytest

from emomesh.errors import InvalidInput, TooLarge
from emomesh.labels import LABELS, NUM_LABELS
from emotion.common.v1 import common_pb2
from emotion.text.v1 import text_pb2
from services.text.config import DEFAULT_TOKENIZER, TextSettings
from services.text.model import LanguageReliability, TextScores
from services.text.servicer import TextReader, TextServicer
from services.text.tokenize import TextTokenizer, TokenBatch
from services.text.translate import NoTranslator, TranslationError, Translator


class FakeModel:
    """Says `label` for any text; records the token batches it was given."""

    def __init__(self, name: str = "fake", label: str = "happy", reliability: str = "zh=0.9,*=0.5") -> None:
        self.batches: list[TokenBatch] = []
        self.label = label
        self.info = common_pb2.ModelInfo(name=name, version="1")
        self.language_reliability = LanguageReliability.parse(reliability)
        self.context_tokens = 0

    async def classify(self, batch: TokenBatch) -> np.ndarray:
        self.batches.append(batch)
        probs = np.full((len(batch.input_ids), NUM_LABELS), 0.05, dtype=np.float32)
        probs[:, LABELS.index(self.label)] = 0.7
        return probs

    async def score(self, batch: TokenBatch) -> TextScores:
        # Valence/arousal only from a model named "english" (as only the English model has them).
        probs = await self.classify(batch)
        dims = np.tile(np.array([[0.6, 0.3]], np.float32), (len(probs), 1)) if self.info.name == "english" else None
        return TextScores(probs, dims)


class FakeTranslator:
    name = "fake"
    available = True

    def __init__(self, reply: str | None) -> None:
        self.reply = reply
        self.calls: list[tuple[str, str]] = []

    async def translate(self, text: str, source_language: str) -> str:
        self.calls.append((text, source_language))
        if self.reply is None:
            raise TranslationError("translator timed out after 5 s")
        return self.reply

    async def close(self) -> None:
        return None


LIMITS = {"EMOMESH_TEXT_MAX_TEXT_BYTES": "1000", "EMOMESH_TEXT_MAX_BATCH_TEXTS": "3"}


@pytest.fixture
def settings() -> TextSettings:
    """Without the multilingual model: the English model reads everything, translated or not."""
    return TextSettings.from_env({**LIMITS, "EMOMESH_TEXT_MULTILINGUAL_MODEL": ""})


@pytest.fixture
def multilingual_settings() -> TextSettings:
    return TextSettings.from_env(LIMITS)


# The servicer never touches its context: errors are raised, the interceptor turns them into statuses.
NO_CONTEXT = cast(grpc.aio.ServicerContext, None)


def make(
    settings: TextSettings, translator: Translator | None = None, context_tokens: int = 0
) -> tuple[TextServicer, FakeModel]:
    model = FakeModel()
    tokenizer = TextTokenizer(settings.tokenizer_path, settings.max_tokens, context_tokens)
    return TextServicer(settings, TextReader(model, tokenizer), translator or NoTranslator()), model


@dataclass
class TwoModels:
    servicer: TextServicer
    english: FakeModel
    multilingual: FakeModel


def make_two(settings: TextSettings, translator: Translator | None = None) -> TwoModels:
    """English model says happy, the multilingual one sad. The multilingual reader uses the MiniLM
    tokenizer with a shorter maximum, so which tokenizer read a text shows in its token count (the
    e5 tokenizer is a model artifact the unit tests do not need)."""
    assert settings.multilingual is not None
    english = FakeModel("english", "happy")
    multilingual = FakeModel("multilingual", "sad", "zh=0.9,de=0.6,*=0.4")
    servicer = TextServicer(
        settings,
        TextReader(english, TextTokenizer(settings.tokenizer_path, settings.max_tokens)),
        translator or NoTranslator(),
        TextReader(multilingual, TextTokenizer(DEFAULT_TOKENIZER, 16)),
    )
    return TwoModels(servicer, english, multilingual)


async def analyze(servicer: TextServicer, **fields: Any) -> text_pb2.AnalyzeTextResponse:
    return await servicer.AnalyzeText(text_pb2.AnalyzeTextRequest(**fields), NO_CONTEXT)


async def test_english_goes_straight_to_the_model(settings: TextSettings) -> None:
    translator = FakeTranslator("unused")
    servicer, model = make(settings, translator)
    response = await analyze(servicer, text="What a wonderful surprise party!")
    assert response.language == "en" and not response.translated and response.reliability == 1.0
    assert response.distribution.top == common_pb2.EMOTION_HAPPY
    assert response.note == "" and translator.calls == []
    assert response.tokens == model.batches[0].tokens[0] > 2


async def test_chinese_is_translated_and_the_translation_is_classified(settings: TextSettings) -> None:
    translator = FakeTranslator("I am very happy today")
    servicer, model = make(settings, translator)
    response = await analyze(servicer, text="我今天很高兴")
    assert translator.calls == [("我今天很高兴", "zh")]
    assert response.language == "zh" and response.translated
    assert response.translated_text == "I am very happy today"
    assert response.reliability == pytest.approx(0.8)
    assert "machine translation" in response.note
    # The model saw the English tokens: [CLS] i am very happy today [SEP].
    assert model.batches[0].tokens == [7]


async def test_without_translator_the_text_is_flagged_not_translated_and_unreliable(settings: TextSettings) -> None:
    servicer, _ = make(settings)
    response = await analyze(servicer, text="我今天很高兴")
    assert response.language == "zh" and not response.translated and response.translated_text == ""
    assert response.reliability == pytest.approx(0.2)
    assert "not translated" in response.note and "no translator" in response.note


async def test_a_failing_translator_degrades_like_no_translator(settings: TextSettings) -> None:
    servicer, _ = make(settings, FakeTranslator(None))
    response = await analyze(servicer, text="Das ist wirklich eine schreckliche Nachricht für uns alle")
    assert response.language == "de" and not response.translated
    assert response.reliability == pytest.approx(0.2) and "timed out" in response.note


async def test_language_hint_overrides_detection(settings: TextSettings) -> None:
    translator = FakeTranslator("hello")
    servicer, _ = make(settings, translator)
    response = await analyze(servicer, text="ciao", language_hint="it")
    assert response.language == "it" and response.translated and translator.calls == [("ciao", "it")]
    with pytest.raises(InvalidInput, match="ISO 639-1"):
        await analyze(servicer, text="ciao", language_hint="italiano!")


async def test_emoji_only_is_classified_but_marked_unreadable(settings: TextSettings) -> None:
    servicer, _ = make(settings, FakeTranslator("unused"))
    response = await analyze(servicer, text="😀😂🎉")
    assert response.language == "und" and response.reliability == pytest.approx(0.2)
    assert "no words" in response.note and not response.translated


async def test_mixed_scripts_lower_reliability_by_the_unread_share(settings: TextSettings) -> None:
    servicer, _ = make(settings)
    response = await analyze(servicer, text="so happy 快乐快乐")
    assert response.language == "en"
    assert 0.2 <= response.reliability < 1.0 and "mixed scripts" in response.note


async def test_utf8_bytes_are_decoded_or_refused(settings: TextSettings) -> None:
    servicer, _ = make(settings)
    ok = await analyze(servicer, utf8="I'm thrilled ☺".encode())
    assert ok.language == "en"
    with pytest.raises(InvalidInput, match=r"not valid UTF-8: invalid byte 0xff at offset 3"):
        await analyze(servicer, utf8=b"abc\xff\xfe")


async def test_empty_missing_and_oversize_text_are_refused(settings: TextSettings) -> None:
    servicer, _ = make(settings)
    with pytest.raises(InvalidInput, match="text is empty"):
        await analyze(servicer, text="   \n ")
    with pytest.raises(InvalidInput, match="set `text` or `utf8`"):
        await analyze(servicer)
    with pytest.raises(TooLarge, match="the limit is 1000 bytes"):
        await analyze(servicer, text="é" * 600)  # 1200 bytes
    with pytest.raises(TooLarge, match="the limit is 1000 bytes"):
        await analyze(servicer, utf8=b"a" * 1001)


async def test_long_text_is_truncated_with_a_flag_and_a_note(settings: TextSettings) -> None:
    servicer, _ = make(replace(settings, max_text_bytes=10_000))
    response = await analyze(servicer, text="happy " * 1000)
    assert response.truncated and response.tokens == settings.max_tokens
    assert f"first {settings.max_tokens} tokens" in response.note


async def test_batch_is_classified_in_one_model_call_and_errors_name_the_item(settings: TextSettings) -> None:
    servicer, model = make(settings)
    request = text_pb2.AnalyzeTextsRequest(
        texts=[text_pb2.AnalyzeTextRequest(text="good"), text_pb2.AnalyzeTextRequest(text="a much longer sentence")]
    )
    response = await servicer.AnalyzeTexts(request, NO_CONTEXT)
    assert len(response.results) == 2 and len(model.batches) == 1
    assert model.batches[0].input_ids.shape[0] == 2
    # A bad text gets an error of its own; the others are analysed (one model call for the good ones).
    bad = text_pb2.AnalyzeTextsRequest(
        texts=[
            text_pb2.AnalyzeTextRequest(text="fine"),
            text_pb2.AnalyzeTextRequest(),
            text_pb2.AnalyzeTextRequest(utf8=b"caf\xc3"),
        ]
    )
    model.batches.clear()
    mixed = await servicer.AnalyzeTexts(bad, NO_CONTEXT)
    assert [r.HasField("error") for r in mixed.results] == [False, True, True]
    assert mixed.results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] == 3
    assert mixed.results[1].error.message.startswith("texts[1]: set `text` or `utf8`")
    assert mixed.results[2].error.message.startswith("texts[2]: ") and "UTF-8" in mixed.results[2].error.message
    assert not mixed.results[1].HasField("distribution") and not mixed.results[1].language
    assert mixed.results[0].HasField("distribution")
    assert len(model.batches) == 1 and model.batches[0].input_ids.shape[0] == 1
    # All bad: every result is an error, and no model call.
    model.batches.clear()
    all_bad = await servicer.AnalyzeTexts(
        text_pb2.AnalyzeTextsRequest(texts=[text_pb2.AnalyzeTextRequest()] * 2), NO_CONTEXT
    )
    assert all(r.HasField("error") for r in all_bad.results) and model.batches == []
    # One text alone keeps its own status.
    with pytest.raises(InvalidInput, match=r"set `text` or `utf8`"):
        await servicer.AnalyzeText(text_pb2.AnalyzeTextRequest(), NO_CONTEXT)
    with pytest.raises(InvalidInput, match="texts is empty"):
        await servicer.AnalyzeTexts(text_pb2.AnalyzeTextsRequest(), NO_CONTEXT)
    many = text_pb2.AnalyzeTextsRequest(texts=[text_pb2.AnalyzeTextRequest(text="x")] * 4)
    with pytest.raises(TooLarge, match="the limit is 3"):
        await servicer.AnalyzeTexts(many, NO_CONTEXT)


async def test_other_languages_go_to_the_multilingual_model_with_its_reliability(
    multilingual_settings: TextSettings,
) -> None:
    models = make_two(multilingual_settings)
    chinese = await analyze(models.servicer, text="我今天很高兴")
    assert chinese.language == "zh" and not chinese.translated and chinese.translated_text == ""
    assert chinese.distribution.top == common_pb2.EMOTION_SAD and chinese.model.name == "multilingual"
    assert chinese.reliability == pytest.approx(0.9)
    assert chinese.note == "read by the multilingual model (multilingual)"
    german = await analyze(models.servicer, text="Das ist wirklich eine schreckliche Nachricht für uns alle")
    assert german.language == "de" and german.reliability == pytest.approx(0.6)
    # A language the parameter does not list gets its `*`.
    french = await analyze(models.servicer, text="Je suis vraiment très heureux de vous voir aujourd'hui")
    assert french.language == "fr" and french.reliability == pytest.approx(0.4)
    english = await analyze(models.servicer, text="What a wonderful surprise party!")
    assert english.model.name == "english" and english.reliability == 1.0 and english.note == ""
    assert len(models.english.batches) == 1 and len(models.multilingual.batches) == 3


async def test_language_hint_chooses_the_model(multilingual_settings: TextSettings) -> None:
    models = make_two(multilingual_settings)
    hinted = await analyze(models.servicer, text="ok", language_hint="zh-CN")
    assert hinted.language == "zh" and hinted.model.name == "multilingual"
    assert hinted.reliability == pytest.approx(0.9)
    english = await analyze(models.servicer, text="我今天很高兴", language_hint="en")
    assert english.language == "en" and english.model.name == "english"


async def test_a_mixed_batch_reads_each_model_once_and_keeps_the_order(multilingual_settings: TextSettings) -> None:
    models = make_two(replace(multilingual_settings, max_batch_texts=10))
    texts = ["I love this so much!", "我今天很高兴", "What a wonderful day", "今天天气很好", "😀😂"]
    request = text_pb2.AnalyzeTextsRequest(texts=[text_pb2.AnalyzeTextRequest(text=t) for t in texts])
    response = await models.servicer.AnalyzeTexts(request, NO_CONTEXT)
    assert [r.language for r in response.results] == ["en", "zh", "en", "zh", "und"]
    names = ["english", "multilingual", "english", "multilingual", "english"]
    assert [r.model.name for r in response.results] == names
    assert [r.distribution.top for r in response.results] == [
        common_pb2.EMOTION_SAD if name == "multilingual" else common_pb2.EMOTION_HAPPY for name in names
    ]
    # Valence and arousal where the reading model has them (here the English one), unset elsewhere.
    assert [r.HasField("dimensions") for r in response.results] == [name == "english" for name in names]
    assert response.results[0].dimensions.valence == pytest.approx(0.6)
    assert response.results[0].dimensions.arousal == pytest.approx(0.3)
    # One call per model, with its texts in request order.
    assert [b.input_ids.shape[0] for b in models.english.batches] == [3]
    assert [b.input_ids.shape[0] for b in models.multilingual.batches] == [2]
    assert [r.tokens for r in response.results] == [
        *models.english.batches[0].tokens[:1],
        models.multilingual.batches[0].tokens[0],
        models.english.batches[0].tokens[1],
        models.multilingual.batches[0].tokens[1],
        models.english.batches[0].tokens[2],
    ]


async def test_an_english_only_batch_does_not_call_the_multilingual_model(multilingual_settings: TextSettings) -> None:
    models = make_two(multilingual_settings)
    request = text_pb2.AnalyzeTextsRequest(texts=[text_pb2.AnalyzeTextRequest(text="good")] * 2)
    await models.servicer.AnalyzeTexts(request, NO_CONTEXT)
    assert len(models.english.batches) == 1 and models.multilingual.batches == []


async def test_truncation_uses_the_reading_models_maximum(multilingual_settings: TextSettings) -> None:
    models = make_two(replace(multilingual_settings, max_text_bytes=10_000))
    response = await analyze(models.servicer, text="高兴" * 100)
    assert response.truncated and response.tokens == 16 and "first 16 tokens" in response.note


async def test_by_default_the_multilingual_model_is_preferred_to_a_translator(
    multilingual_settings: TextSettings,
) -> None:
    translator = FakeTranslator("I am very happy today")
    models = make_two(multilingual_settings, translator)
    response = await analyze(models.servicer, text="我今天很高兴")
    assert response.model.name == "multilingual" and not response.translated and translator.calls == []


async def test_translate_first_when_asked_and_fall_back_to_the_multilingual_model(
    multilingual_settings: TextSettings,
) -> None:
    settings = replace(multilingual_settings, non_english="translate")
    translator = FakeTranslator("I am very happy today")
    translated = await analyze(make_two(settings, translator).servicer, text="我今天很高兴")
    assert translated.translated and translated.model.name == "english"
    assert translated.reliability == pytest.approx(0.8) and translator.calls == [("我今天很高兴", "zh")]
    fallback = await analyze(make_two(settings, FakeTranslator(None)).servicer, text="我今天很高兴")
    assert not fallback.translated and fallback.model.name == "multilingual"
    assert fallback.reliability == pytest.approx(0.9)
    assert fallback.note == (
        "not translated (translator timed out after 5 s); read by the multilingual model (multilingual)"
    )


CONVERSATION = [
    text_pb2.ConversationTurn(speaker="user", text="My dog died last week."),
    text_pb2.ConversationTurn(speaker="assistant", text="I am so sorry. How are you holding up?"),
]


async def test_a_context_model_reads_the_turns_after_the_text(settings: TextSettings) -> None:
    servicer, model = make(settings, context_tokens=32)
    response = await analyze(servicer, text="Not great.", speaker="user", context=CONVERSATION)
    alone = await analyze(servicer, text="Not great.")
    assert response.context_tokens > 0 and alone.context_tokens == 0
    assert response.tokens == alone.tokens and "context" not in response.note
    read, single = model.batches
    assert read.input_ids.shape[1] == single.input_ids.shape[1] + response.context_tokens + 1
    tokenizer = TextTokenizer(settings.tokenizer_path, settings.max_tokens, 32)
    expected = tokenizer.encode(
        ["Not great."], ["other: I am so sorry. How are you holding up? | me: My dog died last week."]
    )
    assert read.input_ids.tolist() == expected.input_ids.tolist()


async def test_a_model_trained_on_single_texts_reads_the_text_alone_and_says_so(settings: TextSettings) -> None:
    servicer, model = make(settings)
    response = await analyze(servicer, text="Not great.", speaker="user", context=CONVERSATION)
    assert response.context_tokens == 0
    assert "conversation context not read: fake reads texts alone" in response.note
    assert model.batches[0].input_ids.shape[1] == response.tokens


async def test_context_is_not_read_with_a_translated_text(settings: TextSettings) -> None:
    servicer, model = make(settings, FakeTranslator("I am very sad"), context_tokens=32)
    response = await analyze(servicer, text="我今天很难过", speaker="user", context=CONVERSATION)
    assert response.translated and response.context_tokens == 0
    assert "conversation context not read" in response.note
    assert model.batches[0].input_ids.shape[1] == response.tokens


async def test_too_many_turns_or_bytes_of_context_are_refused(settings: TextSettings) -> None:
    servicer, _ = make(replace(settings, max_context_turns=2), context_tokens=32)
    with pytest.raises(TooLarge, match="context has 3 turns; the limit is 2"):
        await analyze(servicer, text="ok", context=[*CONVERSATION, CONVERSATION[0]])
    huge = text_pb2.ConversationTurn(speaker="user", text="a" * 1001)
    with pytest.raises(TooLarge, match="context is 1001 bytes; the limit is 1000 bytes"):
        await analyze(servicer, text="ok", context=[huge])
    # In a batch the item alone fails; its neighbour is read with its context.
    batch = text_pb2.AnalyzeTextsRequest(
        texts=[
            text_pb2.AnalyzeTextRequest(text="ok", context=[huge]),
            text_pb2.AnalyzeTextRequest(text="Not great.", speaker="user", context=CONVERSATION),
        ]
    )
    results = (await servicer.AnalyzeTexts(batch, NO_CONTEXT)).results
    assert results[0].error.message == "texts[0]: context is 1001 bytes; the limit is 1000 bytes"
    assert results[1].context_tokens > 0
