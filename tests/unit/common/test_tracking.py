import pytest

from emomesh.tracking import IouTracker, iou, shift
from emotion.vision.v1 import vision_pb2
from services.vision.preprocess import Box


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


def test_contract_boxes_track_as_service_boxes_do() -> None:
    tracker = IouTracker(min_iou=0.3)
    assert tracker.update([vision_pb2.BoundingBox(x=0, y=0, width=100, height=100)]) == [1]
    assert tracker.update([vision_pb2.BoundingBox(x=8, y=4, width=100, height=100)]) == [1]


def test_a_face_that_jumped_less_than_its_size_keeps_its_track_when_shift_matching_is_on() -> None:
    jumped = [Box(0, 0, 100, 100)], [Box(90, 0, 100, 100)]  # no overlap left after dropped frames
    plain, live = IouTracker(), IouTracker(max_shift=1.0)
    assert [plain.update(b) for b in jumped] == [[1], [2]]
    assert [live.update(b) for b in jumped] == [[1], [1]]
    # Farther than one face size: someone else.
    assert live.update([Box(300, 0, 100, 100)]) == [2]


def test_shift_matching_pairs_nearest_first_and_leaves_overlap_matches_alone() -> None:
    tracker = IouTracker(max_shift=1.0)
    assert tracker.update([Box(0, 0, 100, 100), Box(400, 0, 100, 100)]) == [1, 2]
    # The first face overlaps its track; the second jumped 80 px: matched by shift, not a new track.
    assert tracker.update([Box(10, 0, 100, 100), Box(480, 0, 100, 100)]) == [1, 2]
    assert shift(Box(0, 0, 100, 100), Box(60, 80, 100, 100)) == 1.0
    assert shift(Box(0, 0, 0, 0), Box(0, 0, 0, 0)) == float("inf")
