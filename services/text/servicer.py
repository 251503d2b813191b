"""TextService: decode -> detect language -> route to a model (translating first when configured) ->
tokenize -> classify on Triton.

Two models can read text: the English one (EMOMESH_TEXT_MODEL, MiniLM) and, when configured, the
multilingual one (EMOMESH_TEXT_MULTILINGUAL_MODEL, multilingual-e5-small), each with its own tokenizer.
How a text is read (the `route`), and the reliability the response carries for it:
- native: English (detected or hinted) goes straight to the English model; reliability 1.
- multilingual: another language, read by the multilingual model in the original; reliability per
  language from the model's Triton config (`emomesh_language_reliability`, model.LanguageReliability).
  The default for non-English text (EMOMESH_TEXT_NON_ENGLISH=multilingual).
- translated: another language, translated to English by the configured translator; the English model
  classifies the translation; reliability `reliability_translated` (0.8: tone is partly lost). Used
  with EMOMESH_TEXT_NON_ENGLISH=translate, or when there is a translator and no multilingual model.
  A failed translation falls back to the multilingual model when there is one.
- untranslated: another language, no multilingual model, and no translator (or it failed): the English
  model still runs on the original text, but the response says translated=false, explains it in
  `note` and carries `reliability_unreadable` (0.2), so fusion can discount a guess the model cannot
  really make.
- unreadable: no letters at all (emoji only, digits, punctuation): language "und", same low reliability.

In a batch, each model gets one call with its texts (both at once when both are needed); the answers
keep the request's order.

Conversation context (request.context, services/text/context.py) is read only by a model trained with it
(its `emomesh_context_tokens`), and only with text that model reads in the original (native and
unreadable routes): a translated text's context is in another language than the text. Otherwise the text
is read alone and `note` says why.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from emomesh.errors import InvalidInput, TooLarge
from emomesh.labels import distribution_from_probs
from emotion.common.v1 import common_pb2
from emotion.text.v1 import text_pb2, text_pb2_grpc
from services.text.config import TextSettings
from services.text.context import context_text
from services.text.language import UNDETERMINED, Detection, detect_language, letter_scripts, normalize_hint
from services.text.metrics import (
    BATCH_ITEM_ERRORS,
    CONTEXT_TOKENS_PER_TEXT,
    TEXTS_BY_ROUTE,
    TOKENS_PER_TEXT,
    TRANSLATION_SECONDS,
    TRUNCATED_TEXTS,
)
from services.text.model import TextClassifier, TextScores
from services.text.tokenize import TextTokenizer, TokenBatch
from services.text.translate import TranslationError, Translator

NATIVE_LANGUAGE = "en"
# Routes (the `route` label of emomesh_text_texts_total): see the module docstring.
NATIVE = "native"
MULTILINGUAL = "multilingual"
TRANSLATED = "translated"
UNTRANSLATED = "untranslated"
UNREADABLE = "unreadable"
# A text in another language before it is routed (never reported).
_NOT_ENGLISH = "not_english"


@dataclass(frozen=True)
class TextReader:
    """A model with the tokenizer (and maximum length) it was trained with."""

    model: TextClassifier
    tokenizer: TextTokenizer

    async def read(self, texts: list[str], contexts: list[str] | None = None) -> tuple[TokenBatch, TextScores]:
        batch = await asyncio.to_thread(self.tokenizer.encode, texts, contexts)
        return batch, await self.model.score(batch)


@dataclass
class _Reading:
    """One text on its way through the pipeline."""

    text: str
    language: str
    mixed_scripts: bool
    route: str = NATIVE
    model_text: str = ""
    translated_text: str = ""
    reliability: float = 1.0
    notes: list[str] = field(default_factory=list)
    # The conversation before the text, as the model reads it (context.context_text); "" for none.
    context: str = ""


def decode_text(request: text_pb2.AnalyzeTextRequest, max_bytes: int) -> str:
    """The request's text as str, refusing a missing body, oversize or invalid UTF-8 and empty text."""
    body = request.WhichOneof("body")
    if body is None:
        raise InvalidInput("set `text` or `utf8`")
    if body == "utf8":
        size = len(request.utf8)
        if size > max_bytes:
            raise TooLarge(f"text is {size} bytes; the limit is {max_bytes} bytes")
        try:
            text = request.utf8.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"utf8 is not valid UTF-8: invalid byte 0x{request.utf8[exc.start]:02x} at offset {exc.start}"
            ) from exc
    else:
        text = request.text
        # A str field holds at most 4 bytes per character: only long strings need the exact count.
        if len(text) * 4 > max_bytes and len(text.encode("utf-8")) > max_bytes:
            raise TooLarge(f"text is {len(text.encode('utf-8'))} bytes; the limit is {max_bytes} bytes")
    text = text.strip()
    if not text:
        raise InvalidInput("text is empty")
    return text


def decode_context(request: text_pb2.AnalyzeTextRequest, max_turns: int, max_bytes: int) -> str:
    """The request's earlier turns as the model reads them, refusing more turns or bytes than allowed."""
    turns = request.context
    if len(turns) > max_turns:
        raise TooLarge(f"context has {len(turns)} turns; the limit is {max_turns}")
    size = sum(len(turn.text.encode("utf-8")) for turn in turns)
    if size > max_bytes:
        raise TooLarge(f"context is {size} bytes; the limit is {max_bytes} bytes")
    return context_text(turns, request.speaker)


def _detect(text: str, hint: str) -> Detection:
    try:
        hinted = normalize_hint(hint)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    detection = detect_language(text)
    if hinted is None:
        return detection
    return Detection(hinted, detection.script, detection.mixed_scripts, detection.letters)


class TextServicer(text_pb2_grpc.TextServiceServicer):
    def __init__(
        self,
        settings: TextSettings,
        english: TextReader,
        translator: Translator,
        multilingual: TextReader | None = None,
    ) -> None:
        self.settings = settings
        self.english = english
        self.translator = translator
        self.multilingual = multilingual
        # Translate first when asked to, or when the translator is all there is for other languages.
        self.translates_first = translator.available and (settings.non_english == "translate" or multilingual is None)

    def _read(self, request: text_pb2.AnalyzeTextRequest) -> _Reading:
        """CPU-bound part (decoding, language detection); runs in a worker thread."""
        text = decode_text(request, self.settings.max_text_bytes)
        detection = _detect(text, request.language_hint)
        reading = _Reading(text, detection.language, detection.mixed_scripts, model_text=text)
        reading.context = decode_context(request, self.settings.max_context_turns, self.settings.max_text_bytes)
        if detection.letters == 0:
            reading.language = UNDETERMINED
            reading.route = UNREADABLE
            reading.reliability = self.settings.reliability_unreadable
            reading.notes.append("no words to read (only emoji, digits or punctuation): the emotion is a guess")
        elif detection.language == NATIVE_LANGUAGE and detection.mixed_scripts:
            # English with words in another script: the model reads the English part only.
            scripts = letter_scripts(text[:2000])
            share = scripts["latin"] / max(1, sum(scripts.values()))
            reading.reliability = max(self.settings.reliability_unreadable, round(share, 2))
            reading.notes.append("mixed scripts: only the Latin-script words are read by the model")
        elif detection.language != NATIVE_LANGUAGE:
            reading.route = _NOT_ENGLISH
        return reading

    async def _route_not_english(self, reading: _Reading) -> None:
        if reading.route != _NOT_ENGLISH:
            return
        if not self.translates_first:
            self._without_translation(reading, None)
            return
        start = time.perf_counter()
        try:
            translation = await self.translator.translate(reading.text, reading.language)
        except TranslationError as exc:
            TRANSLATION_SECONDS.labels("error").observe(time.perf_counter() - start)
            self._without_translation(reading, str(exc))
            return
        TRANSLATION_SECONDS.labels("ok").observe(time.perf_counter() - start)
        reading.route = TRANSLATED
        reading.model_text = reading.translated_text = translation
        reading.reliability = self.settings.reliability_translated
        reading.notes.append(
            f"classified from a machine translation ({reading.language} -> en, {self.translator.name})"
        )

    def _without_translation(self, reading: _Reading, translation_error: str | None) -> None:
        """The original text to the multilingual model, or else to the English model as a guess."""
        if self.multilingual is None:
            self._untranslated(reading, translation_error or "no translator is configured")
            return
        reading.route = MULTILINGUAL
        reading.reliability = self.multilingual.model.language_reliability(reading.language)
        if translation_error is not None:
            reading.notes.append(f"not translated ({translation_error})")
        reading.notes.append(f"read by the multilingual model ({self.multilingual.model.info.name})")

    def _untranslated(self, reading: _Reading, why: str) -> None:
        reading.route = UNTRANSLATED
        reading.reliability = self.settings.reliability_unreadable
        reading.notes.append(
            f"text in '{reading.language}' was not translated ({why}); the English model read the original, "
            "so the emotion is unreliable"
        )

    async def _analyze(self, requests: list[text_pb2.AnalyzeTextRequest]) -> list[text_pb2.AnalyzeTextResponse]:
        """One response per request, in order. A bad text alone (AnalyzeText) raises its status; in a
        batch it gets a result with only `error` set and the other texts go on."""
        start = time.perf_counter()
        readings: list[_Reading] = []
        errors: dict[int, text_pb2.AnalyzeTextResponse] = {}
        for index, request in enumerate(requests):
            try:
                readings.append(await asyncio.to_thread(self._read, request))
            except (InvalidInput, TooLarge) as exc:
                if len(requests) == 1:
                    raise
                BATCH_ITEM_ERRORS.labels(exc.code.name).inc()
                errors[index] = text_pb2.AnalyzeTextResponse(
                    error=common_pb2.ItemError(code=exc.code.value[0], message=f"texts[{index}]: {exc.message}")
                )
        if errors:
            ok = [i for i in range(len(requests)) if i not in errors]
            analysed = await self._analyze_readings(readings, start) if readings else []
            merged = {**errors, **dict(zip(ok, analysed, strict=True))}
            return [merged[i] for i in range(len(requests))]
        return await self._analyze_readings(readings, start)

    async def _analyze_readings(self, readings: list[_Reading], start: float) -> list[text_pb2.AnalyzeTextResponse]:
        # Translations go out concurrently; each has its own timeout inside the translator.
        await asyncio.gather(*(self._route_not_english(r) for r in readings))
        # Each model reads its texts in one call (split by max_batch_size on the way), both at once.
        readers = [self.english] if self.multilingual is None else [self.english, self.multilingual]
        groups = [(reader, [i for i, r in enumerate(readings) if self._reader(r) is reader]) for reader in readers]
        groups = [(reader, indices) for reader, indices in groups if indices]
        results = await asyncio.gather(
            *(
                reader.read(
                    [readings[i].model_text for i in indices], [self._context(readings[i], reader) for i in indices]
                )
                for reader, indices in groups
            )
        )
        latency_ms = (time.perf_counter() - start) * 1000
        responses: dict[int, text_pb2.AnalyzeTextResponse] = {}
        for (reader, indices), (batch, scores) in zip(groups, results, strict=True):
            for row, index in enumerate(indices):
                responses[index] = self._response(
                    readings[index],
                    reader,
                    scores.probabilities[row],
                    batch.tokens[row],
                    batch.truncated[row],
                    latency_ms,
                )
                if readings[index].context:
                    context_tokens = batch.context_tokens[row] if batch.context_tokens is not None else 0
                    responses[index].context_tokens = context_tokens
                    CONTEXT_TOKENS_PER_TEXT.observe(context_tokens)
                if scores.dimensions is not None:
                    valence, arousal = (float(v) for v in scores.dimensions[row])
                    responses[index].dimensions.CopyFrom(common_pb2.Dimensions(valence=valence, arousal=arousal))
        return [responses[index] for index in range(len(readings))]

    @staticmethod
    def _context(reading: _Reading, reader: TextReader) -> str:
        """The context `reader` reads with this text, "" (with a note) when it reads none."""
        if not reading.context:
            return ""
        if reader.tokenizer.context_tokens == 0:
            reading.notes.append(f"conversation context not read: {reader.model.info.name} reads texts alone")
            return ""
        if reading.route not in (NATIVE, UNREADABLE):
            reading.notes.append(
                "conversation context not read: it is read only with text the model reads untranslated"
            )
            return ""
        return reading.context

    def _reader(self, reading: _Reading) -> TextReader:
        if reading.route == MULTILINGUAL and self.multilingual is not None:
            return self.multilingual
        return self.english

    def _response(
        self, reading: _Reading, reader: TextReader, probs: np.ndarray, tokens: int, truncated: bool, latency_ms: float
    ) -> text_pb2.AnalyzeTextResponse:
        notes = list(reading.notes)
        if truncated:
            TRUNCATED_TEXTS.inc()
            notes.append(f"text was cut to the model's first {reader.tokenizer.max_length} tokens")
        TEXTS_BY_ROUTE.labels(reading.route).inc()
        TOKENS_PER_TEXT.observe(tokens)
        return text_pb2.AnalyzeTextResponse(
            distribution=distribution_from_probs(probs),
            language=reading.language,
            translated=reading.route == TRANSLATED,
            translated_text=reading.translated_text,
            truncated=truncated,
            tokens=tokens,
            reliability=reading.reliability,
            note="; ".join(notes),
            model=reader.model.info,
            latency_ms=latency_ms,
        )

    async def AnalyzeText(
        self, request: text_pb2.AnalyzeTextRequest, context: grpc.aio.ServicerContext
    ) -> text_pb2.AnalyzeTextResponse:
        (response,) = await self._analyze([request])
        return response

    async def AnalyzeTexts(
        self, request: text_pb2.AnalyzeTextsRequest, context: grpc.aio.ServicerContext
    ) -> text_pb2.AnalyzeTextsResponse:
        start = time.perf_counter()
        if not request.texts:
            raise InvalidInput("texts is empty")
        if len(request.texts) > self.settings.max_batch_texts:
            raise TooLarge(f"{len(request.texts)} texts in one call; the limit is {self.settings.max_batch_texts}")
        results = await self._analyze(list(request.texts))
        return text_pb2.AnalyzeTextsResponse(results=results, latency_ms=(time.perf_counter() - start) * 1000)
