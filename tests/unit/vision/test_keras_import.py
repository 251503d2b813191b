"""Parity of the converted FER model: the committed ONNX file, and a fresh conversion, must match the
reference computed once by an independent NumPy implementation of the Keras graph."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from services.vision.export_fer import DEFAULT_OUT, export, fer_hdf5_path
from services.vision.keras_import import same_padding
from tests.conftest import fixture_path


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    ref = np.load(fixture_path("fer_reference.npz"))
    return {"pixels": ref["pixels"][:, None].astype(np.float32), "probabilities": ref["probabilities"]}


def run(path: Path, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"face_gray": pixels})[0]


def test_committed_onnx_matches_the_reference(reference: dict[str, np.ndarray]) -> None:
    out = run(DEFAULT_OUT, reference["pixels"])
    np.testing.assert_allclose(out, reference["probabilities"], atol=1e-5)
    assert np.allclose(out.sum(axis=1), 1, atol=1e-5)
    assert out[0].argmax() == 3  # the astronaut smiles: happy


def test_fresh_conversion_matches_the_reference(tmp_path: Path, reference: dict[str, np.ndarray]) -> None:
    out_path = tmp_path / "model.onnx"
    export(fer_hdf5_path(), out_path)
    np.testing.assert_allclose(run(out_path, reference["pixels"]), reference["probabilities"], atol=1e-5)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pads"),
    [(60, 3, 2, (0, 1)), (15, 3, 2, (1, 1)), (64, 3, 1, (1, 1)), (15, 1, 2, (0, 0))],
)
def test_keras_same_padding_puts_the_odd_pixel_after(
    size: int, kernel: int, stride: int, pads: tuple[int, int]
) -> None:
    assert same_padding(size, kernel, stride) == pads
