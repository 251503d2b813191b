"""ExpressionModel: the Triton spec checked at start (what the vision service sends and reads), with a
fake Triton client; the real tritonserver refusing a mismatched model is in tests/integration/test_vision.py."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from emomesh.triton import ModelSpec, TensorSpec
from services.vision.model import ExpressionModel

FER = ModelSpec(
    name="fer",
    version="1",
    inputs=(TensorSpec("face_gray", "FP32", (1, 64, 64)),),
    outputs=(TensorSpec("probabilities", "FP32", (7,)),),
    max_batch_size=64,
    parameters={},
)


class FakeTriton:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.requests: list[tuple[list[str], list[str]]] = []

    async def model_spec(self, model: str) -> ModelSpec:
        return self.spec

    async def infer(
        self, model: str, inputs: dict[str, np.ndarray], outputs: list[str], timeout_s: float | None = None
    ) -> dict[str, np.ndarray]:
        self.requests.append((sorted(inputs), outputs))
        rows = len(next(iter(inputs.values())))
        return {name: np.full((rows, 7), 1 / 7, np.float32) for name in outputs}


@pytest.mark.parametrize("side", [64, 48])
async def test_a_gray_face_model_with_seven_classes_loads(side: int) -> None:
    spec = replace(FER, inputs=(TensorSpec("face_gray", "FP32", (1, side, side)),))
    triton = FakeTriton(spec)
    model = ExpressionModel(triton, "fer")
    await model.load()
    assert model.input_size == (side, side)
    probs = await model.classify(np.zeros((3, 1, side, side), np.float32))
    assert probs.shape == (3, 7)
    assert triton.requests == [(["face_gray"], ["probabilities"])]


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ((TensorSpec("log_mel", "FP32", (1, 128, 130)),), FER.outputs, r"takes \{'log_mel'"),
        ((TensorSpec("face_gray", "UINT8", (1, 64, 64)),), FER.outputs, "one FP32 input 'face_gray'"),
        ((TensorSpec("face_gray", "FP32", (64, 64)),), FER.outputs, r"of shape \[1, H, W\]"),
        ((TensorSpec("face_gray", "FP32", (3, 64, 64)),), FER.outputs, r"of shape \[1, H, W\]"),
        ((TensorSpec("face_gray", "FP32", (1, -1, -1)),), FER.outputs, "fixed size"),
        ((*FER.inputs, TensorSpec("mask", "FP32", (1, 64, 64))), FER.outputs, "one FP32 input"),
        (FER.inputs, (TensorSpec("logits", "FP32", (7,)),), r"gives \{'logits': \(7,\)\}; .* 'probabilities'"),
        (FER.inputs, (TensorSpec("probabilities", "FP32", (8,)),), r"of shape \[7\]"),
    ],
    ids=["audio model", "uint8", "no channel", "colour", "variable size", "two inputs", "no output", "8 classes"],
)
async def test_a_model_the_service_cannot_feed_or_read_fails_the_load(
    inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], message: str
) -> None:
    model = ExpressionModel(FakeTriton(replace(FER, inputs=inputs, outputs=outputs)), "wrong")
    with pytest.raises(RuntimeError, match=f"model wrong .*{message}"):
        await model.load()


@pytest.mark.parametrize(
    ("parameters", "equalized"),
    [({}, False), ({"emomesh_input_contrast": "raw"}, False), ({"emomesh_input_contrast": "equalized"}, True)],
)
async def test_the_config_says_whether_the_model_wants_equalized_faces(
    parameters: dict[str, str], equalized: bool
) -> None:
    model = ExpressionModel(FakeTriton(replace(FER, parameters=parameters)), "fer")
    await model.load()
    assert model.equalized_input is equalized


async def test_an_unknown_input_contrast_fails_the_load() -> None:
    model = ExpressionModel(FakeTriton(replace(FER, parameters={"emomesh_input_contrast": "clahe"})), "odd")
    with pytest.raises(RuntimeError, match="emomesh_input_contrast='clahe'; the vision service knows raw, equalized"):
        await model.load()
