"""BlazeFace face detection served by Triton: the images are letterboxed to the model's square input
here, one Triton call detects a whole batch (the frames of a video, the images of AnalyzeImages;
Triton's dynamic batcher merges concurrent calls), and the anchors the model has already decoded
(services/vision/export_blazeface.py) are thresholded and merged by MediaPipe's weighted non-maximum
suppression here, in NumPy."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import onnxruntime as ort

from emomesh.triton import ModelSpec, ServedModel
from services.vision.config import TILINGS
from services.vision.preprocess import Box, DetectedFace, Point

INPUT = "image"
SCORES = "scores"
BOXES = "boxes"
# MediaPipe's keypoint order (its FaceKeyPoint enum): the subject's right eye, left eye, nose tip,
# mouth centre, right ear tragion, left ear tragion.
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")
# MediaPipe's face detection graphs: min_score_thresh 0.5, min_suppression_threshold 0.3.
DEFAULT_MIN_SCORE = 0.5
SUPPRESSION_IOU = 0.3


class AnchorModel(Protocol):
    """What BlazeFaceDetector needs from its model: BlazeFaceModel over Triton, or onnxruntime
    in-process (bench/detector_counts.py, unit tests)."""

    @property
    def input_size(self) -> int: ...

    async def detect_anchors(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class BlazeFaceModel(ServedModel):
    def check(self, spec: ModelSpec) -> None:
        """The served model must take UINT8 `image` [S, S, 3] and give `scores` [A] and `boxes` [A, 16]
        (what export_blazeface.py writes)."""
        inputs = {t.name: (t.datatype, t.shape) for t in spec.inputs}
        outputs = {t.name: t.shape for t in spec.outputs}
        datatype, shape = inputs.get(INPUT, ("", ()))
        square = len(shape) == 3 and shape[0] == shape[1] > 0 and shape[2] == 3
        anchors = outputs.get(SCORES, (0,))[0]
        if len(inputs) != 1 or datatype != "UINT8" or not square or outputs.get(BOXES) != (anchors, 16):
            raise RuntimeError(
                f"model {self.name} takes {inputs} and gives {outputs}; the BlazeFace detector sends one UINT8 "
                f"input {INPUT!r} of shape [S, S, 3] and reads {SCORES!r} [A] and {BOXES!r} [A, 16]"
            )

    @property
    def input_size(self) -> int:
        return self.spec.input(INPUT).shape[0]

    async def detect_anchors(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images: uint8 [N, S, S, 3] -> scores [N, A], boxes [N, A, 16], in chunks of max_batch_size."""
        step = self.spec.max_batch_size or len(images)
        scores, boxes = [], []
        for start in range(0, len(images), step):
            result = await self.client.infer(self.name, {INPUT: images[start : start + step]}, [SCORES, BOXES])
            scores.append(result[SCORES])
            boxes.append(result[BOXES])
        return np.concatenate(scores), np.concatenate(boxes)


class LocalBlazeFace:
    """The same ONNX file run in-process by onnxruntime: for benches and tests that measure or check
    the detector without Triton (the service always uses BlazeFaceModel)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_size = int(self.session.get_inputs()[0].shape[1])

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, boxes = self.session.run([SCORES, BOXES], {INPUT: images})
        return scores, boxes

    async def detect_anchors(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.run(images)


@dataclass(frozen=True)
class Window:
    """A part of an image the detector looks at: the whole image, or a tile (x, y, width, height)."""

    x: int
    y: int
    width: int
    height: int


def tile_windows(height: int, width: int, min_face_px: int) -> list[Window]:
    """Squares of half the image's longer side (at most its shorter side), overlapping by half and
    covering the image: 3x3 on a square image, 3x2 on a 3:2 one. BlazeFace finds faces down to about
    a tenth (full range) or a fifth (short range) of its input's side, so on the whole image shrunk
    to 192 or 128 pixels it misses faces smaller than that relative to the image; in a tile they are
    twice as large. None when a tile would be too small to hold a face of min_face_px with context."""
    side = min(-(-max(height, width) // 2), height, width)
    if side < 2 * min_face_px or side == max(height, width):
        return []
    step = side // 2

    def starts(length: int) -> list[int]:
        positions = list(range(0, length - side + 1, step))
        return positions if positions[-1] == length - side else [*positions, length - side]

    return [Window(x, y, side, side) for y in starts(height) for x in starts(width)]


@dataclass(frozen=True)
class Letterbox:
    """How a window of an image was placed in the square input: scaled by (scale_x, scale_y) (equal
    but for rounding), then offset by (x, y) pixels."""

    size: int
    scale_x: float
    scale_y: float
    x: int
    y: int
    window: Window

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """[..., 2] points in units of the square -> pixels of the whole image."""
        in_window = (points * self.size - (self.x, self.y)) / (self.scale_x, self.scale_y)
        return in_window + np.array([self.window.x, self.window.y], np.float32)


def letterbox(image: np.ndarray, size: int, window: Window | None = None) -> tuple[np.ndarray, Letterbox]:
    """The window of the image (gray or RGB; the whole image by default) scaled to fit a size x size
    square, centred on black as MediaPipe does, as uint8 RGB (gray is repeated into the three
    channels)."""
    window = window or Window(0, 0, image.shape[1], image.shape[0])
    part = image[window.y : window.y + window.height, window.x : window.x + window.width]
    scale = size / max(window.height, window.width)
    new_w, new_h = max(1, round(window.width * scale)), max(1, round(window.height * scale))
    # Area averaging against aliasing; halving first (OpenCV's fast integer-factor path) makes it
    # 3-4x cheaper than one non-integer INTER_AREA resize of a large image.
    while part.shape[0] >= 2 * new_h and part.shape[1] >= 2 * new_w:
        part = cv2.resize(part, (part.shape[1] // 2, part.shape[0] // 2), interpolation=cv2.INTER_AREA)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(part, (new_w, new_h), interpolation=interpolation)
    if resized.ndim == 2:
        resized = cv2.cvtColor(resized, cv2.COLOR_GRAY2RGB)
    x, y = (size - new_w) // 2, (size - new_h) // 2
    square = np.zeros((size, size, 3), np.uint8)
    square[y : y + new_h, x : x + new_w] = resized
    return square, Letterbox(size, new_w / window.width, new_h / window.height, x, y, window)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one [4] box (xmin, ymin, xmax, ymax) with each of [M, 4]."""
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = (box[2] - box[0]) * (box[3] - box[1]) + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(
    scores: np.ndarray, boxes: np.ndarray, min_score: float, iou: float = SUPPRESSION_IOU
) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression: the best remaining candidate and all candidates
    that overlap it by more than `iou` become one detection, their boxes and keypoints averaged by
    score, with the best one's score. scores [A], boxes [A, 16] -> scores [D], boxes [D, 16], best
    first."""
    keep = (scores >= min_score) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    order = np.argsort(-scores[keep], kind="stable")
    candidates, weights = boxes[keep][order], scores[keep][order]
    merged_scores, merged_boxes = [], []
    while len(candidates):
        overlapping = _iou(candidates[0, :4], candidates[:, :4]) > iou
        overlapping[0] = True
        merged = (weights[overlapping, None] * candidates[overlapping]).sum(axis=0) / weights[overlapping].sum()
        merged_scores.append(weights[0])
        merged_boxes.append(merged)
        candidates, weights = candidates[~overlapping], weights[~overlapping]
    return np.asarray(merged_scores, np.float32), np.asarray(merged_boxes, np.float32).reshape(-1, 16)


def detections_in_window(
    scores: np.ndarray, boxes: np.ndarray, placement: Letterbox, image_shape: tuple[int, ...], min_score: float
) -> tuple[np.ndarray, np.ndarray]:
    """One window's detections in image pixels: scores [D], boxes [D, 16]. A tile drops the faces it
    cuts (boxes reaching past one of its sides inside the image): an overlapping tile or the whole
    image sees them whole, and a cut face would come back as a second, partial one."""
    merged_scores, merged = weighted_nms(scores, boxes, min_score)
    points = placement.to_image(merged.reshape(-1, 8, 2)).reshape(-1, 16)
    window = placement.window
    height, width = image_shape[:2]
    if (window.width, window.height) == (width, height) or not len(points):
        return merged_scores, points
    margin = 0.02 * window.width
    cut = (
        ((points[:, 0] < window.x + margin) & (window.x > 0))
        | ((points[:, 1] < window.y + margin) & (window.y > 0))
        | ((points[:, 2] > window.x + window.width - margin) & (window.x + window.width < width))
        | ((points[:, 3] > window.y + window.height - margin) & (window.y + window.height < height))
    )
    return merged_scores[~cut], points[~cut]


def faces_from_detections(
    scores: np.ndarray, points: np.ndarray, image_shape: tuple[int, ...], min_face_px: int
) -> list[DetectedFace]:
    """Detections in image pixels (scores [D], boxes [D, 16]) as faces: boxes clipped to the image,
    faces narrower than min_face_px dropped, largest first."""
    height, width = image_shape[:2]
    faces = []
    for score, row in zip(scores, points, strict=True):
        x0, y0, x1, y1 = row[:4]
        if min(x1 - x0, y1 - y0) < min_face_px:
            continue
        left, top = max(0, round(x0)), max(0, round(y0))
        right, bottom = min(width, round(x1)), min(height, round(y1))
        if right <= left or bottom <= top:
            continue
        keypoints = [Point(float(x), float(y)) for x, y in row[4:].reshape(6, 2)]
        box = Box(left, top, right - left, bottom - top)
        faces.append(DetectedFace(box, keypoints[0], keypoints[1], tuple(keypoints[2:]), float(score)))
    return sorted(faces, key=lambda f: f.box.area, reverse=True)


def faces_from_windows(
    scores: np.ndarray,
    boxes: np.ndarray,
    placements: Sequence[Letterbox],
    image_shape: tuple[int, ...],
    min_score: float,
    min_face_px: int,
) -> list[DetectedFace]:
    """The faces of one image from the model outputs of its windows (scores [W, A], boxes [W, A, 16]):
    each window's detections, then the same face seen by several windows merged into one."""
    found = [
        detections_in_window(scores[i], boxes[i], placement, image_shape, min_score)
        for i, placement in enumerate(placements)
    ]
    all_scores = np.concatenate([s for s, _ in found])
    all_points = np.concatenate([p for _, p in found])
    if len(placements) > 1:
        all_scores, all_points = weighted_nms(all_scores, all_points, min_score)
    return faces_from_detections(all_scores, all_points, image_shape, min_face_px)


class BlazeFaceDetector:
    """Faces of a batch of images in one model call (every window of every image). Takes RGB images
    (gray ones work, slightly worse: the model was trained on colour).

    Tiling (tile_windows) finds faces too small for the whole-image pass: `off` never; `always` looks
    at the tiles of every image besides the whole image (7-10 model inputs per image); `fallback`
    looks at the tiles only of the images where the whole image showed no face, in a second model
    call (so a photo with a face costs one input, and a frame with one small face is still found;
    small faces beside a large one need `always`)."""

    color = True

    def __init__(
        self, model: AnchorModel, min_face_px: int, min_score: float = DEFAULT_MIN_SCORE, tiling: str = "fallback"
    ) -> None:
        if tiling not in TILINGS:
            raise ValueError(f"tiling must be one of {TILINGS}, got {tiling!r}")
        self.model = model
        self.min_face_px = min_face_px
        self.min_score = min_score
        self.tiling = tiling

    def _tiles(self, image: np.ndarray) -> list[Window]:
        return tile_windows(image.shape[0], image.shape[1], self.min_face_px)

    def prepare(
        self, images: Sequence[np.ndarray], plan: Sequence[Sequence[Window]]
    ) -> tuple[np.ndarray, list[list[Letterbox]]]:
        """The model input of every window of every image [sum of windows, S, S, 3], and each
        image's placements."""
        squares, placements = [], []
        for image, image_windows in zip(images, plan, strict=True):
            placed = [letterbox(image, self.model.input_size, window) for window in image_windows]
            squares += [square for square, _ in placed]
            placements.append([placement for _, placement in placed])
        return np.stack(squares), placements

    async def _detect_windows(
        self, images: Sequence[np.ndarray], plan: Sequence[Sequence[Window]]
    ) -> list[list[DetectedFace]]:
        batch, placements = await asyncio.to_thread(self.prepare, images, plan)
        scores, boxes = await self.model.detect_anchors(batch)
        faces, offset = [], 0
        for image, placed in zip(images, placements, strict=True):
            rows = slice(offset, offset + len(placed))
            offset += len(placed)
            faces.append(
                faces_from_windows(scores[rows], boxes[rows], placed, image.shape, self.min_score, self.min_face_px)
            )
        return faces

    async def detect(self, images: Sequence[np.ndarray]) -> list[list[DetectedFace]]:
        if not images:
            return []
        plan = [
            [Window(0, 0, image.shape[1], image.shape[0]), *(self._tiles(image) if self.tiling == "always" else [])]
            for image in images
        ]
        faces = await self._detect_windows(images, plan)
        if self.tiling == "fallback":
            retry = [i for i, found in enumerate(faces) if not found and self._tiles(images[i])]
            if retry:
                again = await self._detect_windows([images[i] for i in retry], [self._tiles(images[i]) for i in retry])
                for i, found in zip(retry, again, strict=True):
                    faces[i] = found
        return faces
