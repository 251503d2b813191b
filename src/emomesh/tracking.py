"""Face tracking by box overlap, for any box with x, y, width and height (the vision service's boxes,
the contract's BoundingBox): sampled video frames (services.vision) and live streams (services.fusion)
follow faces the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


class Box(Protocol):
    @property
    def x(self) -> int: ...

    @property
    def y(self) -> int: ...

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes; 0 for disjoint or empty boxes."""
    ix = max(0, min(a.x + a.width, b.x + b.width) - max(a.x, b.x))
    iy = max(0, min(a.y + a.height, b.y + b.height) - max(a.y, b.y))
    inter = ix * iy
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def shift(a: Box, b: Box) -> float:
    """Distance between the two boxes' centres, in sizes (the larger side) of the larger box."""
    size = max(a.width, a.height, b.width, b.height)
    if size <= 0:
        return float("inf")
    dx = (a.x + a.width / 2) - (b.x + b.width / 2)
    dy = (a.y + a.height / 2) - (b.y + b.height / 2)
    return float((dx * dx + dy * dy) ** 0.5 / size)


@dataclass
class _Track:
    track_id: int
    box: Box
    last_frame: int


class IouTracker:
    """Greedy IoU matching of each frame's faces to the tracks seen in recent frames.

    Sampled frames can be far apart (8 uniform frames of a minute-long clip), so matching is by overlap
    only, with a low threshold, and a track survives `max_gap` sampled frames without its face (a
    missed detection or a turned head) before a face at that place counts as someone new.

    `max_shift` (0: off) also matches, among the faces and tracks left unmatched by overlap, a face whose
    centre moved at most `max_shift` face sizes (the larger side) since the track last saw it, nearest
    first. A live stream needs it: when the face lane drops frames, a face that moves fast has left its
    last box entirely by the next answered frame."""

    def __init__(self, min_iou: float = 0.3, max_gap: int = 2, max_shift: float = 0.0) -> None:
        self.min_iou = min_iou
        self.max_gap = max_gap
        self.max_shift = max_shift
        self._tracks: list[_Track] = []
        self._next_id = 1  # 0 means "not tracked" (still images)
        self._frame = -1

    def update(self, boxes: Sequence[Box]) -> list[int]:
        """Track ids for the faces of the next sampled frame, in the order of `boxes`."""
        self._frame += 1
        live = [t for t in self._tracks if self._frame - t.last_frame <= self.max_gap + 1]
        pairs = sorted(
            ((iou(box, track.box), b, t) for b, box in enumerate(boxes) for t, track in enumerate(live)),
            key=lambda item: item[0],
            reverse=True,
        )
        ids = [0] * len(boxes)
        used_tracks: set[int] = set()

        def claim(ranked: list[tuple[float, int, int]], good_enough: Callable[[float], bool]) -> None:
            """Gives each face the best track left for it, best pairs first, while pairs are good enough."""
            for score, b, t in ranked:
                if not good_enough(score):
                    break
                if ids[b] or t in used_tracks:
                    continue
                ids[b] = live[t].track_id
                used_tracks.add(t)
                live[t].box, live[t].last_frame = boxes[b], self._frame

        claim(pairs, lambda overlap: overlap >= self.min_iou)
        if self.max_shift > 0:
            near = sorted(
                (shift(box, track.box), b, t)
                for b, box in enumerate(boxes)
                for t, track in enumerate(live)
                if not ids[b] and t not in used_tracks
            )
            claim(near, lambda distance: distance <= self.max_shift)
        for b, box in enumerate(boxes):
            if not ids[b]:
                ids[b] = self._next_id
                live.append(_Track(self._next_id, box, self._frame))
                self._next_id += 1
        self._tracks = live
        return ids
