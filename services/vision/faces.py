"""Face detectors behind one interface: BlazeFace served by Triton (services/vision/blazeface.py, the
default) and OpenCV's Haar cascade (the fallback), chosen by EMOMESH_VISION_DETECTOR.

Why BlazeFace: it runs on Triton (GPU in production, batched across frames and requests) instead of the
service's own CPU, finds more faces (turned, tilted, small; docs/vision.md has the counts) and gives
the eye keypoints that align each face. Why keep Haar: its weights ship inside opencv-python-headless
and it needs no model server, so a deployment without the BlazeFace model still detects faces."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np

from services.vision.preprocess import Box, DetectedFace, to_gray


class FaceDetector(Protocol):
    """What the vision servicer needs from a detector: BlazeFaceDetector, HaarFaceDetector, or a fake
    in unit tests."""

    # Whether the detector takes RGB images (BlazeFace) rather than gray ones (Haar).
    @property
    def color(self) -> bool: ...

    async def detect(self, images: Sequence[np.ndarray]) -> list[list[DetectedFace]]:
        """Faces of each image, largest first, in the image's own pixel coordinates."""
        ...


class HaarFaceDetector:
    """Thread-safe: each thread gets its own CascadeClassifier (detectMultiScale is not re-entrant)."""

    color = False

    def __init__(self, min_face_px: int, max_side: int, cascade: str = "haarcascade_frontalface_default.xml") -> None:
        self.path = cv2.data.haarcascades + cascade  # type: ignore[attr-defined]
        self.min_face_px = min_face_px
        self.max_side = max_side
        self._local = threading.local()
        if cv2.CascadeClassifier(self.path).empty():
            raise RuntimeError(f"cannot load the face cascade {self.path}")

    def _cascade(self) -> cv2.CascadeClassifier:
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = self._local.cascade = cv2.CascadeClassifier(self.path)
        return cascade

    def detect_one(self, image: np.ndarray) -> list[DetectedFace]:
        """Faces in a gray (or RGB) image, largest first, in the image's own pixel coordinates."""
        gray = to_gray(image)
        scale = min(1.0, self.max_side / max(gray.shape))
        small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        min_px = max(16, int(self.min_face_px * scale))
        found = self._cascade().detectMultiScale(
            cv2.equalizeHist(small), scaleFactor=1.1, minNeighbors=5, minSize=(min_px, min_px)
        )
        boxes = [
            Box(int(x / scale), int(y / scale), int(w / scale), int(h / scale))
            for (x, y, w, h) in np.asarray(found).reshape(-1, 4)
        ]
        return [DetectedFace(box) for box in sorted(boxes, key=lambda b: b.area, reverse=True)]

    async def detect(self, images: Sequence[np.ndarray]) -> list[list[DetectedFace]]:
        # CPU-bound: off the event loop.
        return await asyncio.to_thread(lambda: [self.detect_one(image) for image in images])
