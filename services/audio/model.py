"""The speech-emotion model as the audio service sees it: log-Mel windows in, probabilities out, via Triton."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from emomesh.triton import ModelSpec, ServedModel
from emotion.common.v1 import common_pb2
from services.audio.features import N_FRAMES, N_MELS

INPUT_SHAPE = (1, N_MELS, N_FRAMES)


class SpeechEmotionClassifier(Protocol):
    """What the audio servicer needs from its model: SpeechEmotionModel, or a fake in unit tests."""

    @property
    def info(self) -> common_pb2.ModelInfo: ...

    async def classify(self, log_mel: np.ndarray) -> np.ndarray: ...


class SpeechEmotionModel(ServedModel):
    def check(self, spec: ModelSpec) -> None:
        """The served model must take exactly the features this service computes."""
        if not spec.inputs or tuple(spec.inputs[0].shape) != INPUT_SHAPE:
            shape = spec.inputs[0].shape if spec.inputs else None
            raise RuntimeError(f"model {self.name} takes {shape}; the audio features are {INPUT_SHAPE}")

    async def classify(self, log_mel: np.ndarray) -> np.ndarray:
        """log_mel: float32 [N, 1, 128, 130] -> [N, 7] probabilities."""
        name = self.spec.inputs[0].name
        return await self.infer_in_chunks(len(log_mel), lambda rows: {name: log_mel[rows]})
