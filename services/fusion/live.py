"""The pure parts of a live stream (AnalyzeStream, services/fusion/stream.py): no I/O, no clock of their
own (times are passed in), so each rule is tested alone.

- LatestFrame: the face lane's one-slot mailbox. A new frame replaces a frame the lane has not taken
  yet (counted as dropped): the lane always works on the newest frame and never on a queue of stale ones.
- RateLimit: at most N events in any window of W seconds (frames per second).
- AudioBuffer: the newest seconds of PCM16 audio, mono, with positions counted from the stream's start.
- WindowSchedule: 3 s windows every 1.5 s; a lane that fell behind takes the newest due window and counts
  the ones it skipped.
- Utterances: speech windows grow an utterance; a window without speech (a pause) or the length limit
  ends it, and its words are then final.
- FreshResults: the newest result of each modality, forgotten once it is older than that modality's
  lifetime (a face that left the picture stops counting after a second).
- Smoother / ChangeDetector: exponential smoothing of the fused distribution with a time constant, and
  "the top emotion changed" events with a margin against flicker.
"""

from __future__ import annotations

import asyncio
import io
import math
import wave
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from emomesh.errors import InvalidInput
from emomesh.labels import LABELS
from emotion.common.v1 import common_pb2

T = TypeVar("T")

# How long a modality's newest result counts in the fused state (seconds since it was produced): a face
# result is renewed many times a second, so one second without a face means the face is gone; a speech
# window is renewed every hop; a text turn stands until the next one, for a while.
FRESH_FOR_S: dict[int, float] = {
    common_pb2.MODALITY_VISION: 1.0,
    common_pb2.MODALITY_AUDIO: 6.0,
    common_pb2.MODALITY_TEXT: 30.0,
}


class LatestFrame(Generic[T]):
    """A one-slot mailbox where the newest item wins. `put` never waits; `take` waits for an item, and
    returns None once the mailbox is closed and empty."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Stores `item`; True when it replaced one nobody took (that one is dropped)."""
        replaced = self._item is not None
        if replaced:
            self.dropped += 1
        self._item = item
        self._ready.set()
        return replaced

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def take(self) -> T | None:
        while self._item is None:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        item, self._item = self._item, None
        return item


class RateLimit:
    """At most `limit` events in any `window_s` seconds."""

    def __init__(self, limit: int, window_s: float = 1.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True

    def count(self, now: float) -> int:
        """Events in the window ending at `now`."""
        return sum(1 for t in self._times if now - t < self.window_s)


class AudioBuffer:
    """The newest `capacity_s` seconds of PCM16 audio, channels averaged to mono. Positions are sample
    indices since the stream's start, so windows keep their place while old audio is let go."""

    def __init__(self, sample_rate: int, channels: int, capacity_s: float) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.capacity = int(capacity_s * sample_rate)
        self._samples = np.zeros(0, dtype=np.int16)
        self._start = 0  # position of self._samples[0]

    @property
    def start(self) -> int:
        """Position of the oldest sample still held."""
        return self._start

    @property
    def end(self) -> int:
        """Samples received so far."""
        return self._start + len(self._samples)

    @property
    def seconds(self) -> float:
        return self.end / self.sample_rate

    def append(self, data: bytes) -> None:
        frame_bytes = 2 * self.channels
        if len(data) % frame_bytes:
            raise InvalidInput(
                f"an audio chunk of {len(data)} bytes does not hold whole sample frames "
                f"({frame_bytes} bytes each: 16-bit samples x {self.channels} channels)"
            )
        samples = np.frombuffer(data, dtype="<i2")
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels).mean(axis=1).round().astype(np.int16)
        joined = np.concatenate([self._samples, samples])
        excess = max(0, len(joined) - self.capacity)
        self._samples = joined[excess:]
        self._start += excess

    def window(self, start: int, end: int) -> np.ndarray | None:
        """Samples [start, end), or None when part of it is no longer (or not yet) held."""
        if start < self._start or end > self.end or start >= end:
            return None
        return self._samples[start - self._start : end - self._start].copy()


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """Mono int16 samples as a WAV file (what the audio service reads)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()


@dataclass
class WindowSchedule:
    """Windows of `window` samples every `hop` samples: window k is [k*hop, k*hop + window)."""

    window: int
    hop: int
    next_index: int = 0
    skipped: int = 0

    def due(self, received: int) -> tuple[int, int] | None:
        """The newest complete window not yet taken, skipping (and counting) older ones; None if none."""
        if received < self.window:
            return None
        newest = (received - self.window) // self.hop
        if newest < self.next_index:
            return None
        self.skipped += newest - self.next_index
        self.next_index = newest + 1
        start = newest * self.hop
        return start, start + self.window

    def final(self, received: int) -> tuple[int, int] | None:
        """At the end of the stream: the audio after the last window taken, as one last (shorter) window,
        when there is at least a third of a window of it."""
        start = self.next_index * self.hop
        last_end = (self.next_index - 1) * self.hop + self.window if self.next_index else 0
        if received - max(start, last_end) < self.window // 3:
            return None
        return max(0, received - self.window), received


@dataclass
class Utterances:
    """Speech windows in order grow the current utterance; a window without speech ends it (a pause),
    and so does reaching max_samples. Positions are in samples."""

    max_samples: int
    start: int | None = None
    end: int = 0

    @property
    def active(self) -> bool:
        return self.start is not None

    def add(self, start: int, end: int, speech: bool, earliest: int | None = None) -> tuple[int, int] | None:
        """Feeds one window; returns the utterance (start, end) that this window ended, if any. `earliest`:
        where the audio not analysed before this window begins (windows skipped by a lane that fell
        behind); an utterance starting here starts there, so its words are not cut by the skip."""
        if not speech:
            return self.finish()
        if self.start is None:
            self.start = min(start, earliest) if earliest is not None else start
        self.end = end
        if self.end - self.start >= self.max_samples:
            return self.finish()
        return None

    def finish(self) -> tuple[int, int] | None:
        if self.start is None:
            return None
        ended = (self.start, self.end)
        self.start = None
        return ended


@dataclass
class FreshResults:
    """The newest OK result of each modality and when it came, forgotten after FRESH_FOR_S."""

    fresh_for_s: dict[int, float] = field(default_factory=lambda: dict(FRESH_FOR_S))
    _latest: dict[int, tuple[common_pb2.ModalityResult, float]] = field(default_factory=dict)

    def update(self, result: common_pb2.ModalityResult, now: float) -> None:
        self._latest[result.modality] = (result, now)

    def forget(self, modality: int) -> None:
        self._latest.pop(modality, None)

    def current(self, now: float) -> list[common_pb2.ModalityResult]:
        return [
            result
            for modality, (result, at) in sorted(self._latest.items())
            if now - at <= self.fresh_for_s.get(modality, 0.0)
        ]


class Smoother:
    """Exponential smoothing over time: each new distribution pulls the state towards it by
    1 - exp(-dt / time_constant_s), dt the time since the previous one. After a step change the state has
    moved 63% of the way in one time constant and 95% in three; 0 follows every distribution as it is."""

    def __init__(self, time_constant_s: float) -> None:
        self.time_constant_s = time_constant_s
        self.state: np.ndarray | None = None
        self._at = 0.0

    def update(self, probs: np.ndarray, now: float) -> np.ndarray:
        if self.state is None or self.time_constant_s <= 0:
            self.state = probs.astype(np.float64).copy()
        else:
            pull = 1.0 - math.exp(-max(0.0, now - self._at) / self.time_constant_s)
            self.state = self.state + pull * (probs - self.state)
        self._at = now
        return self.state


class ChangeDetector:
    """Reports the top emotion changing, once its probability leads the announced one's by `margin`
    (so two emotions neck and neck do not flicker)."""

    def __init__(self, margin: float = 0.05) -> None:
        self.margin = margin
        self.current: int | None = None  # index into LABELS

    def update(self, probs: np.ndarray) -> tuple[int | None, int] | None:
        """(previous, new) label indices when the announced emotion changes, else None."""
        top = int(np.argmax(probs))
        if top == self.current:
            return None
        if self.current is not None and probs[top] < probs[self.current] + self.margin:
            return None
        previous, self.current = self.current, top
        return previous, top


def emotion_of(index: int | None) -> common_pb2.Emotion:
    """The contract's Emotion for an index into LABELS (UNSPECIFIED for None)."""
    if index is None:
        return common_pb2.EMOTION_UNSPECIFIED
    return common_pb2.Emotion.Value(f"EMOTION_{LABELS[index].upper()}")
