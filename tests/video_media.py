"""Small videos made by the tests themselves: skimage's astronaut (one frontal face) moving slowly over
a plain background, optionally with faceless frames, encoded with PyAV."""

from __future__ import annotations

import io

import av
import cv2
import numpy as np

FRAME_W, FRAME_H = 480, 320


def astronaut_bgr(side: int = 240) -> np.ndarray:
    from skimage import data

    return cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (side, side), interpolation=cv2.INTER_AREA)


def scene(index: int, with_face: bool = True, width: int = FRAME_W, height: int = FRAME_H) -> np.ndarray:
    """Frame `index`: the astronaut shifted 2 px right per frame (so tracks must follow it), or a
    drawn faceless frame."""
    frame = np.full((height, width, 3), 200, np.uint8)
    if with_face:
        face = astronaut_bgr(min(240, height - 20))
        x = min(20 + 2 * index, width - face.shape[1])
        frame[10 : 10 + face.shape[0], x : x + face.shape[1]] = face
    else:
        cv2.circle(frame, (width // 2, height // 2), height // 4, (30, 120, 220), -1)
    return frame


def encode_video(frames: list[np.ndarray], fps: int = 10, fmt: str = "mp4", codec: str = "mpeg4") -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream), f"{codec} is not a video codec"
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def face_video(count: int = 20, faceless: tuple[int, ...] = (), fps: int = 10, fmt: str = "mp4") -> bytes:
    codec = "libvpx" if fmt == "webm" else "mpeg4"
    return encode_video([scene(i, i not in faceless) for i in range(count)], fps, fmt, codec)
