"""VisionService: decode -> detect faces -> crop -> classify on Triton -> encode. Thin on purpose:
the steps are pure functions (preprocess, faces, video, tracking) and a model client (model)."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from emomesh.errors import InvalidInput, TooLarge
from emomesh.labels import distribution_from_probs
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.vision.config import VisionSettings
from services.vision.faces import HaarFaceDetector
from services.vision.metrics import FACES_PER_IMAGE, IMAGE_STAGE_SECONDS
from services.vision.model import ExpressionClassifier
from services.vision.preprocess import Box, crop_faces, decode_image
from services.vision.tracking import ClipAggregate, IouTracker
from services.vision.video import (
    ClipInfo,
    SampledFrame,
    Sampling,
    VideoLimits,
    decode_sequence,
    decode_video,
    sampling_from_fields,
)


@dataclass
class _Prepared:
    """One image after decoding and detection, before classification."""

    width: int
    height: int
    boxes: list[Box]
    crops: np.ndarray


@dataclass
class _PreparedFrame:
    """One sampled video frame after detection, before classification."""

    index: int
    timestamp_s: float
    boxes: list[Box]
    crops: np.ndarray


class VisionServicer(vision_pb2_grpc.VisionServiceServicer):
    def __init__(self, settings: VisionSettings, model: ExpressionClassifier, detector: HaarFaceDetector) -> None:
        self.settings = settings
        self.model = model
        self.detector = detector

        self.video_limits = VideoLimits(settings.max_pixels, settings.max_video_frames, settings.max_decoded_frames)

    def _prepare(self, data: bytes, max_faces: int, whole_image_is_face: bool = False) -> _Prepared:
        """CPU-bound part (decode, detect, crop); runs in a worker thread."""
        start = time.perf_counter()
        gray = decode_image(data, self.settings.max_image_bytes, self.settings.max_pixels)
        decoded = time.perf_counter()
        if whole_image_is_face:
            # The caller says the image is a face crop: no detection, no margin around it.
            boxes = [Box(0, 0, int(gray.shape[1]), int(gray.shape[0]))]
            margin = 0.0
        else:
            boxes = self.detector.detect(gray)[: max_faces or self.settings.max_faces]
            margin = self.settings.face_margin
        detected = time.perf_counter()
        crops = crop_faces(gray, boxes, self.model.input_size, margin)
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
        prepared = await asyncio.to_thread(self._prepare, request.image, request.max_faces, request.whole_image_is_face)
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
                prepared.append(
                    await asyncio.to_thread(self._prepare, item.image, item.max_faces, item.whole_image_is_face)
                )
            except InvalidInput as exc:
                raise InvalidInput(f"images[{index}]: {exc.message}") from exc
        # Every face of every image goes to Triton together, in as few batches as it accepts.
        all_probs = await self.model.classify(np.concatenate([p.crops for p in prepared]))
        results, offset = [], 0
        for item in prepared:
            results.append(self._response(item, all_probs[offset : offset + len(item.boxes)], start))
            offset += len(item.boxes)
        return vision_pb2.AnalyzeImagesResponse(results=results, latency_ms=(time.perf_counter() - start) * 1000)

    def _prepare_frames(self, frames: Iterator[SampledFrame], cancelled: threading.Event) -> list[_PreparedFrame]:
        """Decodes the sampled frames one at a time (the iterator is lazy) and keeps only their face
        crops; runs in a worker thread (decoding and detection are CPU-bound). Stops early once
        `cancelled` is set: a worker thread outlives the cancelled call, and a long clip would
        otherwise go on burning CPU."""
        prepared = []
        for frame in frames:
            if cancelled.is_set():
                break
            boxes = self.detector.detect(frame.gray)[: self.settings.max_faces]
            crops = crop_faces(frame.gray, boxes, self.model.input_size, self.settings.face_margin)
            FACES_PER_IMAGE.observe(len(boxes))
            prepared.append(_PreparedFrame(frame.index, frame.timestamp_s, boxes, crops))
        return prepared

    def _sampling(self, which: str | None, uniform: int, every_nth: int, stride_s: float) -> Sampling:
        return sampling_from_fields(which, uniform, every_nth, stride_s, self.settings.max_video_frames)

    async def AnalyzeVideo(
        self, request: vision_pb2.AnalyzeVideoRequest, context: grpc.aio.ServicerContext
    ) -> vision_pb2.AnalyzeVideoResponse:
        start = time.perf_counter()
        source = request.WhichOneof("source")
        if source is None:
            raise InvalidInput("set either video (an encoded file) or frames (a sequence of images)")
        sampling = self._sampling(
            request.WhichOneof("sampling"), request.uniform_frames, request.every_nth_frame, request.stride_seconds
        )
        info, cancelled = ClipInfo(), threading.Event()
        frames: Iterator[SampledFrame]
        if source == "video":
            frames = decode_video(request.video, sampling, self.video_limits, info, cancelled)
        else:
            frames = decode_sequence(
                list(request.frames.images),
                request.frames.fps,
                sampling,
                self.video_limits,
                self.settings.max_image_bytes,
                info,
            )
        return await self._analyze_clip(frames, info, cancelled, start)

    async def AnalyzeVideoStream(
        self, request_iterator: AsyncIterator[vision_pb2.VideoChunk], context: grpc.aio.ServicerContext
    ) -> vision_pb2.AnalyzeVideoResponse:
        start = time.perf_counter()
        limit = self.settings.max_video_bytes
        # Spooled to disk as it arrives (never held in memory whole); deleted when the call ends.
        with tempfile.NamedTemporaryFile(prefix="emomesh-video-", suffix=".upload") as spool:
            sampling: Sampling | None = None
            received = 0
            async for chunk in request_iterator:
                if sampling is None:
                    # Checked at the first chunk, so a bad request is refused before the upload.
                    sampling = self._sampling(
                        chunk.WhichOneof("sampling"), chunk.uniform_frames, chunk.every_nth_frame, chunk.stride_seconds
                    )
                received += len(chunk.data)
                if received > limit:
                    # Refused at the chunk that passes the limit: the rest of the upload is never read.
                    raise TooLarge(f"video upload passed {limit} bytes, the limit; send sampled frames instead")
                await asyncio.to_thread(spool.write, chunk.data)
            if sampling is None:
                raise InvalidInput("the stream carried no chunks")
            spool.flush()
            info, cancelled = ClipInfo(), threading.Event()
            frames = decode_video(Path(spool.name), sampling, self.video_limits, info, cancelled)
            return await self._analyze_clip(frames, info, cancelled, start)

    async def _analyze_clip(
        self, frames: Iterator[SampledFrame], info: ClipInfo, cancelled: threading.Event, start: float
    ) -> vision_pb2.AnalyzeVideoResponse:
        try:
            prepared = await asyncio.to_thread(self._prepare_frames, frames, cancelled)
        except asyncio.CancelledError:
            # The client went away or its deadline passed: tell the decoding thread to stop.
            cancelled.set()
            raise
        # Every face of every sampled frame goes to Triton together, in as few batches as it accepts.
        all_probs = await self.model.classify(np.concatenate([f.crops for f in prepared]))
        tracker = IouTracker(self.settings.track_min_iou)
        aggregate = ClipAggregate()
        response = vision_pb2.AnalyzeVideoResponse(model=self.model.info)
        offset = 0
        for frame in prepared:
            probs = all_probs[offset : offset + len(frame.boxes)]
            offset += len(frame.boxes)
            track_ids = tracker.update(frame.boxes)
            aggregate.add_frame(track_ids, probs)
            response.frames.append(
                vision_pb2.FrameResult(
                    index=frame.index,
                    timestamp_s=frame.timestamp_s,
                    faces=[
                        vision_pb2.Face(
                            box=vision_pb2.BoundingBox(x=b.x, y=b.y, width=b.width, height=b.height),
                            distribution=distribution_from_probs(p),
                            track_id=track_id,
                        )
                        for b, p, track_id in zip(frame.boxes, probs, track_ids, strict=True)
                    ],
                )
            )
        for track_id, mean_probs, seen in aggregate.tracks():
            response.tracks.append(
                vision_pb2.FaceTrack(
                    track_id=track_id, distribution=distribution_from_probs(mean_probs), frames_seen=seen
                )
            )
        clip = aggregate.clip()
        if clip is not None:
            response.aggregate.CopyFrom(distribution_from_probs(clip))
        response.frames_sampled = len(prepared)
        response.frames_without_faces = aggregate.frames_without_faces
        response.duration_s = info.duration_s
        response.latency_ms = (time.perf_counter() - start) * 1000
        return response
