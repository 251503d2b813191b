"""Face detection with OpenCV's Haar cascade.

Why Haar: its weights ship inside opencv-python-headless (no download, no extra dependency), it
runs in a few milliseconds per image on a CPU core and it finds frontal faces, which is what the
FER-style expression models were trained on. MediaPipe's BlazeFace is more robust to pose but
brings a large dependency; a detector is a swappable class here."""

from __future__ import annotations

import threading

import cv2
import numpy as np

from services.vision.preprocess import Box


class HaarFaceDetector:
    """Thread-safe: each thread gets its own CascadeClassifier (detectMultiScale is not re-entrant)."""

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

    def detect(self, gray: np.ndarray) -> list[Box]:
        """Faces in a gray image, largest first, in the image's own pixel coordinates."""
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
        return sorted(boxes, key=lambda b: b.area, reverse=True)
