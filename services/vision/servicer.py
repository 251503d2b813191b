"""VisionService: decode -> detect faces -> crop -> classify on Triton -> encode. Thin on purpose:
the steps are pure functions (preprocess, faces) and a model client (model)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc
import numpy as np

from emomesh.errors import InvalidInput, Unimplemented
from emomesh.labels import distribution_from_probs
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.vision.config import VisionSettings
from services.vision.faces import HaarFaceDetector
from services.vision.metrics import FACES_PER_IMAGE, IMAGE_STAGE_SECONDS
from services.vision.model import ExpressionModel
from services.vision.preprocess import Box, crop_faces, decode_image


@dataclass
class _Prepared:
    """One image after decoding and detection, before classification."""

    width: int
    height: int
    boxes: list[Box]
    crops: np.ndarray


class VisionServicer(vision_pb2_grpc.VisionServiceServicer):
    def __init__(self, settings: VisionSettings, model: ExpressionModel, detector: HaarFaceDetector) -> None:
        self.settings = settings
        self.model = model
        self.detector = detector

    def _prepare(self, data: bytes, max_faces: int) -> _Prepared:
        """CPU-bound part (decode, detect, crop); runs in a worker thread."""
        start = time.perf_counter()
        gray = decode_image(data, self.settings.max_image_bytes, self.settings.max_pixels)
        decoded = time.perf_counter()
        boxes = self.detector.detect(gray)[: max_faces or self.settings.max_faces]
        detected = time.perf_counter()
        crops = crop_faces(gray, boxes, self.model.input_size, self.settings.face_margin)
        IMAGE_STAGE_SECONDS.labels("decode").observe(decoded - start)
        IMAGE_STAGE_SECONDS.labels("detect").observe(detected - decoded)
        IMAGE_STAGE_SECONDS.labels("crop").observe(time.perf_counter() - detected)
        FACES_PER_IMAGE.observe(len(boxes))
        return _Prepared(int(gray.shape[1]), int(gray.shape[0]), boxes, crops)

    def _response(self, prepared: _Prepared, probs: np.ndarray, start: float) -> vision_pb2.AnalyzeImageResponse:
        faces = [
            vision_pb2.Face(
                box=vision_pb2.BoundingBox(x=b.x, y=b.y, width=b.width, height=b.height),
                distribution=distribution_from_probs(p),
            )
            for b, p in zip(prepared.boxes, probs, strict=True)
        ]
        response = vision_pb2.AnalyzeImageResponse(
            faces=faces,
            image_width=prepared.width,
            image_height=prepared.height,
            model=self.model.info,
            latency_ms=(time.perf_counter() - start) * 1000,
        )
        if faces:
            response.primary.CopyFrom(faces[0].distribution)
        return response

    def _check_max_faces(self, max_faces: int) -> None:
        if max_faces < 0:
            raise InvalidInput("max_faces must be >= 0")

    async def AnalyzeImage(
        self, request: vision_pb2.AnalyzeImageRequest, context: grpc.aio.ServicerContext
    ) -> vision_pb2.AnalyzeImageResponse:
        start = time.perf_counter()
        self._check_max_faces(request.max_faces)
        prepared = await asyncio.to_thread(self._prepare, request.image, request.max_faces)
        probs = await self.model.classify(prepared.crops)
        return self._response(prepared, probs, start)

    async def AnalyzeImages(
        self, request: vision_pb2.AnalyzeImagesRequest, context: grpc.aio.ServicerContext
    ) -> vision_pb2.AnalyzeImagesResponse:
        start = time.perf_counter()
        if not request.images:
            raise InvalidInput("images is empty")
        prepared: list[_Prepared] = []
        for index, item in enumerate(request.images):
            self._check_max_faces(item.max_faces)
            try:
                prepared.append(await asyncio.to_thread(self._prepare, item.image, item.max_faces))
            except InvalidInput as exc:
                raise InvalidInput(f"images[{index}]: {exc.message}") from exc
        # Every face of every image goes to Triton together, in as few batches as it accepts.
        all_probs = await self.model.classify(np.concatenate([p.crops for p in prepared]))
        results, offset = [], 0
        for item in prepared:
            results.append(self._response(item, all_probs[offset : offset + len(item.boxes)], start))
            offset += len(item.boxes)
        return vision_pb2.AnalyzeImagesResponse(results=results, latency_ms=(time.perf_counter() - start) * 1000)

    async def AnalyzeVideo(
        self, request: vision_pb2.AnalyzeVideoRequest, context: grpc.aio.ServicerContext
    ) -> vision_pb2.AnalyzeVideoResponse:
        raise Unimplemented("AnalyzeVideo is not available yet in this release")
