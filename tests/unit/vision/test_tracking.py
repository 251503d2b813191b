import numpy as np
import pytest

from services.vision.preprocess import Box
from services.vision.tracking import ClipAggregate, IouTracker, iou


def test_iou() -> None:
    a = Box(0, 0, 10, 10)
    assert iou(a, a) == 1.0
    assert iou(a, Box(5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou(a, Box(10, 10, 5, 5)) == 0.0
    assert iou(Box(0, 0, 0, 0), Box(0, 0, 0, 0)) == 0.0


def test_tracker_follows_moving_faces_and_keeps_ids_apart() -> None:
    tracker = IouTracker(min_iou=0.3)
    left, right = Box(0, 0, 100, 100), Box(300, 0, 100, 100)
    assert tracker.update([left, right]) == [1, 2]
    # Both moved a little; listed in the other order: ids follow the boxes, not the list order.
    assert tracker.update([Box(310, 5, 100, 100), Box(10, 5, 100, 100)]) == [2, 1]
    # A face far from both is someone new.
    assert tracker.update([Box(10, 5, 100, 100), Box(600, 0, 100, 100)]) == [1, 3]


def test_tracker_bridges_short_gaps_only() -> None:
    tracker = IouTracker(min_iou=0.3, max_gap=1)
    face = Box(50, 50, 80, 80)
    assert tracker.update([face]) == [1]
    assert tracker.update([]) == []  # a missed detection
    assert tracker.update([face]) == [1]
    assert tracker.update([]) == []
    assert tracker.update([]) == []
    assert tracker.update([face]) == [2]  # gone for longer than max_gap: a new track


def test_each_track_matches_at_most_one_face() -> None:
    tracker = IouTracker(min_iou=0.1)
    tracker.update([Box(0, 0, 100, 100)])
    assert tracker.update([Box(10, 0, 100, 100), Box(0, 10, 100, 100)]) == [1, 2]


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
