"""Labelled speech corpora (labels.csv: path, label, speaker) turned into cached model inputs.

Features are computed once with the serving code (`services.audio.features`) and cached as float16
outside the repository, so training epochs only read arrays."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emomesh.labels import label_index
from services.audio.features import (
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    DecodeLimits,
    analysis_windows,
    decode_audio,
    log_mel,
)

# Training windows start every 0.5 s (a cheap time-shift augmentation); evaluation uses exactly
# the windows the service scores (`analysis_windows`).
TRAIN_WINDOW_STRIDE = SAMPLE_RATE // 2
FEATURE_VERSION = "logmel-16k-1024-384-128x130-v1"


@dataclass(frozen=True)
class Clip:
    path: Path
    label: int
    speaker: str
    corpus: str


@dataclass
class Features:
    clips: list[Clip]
    train_x: np.ndarray  # float16 [M, 128, 130]
    train_clip: np.ndarray  # int [M] index into clips
    eval_x: np.ndarray  # float16 [K, 128, 130]
    eval_clip: np.ndarray  # int [K]

    @property
    def labels(self) -> np.ndarray:
        return np.array([c.label for c in self.clips])

    @property
    def speakers(self) -> np.ndarray:
        return np.array([c.speaker for c in self.clips])


def read_corpus(folder: Path) -> list[Clip]:
    """Reads <folder>/labels.csv (columns path, label, speaker; paths relative to the folder)."""
    with (folder / "labels.csv").open(newline="") as fh:
        return [
            Clip(folder / row["path"], label_index(row["label"]), row["speaker"], folder.name)
            for row in csv.DictReader(fh)
        ]


def _training_windows(samples: np.ndarray) -> np.ndarray:
    if len(samples) < WINDOW_SAMPLES:
        samples = np.pad(samples, (0, WINDOW_SAMPLES - len(samples)))
    starts = list(range(0, len(samples) - WINDOW_SAMPLES + 1, TRAIN_WINDOW_STRIDE))
    if starts[-1] + WINDOW_SAMPLES < len(samples):
        starts.append(len(samples) - WINDOW_SAMPLES)
    return np.stack([log_mel(samples[s : s + WINDOW_SAMPLES]) for s in starts])


def load_features(folders: list[Path], cache_dir: Path) -> Features:
    clips = [clip for folder in folders for clip in read_corpus(folder)]
    key = hashlib.sha256(json.dumps([FEATURE_VERSION, [str(c.path) for c in clips]]).encode()).hexdigest()[:16]
    cache = cache_dir / f"audio-features-{key}.npz"
    if cache.exists():
        data = np.load(cache)
        return Features(clips, data["train_x"], data["train_clip"], data["eval_x"], data["eval_clip"])
    limits = DecodeLimits(min_duration_s=0.05)
    train_x, train_clip, eval_x, eval_clip = [], [], [], []
    for index, clip in enumerate(clips):
        samples = decode_audio(clip.path.read_bytes(), limits).samples
        windows = _training_windows(samples)
        train_x.append(windows.astype(np.float16))
        train_clip.extend([index] * len(windows))
        served = analysis_windows(samples).log_mel[:, 0]
        eval_x.append(served.astype(np.float16))
        eval_clip.extend([index] * len(served))
        if index % 200 == 0:
            print(f"features: {index}/{len(clips)} clips", flush=True)
    features = Features(
        clips, np.concatenate(train_x), np.array(train_clip), np.concatenate(eval_x), np.array(eval_clip)
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        train_x=features.train_x,
        train_clip=features.train_clip,
        eval_x=features.eval_x,
        eval_clip=features.eval_clip,
    )
    return features
