"""The text emotion model as the service sees it: token ids in, 7 probabilities out.

`TritonTextModel` is what the service uses; `OnnxTextModel` runs the same model.onnx in-process
(evaluation, benchmarks). Both take a TokenBatch and return float32 [N, 7] in LABELS order.

How far a model's answers can be trusted per language is a fact about the model (it comes from its
cross-validation), so it travels with the model: the Triton config parameter
`emomesh_language_reliability` (deploy/triton/models.yaml), e.g. "zh=0.9,de=0.6,*=0.5", read when the
service starts. The service reports it as the `reliability` of texts the multilingual model read.

Likewise `emomesh_context_tokens`: how many tokens of conversation context the model was trained to read
after the text (services/text/context.py); absent or 0 for a model trained on single texts."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np

from emomesh.labels import NUM_LABELS
from emomesh.triton import ModelSpec, ServedModel
from emotion.common.v1 import common_pb2
from services.text.tokenize import TokenBatch

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
OUTPUT = "probabilities"
# Optional second output: valence and arousal in [-1, 1] (services/text/train_valence_arousal.py).
DIMENSIONS_OUTPUT = "valence_arousal"


@dataclass(frozen=True)
class TextScores:
    probabilities: np.ndarray  # float32 [N, 7] in LABELS order
    dimensions: np.ndarray | None  # float32 [N, 2] (valence, arousal), when the model has them


CONTEXT_TOKENS_PARAMETER = "emomesh_context_tokens"
RELIABILITY_PARAMETER = "emomesh_language_reliability"
# The reliability of a language the parameter does not list (no `*`), and of every language when a
# model has no such parameter: between an untranslated guess (0.2) and a translation (0.8).
DEFAULT_LANGUAGE_RELIABILITY = 0.5
OTHER_LANGUAGES = "*"
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")


@dataclass(frozen=True)
class LanguageReliability:
    """Reliability per language (ISO 639 code), `other` for the languages not listed."""

    by_language: dict[str, float] = field(default_factory=dict)
    other: float = DEFAULT_LANGUAGE_RELIABILITY

    def __call__(self, language: str) -> float:
        return self.by_language.get(language, self.other)

    @classmethod
    def parse(cls, value: str) -> LanguageReliability:
        """Parses "zh=0.9,de=0.6,*=0.5" (`*`: every other language); raises ValueError saying what is
        wrong (an item without `=`, a code that is not ISO 639-1/2, a value outside [0, 1], a language
        twice, nothing at all)."""
        by_language: dict[str, float] = {}
        other: float | None = None
        for item in value.split(","):
            language, equals, number = (part.strip() for part in item.partition("="))
            if not equals:
                raise ValueError(f"{item.strip()!r} is not LANGUAGE=RELIABILITY")
            if language != OTHER_LANGUAGES and not _LANGUAGE_CODE.fullmatch(language):
                raise ValueError(f"{language!r} is not a lowercase ISO 639 code (such as 'zh') or '*'")
            try:
                reliability = float(number)
            except ValueError:
                raise ValueError(f"{language}={number!r}: the reliability is not a number") from None
            if not 0.0 <= reliability <= 1.0:  # NaN too
                raise ValueError(f"{language}={number}: the reliability must be between 0 and 1")
            if language in by_language or (language == OTHER_LANGUAGES and other is not None):
                raise ValueError(f"{language!r} is given twice")
            if language == OTHER_LANGUAGES:
                other = reliability
            else:
                by_language[language] = reliability
        return cls(by_language, DEFAULT_LANGUAGE_RELIABILITY if other is None else other)

    @classmethod
    def of(cls, spec: ModelSpec) -> LanguageReliability:
        """The model's `emomesh_language_reliability` parameter, or the default for every language;
        raises RuntimeError naming the model and the parameter when it is malformed."""
        value = spec.parameters.get(RELIABILITY_PARAMETER)
        if value is None:
            return cls()
        try:
            return cls.parse(value)
        except ValueError as exc:
            raise RuntimeError(f"model {spec.name} says {RELIABILITY_PARAMETER}={value!r}: {exc}") from exc


def context_tokens_of(spec: ModelSpec) -> int:
    """The model's `emomesh_context_tokens` parameter (0 when absent); raises RuntimeError naming the
    model when it is not a whole number between 0 and 512."""
    value = spec.parameters.get(CONTEXT_TOKENS_PARAMETER)
    if value is None:
        return 0
    try:
        tokens = int(value)
    except ValueError:
        tokens = -1
    if not 0 <= tokens <= 512:
        raise RuntimeError(
            f"model {spec.name} says {CONTEXT_TOKENS_PARAMETER}={value!r}: expected a whole number from 0 to 512"
        )
    return tokens


class TextClassifier(Protocol):
    """What the text servicer needs from its model: TritonTextModel, or a fake in unit tests."""

    @property
    def info(self) -> common_pb2.ModelInfo: ...

    @property
    def language_reliability(self) -> LanguageReliability: ...

    @property
    def context_tokens(self) -> int: ...

    async def classify(self, batch: TokenBatch) -> np.ndarray: ...

    async def score(self, batch: TokenBatch) -> TextScores: ...


class TritonTextModel(ServedModel):
    def check(self, spec: ModelSpec) -> None:
        names = {t.name for t in spec.inputs}
        if names != {INPUT_IDS, ATTENTION_MASK}:
            raise RuntimeError(f"model {self.name} takes {sorted(names)}, expected {INPUT_IDS} and {ATTENTION_MASK}")
        LanguageReliability.of(spec)
        context_tokens_of(spec)

    @cached_property
    def language_reliability(self) -> LanguageReliability:
        """From the model's Triton config (checked when the model was loaded)."""
        return LanguageReliability.of(self.spec)

    @cached_property
    def context_tokens(self) -> int:
        """From the model's Triton config (checked when the model was loaded)."""
        return context_tokens_of(self.spec)

    @staticmethod
    def _inputs_for(batch: TokenBatch) -> Callable[[slice], dict[str, np.ndarray]]:
        def inputs_for(rows: slice) -> dict[str, np.ndarray]:
            # Each chunk is cut to its own longest sequence: no padding beyond what it needs.
            width = int(batch.attention_mask[rows].sum(axis=1).max())
            return {INPUT_IDS: batch.input_ids[rows, :width], ATTENTION_MASK: batch.attention_mask[rows, :width]}

        return inputs_for

    async def classify(self, batch: TokenBatch) -> np.ndarray:
        return await self.infer_in_chunks(len(batch.input_ids), self._inputs_for(batch), OUTPUT)

    @property
    def has_dimensions(self) -> bool:
        return any(t.name == DIMENSIONS_OUTPUT for t in self.spec.outputs)

    async def score(self, batch: TokenBatch) -> TextScores:
        """Probabilities, and valence/arousal from the same calls when the model has them."""
        if not self.has_dimensions:
            return TextScores(await self.classify(batch), None)
        results = await self.infer_outputs_in_chunks(
            len(batch.input_ids), self._inputs_for(batch), [OUTPUT, DIMENSIONS_OUTPUT]
        )
        return TextScores(results[OUTPUT], results[DIMENSIONS_OUTPUT])


class OnnxTextModel:
    """The same ONNX file run in-process with onnxruntime on the CPU."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def classify(self, batch: TokenBatch) -> np.ndarray:
        if len(batch.input_ids) == 0:
            return np.zeros((0, NUM_LABELS), dtype=np.float32)
        (probs,) = self.session.run([OUTPUT], {INPUT_IDS: batch.input_ids, ATTENTION_MASK: batch.attention_mask})
        return np.asarray(probs, dtype=np.float32)
