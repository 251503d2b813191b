import numpy as np

from services.vision.tracking import ClipAggregate


def one_hot(i: int) -> np.ndarray:
    p = np.zeros(7, np.float32)
    p[i] = 1
    return p


def test_aggregate_ignores_faceless_frames_and_weighs_frames_equally() -> None:
    agg = ClipAggregate()
    agg.add_frame([1], np.stack([one_hot(3)]))
    agg.add_frame([], np.zeros((0, 7), np.float32))
    agg.add_frame([1, 2], np.stack([one_hot(3), one_hot(4)]))
    agg.add_frame([], np.zeros((0, 7), np.float32))
    assert agg.frames_without_faces == 2 and agg.frames_with_faces == 2
    clip = agg.clip()
    assert clip is not None
    # Frame 1: all happy; frame 3: half happy half sad -> 0.75 happy; faceless frames add nothing.
    np.testing.assert_allclose(clip, 0.75 * one_hot(3) + 0.25 * one_hot(4))
    tracks = agg.tracks()
    assert [(tid, seen) for tid, _, seen in tracks] == [(1, 2), (2, 1)]
    np.testing.assert_allclose(tracks[0][1], one_hot(3))


def test_aggregate_without_any_face_is_absent() -> None:
    agg = ClipAggregate()
    agg.add_frame([], np.zeros((0, 7), np.float32))
    assert agg.clip() is None and agg.tracks() == [] and agg.frames_without_faces == 1
