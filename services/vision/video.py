"""Pure video input: which frames to sample, and decoding a video file or a frame sequence into the
sampled gray frames, one frame at a time.

Decoding streams: PyAV's demuxer reads packets from a file object and decodes them one by one, and
only the sampled frames are converted and handed on (as a generator), so memory holds one decoded
frame at a time however long the clip is. Encoded bytes arrive in one gRPC message, whose size the
server bounds (EMOMESH_VISION_MAX_MESSAGE_BYTES) before any of it is read; they are wrapped in a
BytesIO, not copied to disk. Clips larger than one message come through AnalyzeVideoStream, which
spools the chunks to a temporary file (bounded by EMOMESH_VISION_MAX_VIDEO_BYTES) decoded from disk."""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np

from emomesh.errors import InvalidInput
from services.vision.preprocess import decode_image, to_gray

DEFAULT_UNIFORM_FRAMES = 8


@dataclass(frozen=True)
class Sampling:
    """uniform: `value` frames spread evenly; every_nth: every `value`-th frame; stride: one frame per
    `value` seconds."""

    kind: Literal["uniform", "every_nth", "stride"]
    value: float

    @classmethod
    def uniform(cls, frames: int = DEFAULT_UNIFORM_FRAMES) -> Sampling:
        return cls("uniform", frames)


def sampling_from_fields(which: str | None, uniform: int, every_nth: int, stride_s: float, max_frames: int) -> Sampling:
    """The request's `sampling` oneof as a Sampling, validated. `which` is WhichOneof('sampling')."""
    if which is None:
        return Sampling.uniform(min(DEFAULT_UNIFORM_FRAMES, max_frames))
    if which == "uniform_frames":
        if not 1 <= uniform <= max_frames:
            raise InvalidInput(f"uniform_frames must be between 1 and {max_frames}, got {uniform}")
        return Sampling("uniform", uniform)
    if which == "every_nth_frame":
        if every_nth < 1:
            raise InvalidInput(f"every_nth_frame must be >= 1, got {every_nth}")
        return Sampling("every_nth", every_nth)
    if not (stride_s > 0 and math.isfinite(stride_s)):
        raise InvalidInput(f"stride_seconds must be a positive number, got {stride_s}")
    return Sampling("stride", stride_s)


def uniform_indices(total: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over `total` frames: the middle frame of each of `count`
    equal segments (so neither the often black first frame nor the last is favoured). All frames
    when the clip is shorter than `count`."""
    if total <= count:
        return list(range(total))
    return [min(total - 1, int((i + 0.5) * total / count)) for i in range(count)]


class FrameSelector:
    """Decides frame by frame, in time order, whether a frame is sampled; needs the frame count only
    for uniform sampling."""

    def __init__(self, sampling: Sampling, total_frames: int | None) -> None:
        self.sampling = sampling
        self._next_time = 0.0
        self._wanted: set[int] | None = None
        if sampling.kind == "uniform":
            if total_frames is None:
                raise ValueError("uniform sampling needs the frame count")
            self._wanted = set(uniform_indices(total_frames, int(sampling.value)))

    def take(self, index: int, timestamp_s: float) -> bool:
        if self._wanted is not None:
            return index in self._wanted
        if self.sampling.kind == "every_nth":
            return index % int(self.sampling.value) == 0
        # Stride: the first frame at or after each multiple of the stride. The small tolerance keeps
        # a 0.5 s stride over 30 fps timestamps (0.4999...) from slipping a frame late.
        if timestamp_s + 1e-6 >= self._next_time:
            self._next_time = (math.floor(timestamp_s / self.sampling.value + 1e-6) + 1) * self.sampling.value
            return True
        return False

    def max_count(self, total_frames: int | None, duration_s: float | None) -> int | None:
        """How many frames this sampling will take at most, when the clip's length is known."""
        if self.sampling.kind == "uniform":
            return len(self._wanted or ())
        if self.sampling.kind == "every_nth" and total_frames is not None:
            return math.ceil(total_frames / self.sampling.value)
        if self.sampling.kind == "stride" and duration_s is not None:
            return math.floor(duration_s / self.sampling.value) + 1
        return None


@dataclass(frozen=True)
class SampledFrame:
    index: int
    timestamp_s: float
    # Gray [H, W], or RGB [H, W, 3] when decoded with color=True (for the BlazeFace detector).
    image: np.ndarray

    @property
    def gray(self) -> np.ndarray:
        return to_gray(self.image)


@dataclass(frozen=True)
class VideoLimits:
    max_pixels: int
    # Sampled frames per request: bounds the faces sent to the model and the response size.
    max_sampled_frames: int
    # Decoded frames per request: bounds CPU time (every frame up to the last sampled one is decoded).
    max_decoded_frames: int


@dataclass
class ClipInfo:
    """Filled while decoding: what the response reports about the clip."""

    total_frames: int | None = None
    duration_s: float = 0.0
    fps: float = 0.0
    sampled: int = 0


def _too_many(limit: int) -> InvalidInput:
    return InvalidInput(
        f"this sampling would take more than {limit} frames; ask for fewer (uniform_frames) "
        "or sparser (every_nth_frame, stride_seconds) frames"
    )


def _open_container(source: bytes | Path) -> av.container.InputContainer:
    try:
        container = av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InvalidInput("video could not be read: not a video file, or its header is corrupt") from exc
    if not container.streams.video:
        container.close()
        raise InvalidInput("the file has no video stream")
    # FFmpeg opens a JPEG or PNG as a one-frame "video" (its image2 / *_pipe demuxers); a still image
    # sent here is more likely a client mistake, and AnalyzeImage is the call for it.
    if container.format.name == "image2" or container.format.name.endswith("_pipe"):
        container.close()
        raise InvalidInput("the file is a still image, not a video; use AnalyzeImage")
    return container


def _count_packets(source: bytes | Path) -> int:
    """Frames of the first video stream, counted by demuxing packets without decoding them (cheap):
    the fallback for containers (WebM, MKV, some AVI) whose header does not state a frame count."""
    with _open_container(source) as container:
        stream = container.streams.video[0]
        try:
            return sum(1 for packet in container.demux(stream) if packet.size)
        except av.FFmpegError as exc:
            raise InvalidInput(f"video is corrupt: {exc}") from exc


def decode_video(
    source: bytes | Path,
    sampling: Sampling,
    limits: VideoLimits,
    info: ClipInfo,
    cancelled: threading.Event | None = None,
    color: bool = False,
) -> Iterator[SampledFrame]:
    """Yields the sampled frames of an encoded video (bytes in memory, or a file, such as a spooled
    upload) as gray images (RGB with `color`), decoding one frame at a time.
    Fills `info` (frame count, duration, fps, frames sampled) as it goes. Raises InvalidInput for
    empty, unreadable, corrupt or over-limit input. Stops quietly once `cancelled` is set (checked at
    every decoded frame: sampled frames can be thousands of decoded frames apart)."""
    if (len(source) if isinstance(source, bytes) else source.stat().st_size) == 0:
        raise InvalidInput("video is empty")
    container = _open_container(source)
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > limits.max_pixels:
            megapixels = limits.max_pixels / 1e6
            raise InvalidInput(f"video frames are {width}x{height}; the limit is {megapixels:.1f} megapixels")
        info.fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        if stream.duration is not None and stream.time_base is not None:
            info.duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            info.duration_s = container.duration / av.time_base
        total = stream.frames or None
        if total is None and sampling.kind == "uniform":
            total = _count_packets(source)
        info.total_frames = total
        selector = FrameSelector(sampling, total)
        expected = selector.max_count(total, info.duration_s or None)
        if expected is not None and expected > limits.max_sampled_frames:
            raise _too_many(limits.max_sampled_frames)
        index = -1
        try:
            for index, frame in enumerate(container.decode(stream)):
                if cancelled is not None and cancelled.is_set():
                    return
                if index >= limits.max_decoded_frames:
                    raise InvalidInput(
                        f"video has more than {limits.max_decoded_frames} frames; send a shorter clip or sampled frames"
                    )
                timestamp = float(frame.time) if frame.time is not None else index / (info.fps or 1.0)
                if not selector.take(index, timestamp):
                    continue
                info.sampled += 1
                if info.sampled > limits.max_sampled_frames:
                    raise _too_many(limits.max_sampled_frames)
                yield SampledFrame(index, timestamp, frame.to_ndarray(format="rgb24" if color else "gray"))
        except av.FFmpegError as exc:
            raise InvalidInput(f"video is corrupt at frame {index + 1}: {exc}") from exc
        if index < 0:
            raise InvalidInput("video has no decodable frames")
        info.total_frames = info.total_frames or index + 1
        if not info.duration_s and info.fps:
            info.duration_s = (index + 1) / info.fps


def decode_sequence(
    images: list[bytes],
    fps: float,
    sampling: Sampling,
    limits: VideoLimits,
    max_image_bytes: int,
    info: ClipInfo,
    color: bool = False,
) -> Iterator[SampledFrame]:
    """Yields the sampled frames of a sequence of encoded images (gray, RGB with `color`). All frames
    must have one size (face tracks compare boxes across frames); only sampled frames are decoded."""
    if not images:
        raise InvalidInput("frames.images is empty")
    if fps < 0 or not math.isfinite(fps):
        raise InvalidInput(f"frames.fps must be >= 0, got {fps}")
    if sampling.kind == "stride" and fps == 0:
        raise InvalidInput("stride_seconds needs frames.fps (the sequence's frame rate)")
    info.total_frames, info.fps = len(images), fps
    info.duration_s = len(images) / fps if fps else 0.0
    selector = FrameSelector(sampling, len(images))
    expected = selector.max_count(len(images), info.duration_s or None)
    if expected is not None and expected > limits.max_sampled_frames:
        raise _too_many(limits.max_sampled_frames)
    first_size: tuple[int, int] | None = None
    for index, data in enumerate(images):
        timestamp = index / fps if fps else 0.0
        if not selector.take(index, timestamp):
            continue
        try:
            image = decode_image(data, max_image_bytes, limits.max_pixels, color)
            height, width = image.shape[:2]
            if first_size is not None and (width, height) != first_size:
                raise InvalidInput(
                    f"frame is {width}x{height} but the first sampled frame is {first_size[0]}x{first_size[1]}; "
                    "all frames of a sequence must have the same size"
                )
            first_size = first_size or (width, height)
        except InvalidInput as exc:
            raise InvalidInput(f"frames.images[{index}]: {exc.message}") from exc
        info.sampled += 1
        yield SampledFrame(index, timestamp, image)
