"""Aggregation of distributions per track and per clip; the tracking itself (by box overlap) is the
shared library's (emomesh.tracking)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emomesh.labels import NUM_LABELS


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
