"""The text model's Triton contract: the inputs it must take and the per-language reliability read from
its config's `emomesh_language_reliability` parameter, with a fake Triton client; the real tritonserver
serving both text models is in tests/integration/test_text.py."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from emomesh.triton import ModelSpec, TensorSpec
from services.text.model import DEFAULT_LANGUAGE_RELIABILITY, LanguageReliability, TritonTextModel
from services.text.tokenize import TokenBatch

E5 = ModelSpec(
    name="text_e5_emotion",
    version="1",
    inputs=(TensorSpec("input_ids", "INT64", (-1,)), TensorSpec("attention_mask", "INT64", (-1,))),
    outputs=(TensorSpec("probabilities", "FP32", (7,)),),
    max_batch_size=32,
    parameters={"emomesh_language_reliability": "zh=0.9,de=0.6,*=0.5"},
)


class FakeTriton:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    async def model_spec(self, model: str) -> ModelSpec:
        return self.spec

    async def infer(
        self, model: str, inputs: dict[str, np.ndarray], outputs: list[str], timeout_s: float | None = None
    ) -> dict[str, np.ndarray]:
        rows = len(next(iter(inputs.values())))
        self.calls = getattr(self, "calls", 0) + 1
        width = {"probabilities": 7, "valence_arousal": 2}
        return {name: np.full((rows, width[name]), 1 / width[name], np.float32) for name in outputs}


def test_reliability_per_language_with_a_default_for_the_others() -> None:
    reliability = LanguageReliability.parse(" zh = 0.95 , *=0.6,de=0")
    assert reliability.by_language == {"zh": 0.95, "de": 0.0} and reliability.other == 0.6
    assert (reliability("zh"), reliability("de"), reliability("fr"), reliability("und")) == (0.95, 0.0, 0.6, 0.6)


def test_without_a_star_other_languages_get_the_default() -> None:
    assert LanguageReliability.parse("zh=1")("ja") == DEFAULT_LANGUAGE_RELIABILITY == 0.5
    assert LanguageReliability.parse("*=0.3") == LanguageReliability({}, 0.3)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", r"'' is not LANGUAGE=RELIABILITY"),
        ("zh:0.9", r"'zh:0.9' is not LANGUAGE=RELIABILITY"),
        ("zh=0.9,", r"'' is not LANGUAGE=RELIABILITY"),
        ("ZH=0.9", r"'ZH' is not a lowercase ISO 639 code"),
        ("chinese=0.9", r"'chinese' is not a lowercase ISO 639 code"),
        ("=0.9", r"'' is not a lowercase ISO 639 code"),
        ("zh=high", r"zh='high': the reliability is not a number"),
        ("zh=", r"zh='': the reliability is not a number"),
        ("zh=1.5", r"zh=1.5: the reliability must be between 0 and 1"),
        ("*=-0.1", r"\*=-0.1: the reliability must be between 0 and 1"),
        ("zh=nan", r"zh=nan: the reliability must be between 0 and 1"),
        ("zh=0.9,zh=0.8", r"'zh' is given twice"),
        ("*=0.5,*=0.4", r"'\*' is given twice"),
    ],
)
def test_a_malformed_reliability_says_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LanguageReliability.parse(value)


async def test_the_model_reads_its_reliability_from_its_triton_config() -> None:
    model = TritonTextModel(FakeTriton(E5), "text_e5_emotion")
    await model.load()
    assert model.language_reliability == LanguageReliability({"zh": 0.9, "de": 0.6}, 0.5)
    ids = np.ones((2, 3), np.int64)
    probs = await model.classify(TokenBatch(ids, ids, [3, 3], [False, False]))
    assert probs.shape == (2, 7)


async def test_valence_and_arousal_come_from_the_same_call_when_the_model_has_them() -> None:
    with_dimensions = replace(E5, outputs=(*E5.outputs, TensorSpec("valence_arousal", "FP32", (2,))), max_batch_size=2)
    triton = FakeTriton(with_dimensions)
    model = TritonTextModel(triton, "text_minilm_emotion")
    await model.load()
    ids = np.ones((3, 4), np.int64)
    scores = await model.score(TokenBatch(ids, ids, [4, 4, 4], [False] * 3))
    assert scores.probabilities.shape == (3, 7)
    assert scores.dimensions is not None and scores.dimensions.shape == (3, 2)
    assert triton.calls == 2  # max batch 2: two chunks, each asking for both outputs
    plain = TritonTextModel(FakeTriton(E5), "text_e5_emotion")
    await plain.load()
    assert (await plain.score(TokenBatch(ids, ids, [4, 4, 4], [False] * 3))).dimensions is None


async def test_a_model_without_the_parameter_gets_the_default_for_every_language() -> None:
    model = TritonTextModel(FakeTriton(replace(E5, parameters={})), "text_minilm_emotion")
    await model.load()
    assert model.language_reliability == LanguageReliability()
    assert model.language_reliability("zh") == DEFAULT_LANGUAGE_RELIABILITY


async def test_a_malformed_parameter_fails_the_load_naming_the_model_and_the_value() -> None:
    spec = replace(E5, parameters={"emomesh_language_reliability": "zh=0.9;de=0.6"})
    model = TritonTextModel(FakeTriton(spec), "text_e5_emotion")
    message = r"model text_e5_emotion says emomesh_language_reliability='zh=0.9;de=0.6': zh='0.9;de=0.6': the"
    with pytest.raises(RuntimeError, match=message):
        await model.load()


async def test_a_model_without_token_inputs_fails_the_load() -> None:
    spec = replace(E5, inputs=(TensorSpec("text", "BYTES", (1,)),))
    with pytest.raises(RuntimeError, match=r"takes \['text'\], expected input_ids and attention_mask"):
        await TritonTextModel(FakeTriton(spec), "odd").load()


async def test_the_context_budget_comes_from_the_model_config() -> None:
    model = TritonTextModel(FakeTriton(replace(E5, parameters={"emomesh_context_tokens": "64"})), "text_e5_emotion")
    await model.load()
    assert model.context_tokens == 64
    plain = TritonTextModel(FakeTriton(replace(E5, parameters={})), "text_e5_emotion")
    await plain.load()
    assert plain.context_tokens == 0
    for bad in ("-1", "lots", "4096"):
        broken = TritonTextModel(FakeTriton(replace(E5, parameters={"emomesh_context_tokens": bad})), "text_e5_emotion")
        with pytest.raises(RuntimeError, match=rf"model text_e5_emotion says emomesh_context_tokens='{bad}'"):
            await broken.load()
