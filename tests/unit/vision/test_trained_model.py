"""The committed expression model trained on all of FER2013 (services/vision/train_fer.py ->
fer_ferplus_cnn; EMOMESH_VISION_MODEL selects it) has the
served form: 48x48 gray faces in, 7 probabilities out, the same answer for a face and its mirror
image (the test-time flip is in the graph), and a smile on the astronaut prepared as the service
prepares it (aligned by BlazeFace's eyes, equalised)."""

import asyncio

import numpy as np
import onnxruntime as ort
import pytest

from emomesh.labels import LABELS
from emomesh.paths import MODEL_REPOSITORY, model_file
from emomesh.triton_repo import load_specs
from services.vision.blazeface import BlazeFaceDetector, LocalBlazeFace
from services.vision.preprocess import crop_faces, decode_image, equalize_faces, to_gray

MODEL = "fer_ferplus_cnn"


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(str(model_file(MODEL)), providers=["CPUExecutionProvider"])


def test_its_config_says_it_wants_equalized_faces() -> None:
    assert load_specs()[MODEL]["parameters"]["emomesh_input_contrast"] == "equalized"


def test_served_form_and_mirror_invariance(session: ort.InferenceSession) -> None:
    assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [("face_gray", [1, 48, 48])]
    faces = np.random.default_rng(0).uniform(0, 255, (3, 1, 48, 48)).astype(np.float32)
    (probs,) = session.run(["probabilities"], {"face_gray": faces})
    (mirrored,) = session.run(["probabilities"], {"face_gray": np.ascontiguousarray(faces[..., ::-1])})
    assert probs.shape == (3, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(probs, mirrored, atol=1e-5)


def test_the_astronaut_prepared_as_the_service_prepares_her_smiles(
    session: ort.InferenceSession, astronaut_jpeg: bytes
) -> None:
    rgb = decode_image(astronaut_jpeg, 1 << 24, 1 << 24, color=True)
    detector = BlazeFaceDetector(LocalBlazeFace(MODEL_REPOSITORY / "blazeface_full_range" / "1" / "model.onnx"), 40)
    (faces,) = asyncio.run(detector.detect([rgb]))
    crops = equalize_faces(crop_faces(to_gray(rgb), faces[:1], (48, 48), 0.1))
    (probs,) = session.run(["probabilities"], {"face_gray": crops})
    assert LABELS[int(probs[0].argmax())] == "happy"
