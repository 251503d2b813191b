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
from typing import cast

import grpc
import numpy as np

from emomesh.errors import EmomeshError, InvalidInput, TooLarge
from emomesh.labels import distribution_from_probs
from emomesh.tracking import IouTracker
from emotion.common.v1 import common_pb2
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.vision.config import VisionSettings
from services.vision.faces import FaceDetector
from services.vision.metrics import BATCH_ITEM_ERRORS, FACES_PER_IMAGE, IMAGE_STAGE_SECONDS
from services.vision.model import ExpressionClassifier
from services.vision.preprocess import (
    Box,
    DetectedFace,
    Point,
    crop_faces,
    decode_image,
    equalize_faces,
    raw_image,
    to_gray,
)
from services.vision.tracking import ClipAggregate
from services.vision.video import (
    ClipInfo,
    SampledFrame,
    Sampling,
    VideoLimits,
    decode_sequence,
    decode_video,
    sampling_from_fields,
)

# Sampled video frames detected in one detector call: bounded by count and by decoded pixels (the
# frames are held until their faces are cropped), so a clip of 4K frames does not hold 32 of them.
FRAMES_PER_DETECTION = 32
PIXELS_PER_DETECTION = 64_000_000


@dataclass
class _Prepared:
    """One image after decoding and detection, before classification."""

    width: int
    height: int
    faces: list[DetectedFace]
    crops: np.ndarray


@dataclass
class _PreparedFrame:
    """One sampled video frame after detection, before classification."""

    index: int
    timestamp_s: float
    faces: list[DetectedFace]
    crops: np.ndarray


def _point(point: Point) -> vision_pb2.Point:
    return vision_pb2.Point(x=point.x, y=point.y)


def face_message(face: DetectedFace, probs: np.ndarray, track_id: int = 0) -> vision_pb2.Face:
    box = face.box
    message = vision_pb2.Face(
        box=vision_pb2.BoundingBox(x=box.x, y=box.y, width=box.width, height=box.height),
        distribution=distribution_from_probs(probs),
        track_id=track_id,
        detection_score=face.score,
    )
    if face.right_eye is not None and face.left_eye is not None and len(face.keypoints) == 4:
        nose, mouth, right_ear, left_ear = (_point(p) for p in face.keypoints)
        message.keypoints.CopyFrom(
            vision_pb2.FaceKeypoints(
                right_eye=_point(face.right_eye),
                left_eye=_point(face.left_eye),
                nose_tip=nose,
                mouth=mouth,
                right_ear=right_ear,
                left_ear=left_ear,
            )
        )
    return message


class VisionServicer(vision_pb2_grpc.VisionServiceServicer):
    def __init__(self, settings: VisionSettings, model: ExpressionClassifier, detector: FaceDetector) -> None:
        self.settings = settings
        self.model = model
        self.detector = detector

        self.video_limits = VideoLimits(settings.max_pixels, settings.max_video_frames, settings.max_decoded_frames)

    def _decode_one(self, request: vision_pb2.AnalyzeImageRequest) -> np.ndarray:
        """In colour when the detector takes colour and the image goes to it; a face crop must be at
        least the minimum face size."""
        color = self.detector.color and not request.whole_image_is_face
        if request.HasField("raw"):
            if request.image:
                raise InvalidInput("set `image` or `raw`, not both")
            image = raw_image(request.raw, self.settings.max_pixels, color)
        else:
            image = decode_image(request.image, self.settings.max_image_bytes, self.settings.max_pixels, color)
        if request.whole_image_is_face and min(image.shape[:2]) < self.settings.min_face_px:
            # Enlarged to the model's input, a few pixels would still get a confident label.
            raise InvalidInput(
                f"whole_image_is_face: the image is {image.shape[1]}x{image.shape[0]}; a face crop must be "
                f"at least {self.settings.min_face_px}x{self.settings.min_face_px} pixels"
            )
        return image

    def _decode(self, requests: list[vision_pb2.AnalyzeImageRequest]) -> list[np.ndarray | EmomeshError]:
        """CPU-bound (runs in a worker thread): every image decoded, or the error of the one that could not
        be, naming its index."""
        images: list[np.ndarray | EmomeshError] = []
        for index, request in enumerate(requests):
            try:
                self._check_max_faces(request.max_faces)
                images.append(self._decode_one(request))
            except (InvalidInput, TooLarge) as exc:
                images.append(type(exc)(f"images[{index}]: {exc.message}"))
        return images

    def _crop(
        self, images: list[np.ndarray], faces: list[list[DetectedFace]], margins: list[float]
    ) -> list[np.ndarray]:
        """CPU-bound (runs in a worker thread): each image's faces as model input."""
        crops = [
            crop_faces(to_gray(image), image_faces, self.model.input_size, margin)
            for image, image_faces, margin in zip(images, faces, margins, strict=True)
        ]
        return [equalize_faces(crop) for crop in crops] if self.model.equalized_input else crops

    async def _prepare(
        self, requests: list[vision_pb2.AnalyzeImageRequest], images: list[np.ndarray], start: float
    ) -> list[_Prepared]:
        """Detect (one detector call for every decoded image that needs it), crop."""
        decoded = time.perf_counter()
        to_detect = [i for i, request in enumerate(requests) if not request.whole_image_is_face]
        detected = await self.detector.detect([images[i] for i in to_detect])
        faces: list[list[DetectedFace]] = []
        margins = []
        found = dict(zip(to_detect, detected, strict=True))
        for i, (image, request) in enumerate(zip(images, requests, strict=True)):
            if request.whole_image_is_face:
                # The caller says the image is a face crop: no detection, no margin around it.
                faces.append([DetectedFace(Box(0, 0, int(image.shape[1]), int(image.shape[0])))])
                margins.append(0.0)
            else:
                faces.append(found[i][: request.max_faces or self.settings.max_faces])
                margins.append(self.settings.face_margin)
        detect_end = time.perf_counter()
        crops = await asyncio.to_thread(self._crop, images, faces, margins)
        IMAGE_STAGE_SECONDS.labels("decode").observe(decoded - start)
        IMAGE_STAGE_SECONDS.labels("detect").observe(detect_end - decoded)
        IMAGE_STAGE_SECONDS.labels("crop").observe(time.perf_counter() - detect_end)
        for image_faces in faces:
            FACES_PER_IMAGE.observe(len(image_faces))
        return [
            _Prepared(int(image.shape[1]), int(image.shape[0]), image_faces, image_crops)
            for image, image_faces, image_crops in zip(images, faces, crops, strict=True)
        ]

    def _response(self, prepared: _Prepared, probs: np.ndarray, start: float) -> vision_pb2.AnalyzeImageResponse:
        faces = [face_message(face, p) for face, p in zip(prepared.faces, probs, strict=True)]
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
        image = await asyncio.to_thread(self._decode_one, request)
        (prepared,) = await self._prepare([request], [image], start)
        probs = await self.model.classify(prepared.crops)
        return self._response(prepared, probs, start)

    async def AnalyzeImages(
        self, request: vision_pb2.AnalyzeImagesRequest, context: grpc.aio.ServicerContext
    ) -> vision_pb2.AnalyzeImagesResponse:
        """One result per image. A bad image (corrupt, too large, a face crop below the minimum size, a
        negative max_faces) gets a result with only `error` set and the others are analysed; only an
        empty or oversize request fails the call."""
        start = time.perf_counter()
        if not request.images:
            raise InvalidInput("images is empty")
        limit = self.settings.max_images_per_request
        if len(request.images) > limit:
            raise InvalidInput(f"{len(request.images)} images in one call; the limit is {limit}: send several calls")
        requests = list(request.images)
        decoded = await asyncio.to_thread(self._decode, requests)
        good = [i for i, outcome in enumerate(decoded) if isinstance(outcome, np.ndarray)]
        results: dict[int, vision_pb2.AnalyzeImageResponse] = {}
        for index, outcome in enumerate(decoded):
            if isinstance(outcome, EmomeshError):
                BATCH_ITEM_ERRORS.labels(outcome.code.name).inc()
                error = common_pb2.ItemError(code=outcome.code.value[0], message=outcome.message)
                results[index] = vision_pb2.AnalyzeImageResponse(error=error)
        if good:
            prepared = await self._prepare(
                [requests[i] for i in good], [cast(np.ndarray, decoded[i]) for i in good], start
            )
            # Every face of every image goes to Triton together, in as few batches as it accepts.
            all_probs = await self.model.classify(np.concatenate([p.crops for p in prepared]))
            offset = 0
            for index, item in zip(good, prepared, strict=True):
                results[index] = self._response(item, all_probs[offset : offset + len(item.faces)], start)
                offset += len(item.faces)
        return vision_pb2.AnalyzeImagesResponse(
            results=[results[i] for i in range(len(requests))], latency_ms=(time.perf_counter() - start) * 1000
        )

    @staticmethod
    def _next_frames(frames: Iterator[SampledFrame], cancelled: threading.Event) -> list[SampledFrame]:
        """The next group of sampled frames for one detector call (decoding them: CPU-bound, runs in a
        worker thread); empty at the end of the clip or once `cancelled` is set."""
        group: list[SampledFrame] = []
        pixels = 0
        for frame in frames:
            if cancelled.is_set():
                return []
            group.append(frame)
            pixels += frame.image.shape[0] * frame.image.shape[1]
            if len(group) >= FRAMES_PER_DETECTION or pixels >= PIXELS_PER_DETECTION:
                break
        return group

    async def _prepare_frames(self, frames: Iterator[SampledFrame], cancelled: threading.Event) -> list[_PreparedFrame]:
        """Decodes the sampled frames a group at a time (the iterator is lazy), detects each group's
        faces in one detector call and keeps only the face crops, so memory holds one group of
        frames. Decoding stops early once `cancelled` is set: a worker thread outlives the cancelled
        call, and a long clip would otherwise go on burning CPU."""
        prepared = []
        while group := await asyncio.to_thread(self._next_frames, frames, cancelled):
            images = [frame.image for frame in group]
            faces = [found[: self.settings.max_faces] for found in await self.detector.detect(images)]
            crops = await asyncio.to_thread(self._crop, images, faces, [self.settings.face_margin] * len(group))
            for frame, frame_faces, frame_crops in zip(group, faces, crops, strict=True):
                FACES_PER_IMAGE.observe(len(frame_faces))
                prepared.append(_PreparedFrame(frame.index, frame.timestamp_s, frame_faces, frame_crops))
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
            frames = decode_video(request.video, sampling, self.video_limits, info, cancelled, self.detector.color)
        else:
            frames = decode_sequence(
                list(request.frames.images),
                request.frames.fps,
                sampling,
                self.video_limits,
                self.settings.max_image_bytes,
                info,
                self.detector.color,
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
            frames = decode_video(Path(spool.name), sampling, self.video_limits, info, cancelled, self.detector.color)
            return await self._analyze_clip(frames, info, cancelled, start)

    async def _analyze_clip(
        self, frames: Iterator[SampledFrame], info: ClipInfo, cancelled: threading.Event, start: float
    ) -> vision_pb2.AnalyzeVideoResponse:
        try:
            prepared = await self._prepare_frames(frames, cancelled)
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
            probs = all_probs[offset : offset + len(frame.faces)]
            offset += len(frame.faces)
            track_ids = tracker.update([face.box for face in frame.faces])
            aggregate.add_frame(track_ids, probs)
            response.frames.append(
                vision_pb2.FrameResult(
                    index=frame.index,
                    timestamp_s=frame.timestamp_s,
                    faces=[
                        face_message(face, p, track_id)
                        for face, p, track_id in zip(frame.faces, probs, track_ids, strict=True)
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
