"""The speech-emotion model as the audio service sees it: log-Mel windows in, probabilities out, via Triton."""

from __future__ import annotations

import numpy as np

from emomesh.triton import ModelSpec, ServedModel
from services.audio.features import N_FRAMES, N_MELS

INPUT_SHAPE = (1, N_MELS, N_FRAMES)


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
