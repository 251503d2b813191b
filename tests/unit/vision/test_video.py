import threading
from pathlib import Path

import numpy as np
import pytest

from emomesh.errors import InvalidInput
from services.vision.video import (
    ClipInfo,
    FrameSelector,
    Sampling,
    VideoLimits,
    decode_sequence,
    decode_video,
    sampling_from_fields,
    uniform_indices,
)
from tests.conftest import encode
from tests.video_media import FRAME_H, FRAME_W, encode_video, face_video, scene

LIMITS = VideoLimits(max_pixels=4_000_000, max_sampled_frames=64, max_decoded_frames=10_000)


def test_uniform_indices_take_segment_middles_and_all_frames_of_short_clips() -> None:
    assert uniform_indices(80, 8) == [5, 15, 25, 35, 45, 55, 65, 75]
    assert uniform_indices(5, 8) == [0, 1, 2, 3, 4]
    assert uniform_indices(9, 3) == [1, 4, 7]
    assert uniform_indices(0, 8) == []


def test_every_nth_and_stride_selection() -> None:
    nth = FrameSelector(Sampling("every_nth", 4), None)
    assert [i for i in range(10) if nth.take(i, i / 30)] == [0, 4, 8]
    stride = FrameSelector(Sampling("stride", 0.5), None)
    # 30 fps: one frame per half second, including when timestamps land a hair under the mark.
    assert [i for i in range(61) if stride.take(i, i * (1 / 30))] == [0, 15, 30, 45, 60]
    # Irregular timestamps (variable frame rate): the first frame at or after each mark.
    irregular = FrameSelector(Sampling("stride", 1.0), None)
    times = [0.0, 0.4, 0.9, 1.3, 1.6, 2.7, 2.8, 4.1]
    assert [t for i, t in enumerate(times) if irregular.take(i, t)] == [0.0, 1.3, 2.7, 4.1]


def test_sampling_fields_are_validated() -> None:
    assert sampling_from_fields(None, 0, 0, 0.0, 64) == Sampling("uniform", 8)
    assert sampling_from_fields("every_nth_frame", 0, 3, 0.0, 64) == Sampling("every_nth", 3)
    assert sampling_from_fields("stride_seconds", 0, 0, 0.25, 64) == Sampling("stride", 0.25)
    with pytest.raises(InvalidInput, match="uniform_frames must be between 1 and 64"):
        sampling_from_fields("uniform_frames", 65, 0, 0.0, 64)
    with pytest.raises(InvalidInput, match="every_nth_frame"):
        sampling_from_fields("every_nth_frame", 0, 0, 0.0, 64)
    with pytest.raises(InvalidInput, match="stride_seconds"):
        sampling_from_fields("stride_seconds", 0, 0, float("nan"), 64)


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_decodes_sampled_frames_of_mp4_and_webm(fmt: str) -> None:
    # WebM states no frame count: uniform sampling falls back to counting packets.
    info = ClipInfo()
    frames = list(decode_video(face_video(20, fmt=fmt), Sampling.uniform(4), LIMITS, info))
    assert [f.index for f in frames] == [2, 7, 12, 17]
    assert [round(f.timestamp_s, 3) for f in frames] == [0.2, 0.7, 1.2, 1.7]
    assert all(f.gray.shape == (FRAME_H, FRAME_W) and f.gray.dtype == np.uint8 for f in frames)
    assert info.total_frames == 20 and info.sampled == 4 and info.fps == 10
    assert info.duration_s == pytest.approx(2.0)


def test_decoded_frames_show_the_drawn_content() -> None:
    frames = list(decode_video(face_video(4, faceless=(2,)), Sampling("every_nth", 1), LIMITS, ClipInfo()))
    faceless = frames[2].gray
    # The faceless frame is a plain background with a disc in the middle; compression keeps it close.
    assert abs(int(faceless[5, 5]) - 200) < 12
    assert abs(float(faceless.mean()) - float(frames[0].gray.mean())) > 5


def test_stride_sampling_of_a_file() -> None:
    frames = list(decode_video(face_video(20), Sampling("stride", 0.5), LIMITS, ClipInfo()))
    assert [f.index for f in frames] == [0, 5, 10, 15]


def test_garbage_empty_and_truncated_videos_are_refused() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        list(decode_video(b"", Sampling.uniform(), LIMITS, ClipInfo()))
    with pytest.raises(InvalidInput, match="not a video"):
        list(decode_video(b"this is not a video" * 100, Sampling.uniform(), LIMITS, ClipInfo()))
    jpeg = encode(scene(0))
    with pytest.raises(InvalidInput, match="still image"):
        list(decode_video(jpeg, Sampling.uniform(), LIMITS, ClipInfo()))
    video = face_video(10)
    with pytest.raises(InvalidInput):
        list(decode_video(video[:400], Sampling.uniform(), LIMITS, ClipInfo()))


def test_limits_on_sampled_and_decoded_frames() -> None:
    video = face_video(12)
    small = VideoLimits(max_pixels=4_000_000, max_sampled_frames=3, max_decoded_frames=10_000)
    with pytest.raises(InvalidInput, match="more than 3 frames"):
        list(decode_video(video, Sampling("every_nth", 2), small, ClipInfo()))
    short = VideoLimits(max_pixels=4_000_000, max_sampled_frames=64, max_decoded_frames=5)
    with pytest.raises(InvalidInput, match="more than 5 frames"):
        list(decode_video(video, Sampling("every_nth", 1), short, ClipInfo()))
    tiny = VideoLimits(max_pixels=1000, max_sampled_frames=64, max_decoded_frames=100)
    with pytest.raises(InvalidInput, match="megapixels"):
        list(decode_video(video, Sampling.uniform(), tiny, ClipInfo()))


def test_frame_sequence_sampling_and_timestamps() -> None:
    images = [encode(scene(i)) for i in range(10)]
    info = ClipInfo()
    frames = list(decode_sequence(images, 5.0, Sampling("stride", 1.0), LIMITS, 5_000_000, info))
    assert [(f.index, f.timestamp_s) for f in frames] == [(0, 0.0), (5, 1.0)]
    assert info.duration_s == 2.0 and info.total_frames == 10
    uniform = list(decode_sequence(images, 0.0, Sampling.uniform(2), LIMITS, 5_000_000, ClipInfo()))
    assert [f.index for f in uniform] == [2, 7]


def test_frame_sequence_errors_name_the_frame() -> None:
    same = [encode(scene(i)) for i in range(3)]
    mixed = [*same, encode(scene(3, width=320, height=240))]
    with pytest.raises(InvalidInput, match=r"images\[3\]: frame is 320x240 but the first sampled frame is 480x320"):
        list(decode_sequence(mixed, 0.0, Sampling("every_nth", 1), LIMITS, 5_000_000, ClipInfo()))
    with pytest.raises(InvalidInput, match=r"images\[1\]: image is empty"):
        list(decode_sequence([same[0], b""], 0.0, Sampling("every_nth", 1), LIMITS, 5_000_000, ClipInfo()))
    with pytest.raises(InvalidInput, match=r"needs frames\.fps"):
        list(decode_sequence(same, 0.0, Sampling("stride", 1.0), LIMITS, 5_000_000, ClipInfo()))
    with pytest.raises(InvalidInput, match="empty"):
        list(decode_sequence([], 0.0, Sampling.uniform(), LIMITS, 5_000_000, ClipInfo()))


def test_encode_video_round_trips_frame_count() -> None:
    video = encode_video([scene(i) for i in range(3)], fps=3)
    assert len(list(decode_video(video, Sampling("every_nth", 1), LIMITS, ClipInfo()))) == 3


def test_decoding_stops_when_cancelled() -> None:
    cancelled = threading.Event()
    frames = decode_video(face_video(10), Sampling("every_nth", 1), LIMITS, ClipInfo(), cancelled)
    assert next(frames).index == 0
    cancelled.set()
    assert list(frames) == []


def test_decodes_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "clip.webm"
    path.write_bytes(face_video(12, fmt="webm"))
    frames = list(decode_video(path, Sampling.uniform(3), LIMITS, ClipInfo()))
    assert [f.index for f in frames] == [2, 6, 10]
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InvalidInput, match="empty"):
        list(decode_video(empty, Sampling.uniform(), LIMITS, ClipInfo()))
