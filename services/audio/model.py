"""The speech-emotion model as the audio service sees it: log-Mel windows in, probabilities out, via Triton."""

from __future__ import annotations

import numpy as np

from emomesh.labels import NUM_LABELS
from emomesh.triton import ModelSpec, TritonClient
from emotion.common.v1 import common_pb2
from services.audio.features import N_FRAMES, N_MELS

INPUT_SHAPE = (1, N_MELS, N_FRAMES)


class SpeechEmotionModel:
    def __init__(self, client: TritonClient, name: str) -> None:
        self.client = client
        self.name = name
        self._spec: ModelSpec | None = None

    async def load(self) -> ModelSpec:
        """Reads the model's metadata from Triton and checks it takes the features this service makes."""
        spec = await self.client.model_spec(self.name)
        if not spec.inputs or tuple(spec.inputs[0].shape) != INPUT_SHAPE:
            shape = spec.inputs[0].shape if spec.inputs else None
            raise RuntimeError(f"model {self.name} takes {shape}; the audio features are {INPUT_SHAPE}")
        self._spec = spec
        return spec

    @property
    def spec(self) -> ModelSpec:
        if self._spec is None:
            raise RuntimeError("SpeechEmotionModel.load() was not awaited")
        return self._spec

    @property
    def info(self) -> common_pb2.ModelInfo:
        return common_pb2.ModelInfo(name=self.name, version=self.spec.display_version)

    async def classify(self, log_mel: np.ndarray) -> np.ndarray:
        """log_mel: float32 [N, 1, 128, 130] -> [N, 7] probabilities, in chunks Triton accepts."""
        if len(log_mel) == 0:
            return np.zeros((0, NUM_LABELS), dtype=np.float32)
        step = self.spec.max_batch_size or len(log_mel)
        input_name, output_name = self.spec.inputs[0].name, self.spec.outputs[0].name
        chunks = []
        for start in range(0, len(log_mel), step):
            result = await self.client.infer(self.name, {input_name: log_mel[start : start + step]}, [output_name])
            chunks.append(result[output_name])
        return np.concatenate(chunks).astype(np.float32)
