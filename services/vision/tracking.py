"""Pure face tracking across sampled frames (by box overlap) and aggregation of distributions per
track and per clip."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emomesh.labels import NUM_LABELS
from services.vision.preprocess import Box


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes; 0 for disjoint or empty boxes."""
    ix = max(0, min(a.x + a.width, b.x + b.width) - max(a.x, b.x))
    iy = max(0, min(a.y + a.height, b.y + b.height) - max(a.y, b.y))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    track_id: int
    box: Box
    last_frame: int


class IouTracker:
    """Greedy IoU matching of each frame's faces to the tracks seen in recent frames.

    Sampled frames can be far apart (8 uniform frames of a minute-long clip), so matching is by overlap
    only, with a low threshold, and a track survives `max_gap` sampled frames without its face (a
    missed detection or a turned head) before a face at that place counts as someone new."""

    def __init__(self, min_iou: float = 0.3, max_gap: int = 2) -> None:
        self.min_iou = min_iou
        self.max_gap = max_gap
        self._tracks: list[_Track] = []
        self._next_id = 1  # 0 means "not tracked" (still images)
        self._frame = -1

    def update(self, boxes: list[Box]) -> list[int]:
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
        for overlap, b, t in pairs:
            if overlap < self.min_iou:
                break
            if ids[b] or t in used_tracks:
                continue
            ids[b] = live[t].track_id
            used_tracks.add(t)
            live[t].box, live[t].last_frame = boxes[b], self._frame
        for b, box in enumerate(boxes):
            if not ids[b]:
                ids[b] = self._next_id
                live.append(_Track(self._next_id, box, self._frame))
                self._next_id += 1
        self._tracks = live
        return ids


@dataclass
class ClipAggregate:
    """Distributions of a clip: per track (mean over the frames where the face was seen) and for the
    whole clip (mean over frames with at least one face; each such frame counts once, as the mean of
    its faces). Frames without faces are counted, never averaged in as zeros."""

    track_sums: dict[int, np.ndarray] = field(default_factory=dict)
    track_frames: dict[int, int] = field(default_factory=dict)
    clip_sum: np.ndarray = field(default_factory=lambda: np.zeros(NUM_LABELS, dtype=np.float64))
    frames_with_faces: int = 0
    frames_without_faces: int = 0

    def add_frame(self, track_ids: list[int], probs: np.ndarray) -> None:
        if not track_ids:
            self.frames_without_faces += 1
            return
        for track_id, p in zip(track_ids, probs, strict=True):
            self.track_sums[track_id] = self.track_sums.get(track_id, 0.0) + p.astype(np.float64)
            self.track_frames[track_id] = self.track_frames.get(track_id, 0) + 1
        self.clip_sum += probs.astype(np.float64).mean(axis=0)
        self.frames_with_faces += 1

    def tracks(self) -> list[tuple[int, np.ndarray, int]]:
        """(track id, mean probabilities, frames seen), most-seen track first."""
        out = [(tid, self.track_sums[tid] / n, n) for tid, n in self.track_frames.items()]
        return sorted(out, key=lambda item: (-item[2], item[0]))

    def clip(self) -> np.ndarray | None:
        """Mean over frames with faces; None when no sampled frame had a face."""
        return self.clip_sum / self.frames_with_faces if self.frames_with_faces else None
