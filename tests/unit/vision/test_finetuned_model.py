"""The committed fine-tuned FER model (services/vision/finetune_fer.py) has the served form: the same
named tensors as the shipped model, valid probabilities, and sensible answers on the parity inputs."""

import numpy as np
import onnxruntime as ort

from emomesh.paths import MODEL_REPOSITORY
from services.vision.export_fer import DEFAULT_OUT
from tests.conftest import fixture_path

FINETUNED = MODEL_REPOSITORY / "fer_mini_xception_ft" / "1" / "model.onnx"


def run(path: object, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [("face_gray", [1, 64, 64])]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    return session.run(["probabilities"], {"face_gray": pixels})[0]


def test_finetuned_model_is_a_distinct_valid_classifier() -> None:
    pixels = np.load(fixture_path("fer_reference.npz"))["pixels"][:, None].astype(np.float32)
    tuned, shipped = run(FINETUNED, pixels), run(DEFAULT_OUT, pixels)
    assert tuned.shape == (4, 7)
    np.testing.assert_allclose(tuned.sum(axis=1), 1, atol=1e-5)
    assert tuned[0].argmax() == 3  # the astronaut smiles: happy, as with the shipped weights
    assert np.abs(tuned - shipped).max() > 1e-3  # really other weights
