"""The expression model as the vision service sees it: face crops in, probabilities out, via Triton."""

from __future__ import annotations

import numpy as np

from emomesh.triton import ModelSpec, TritonClient
from emotion.common.v1 import common_pb2


class ExpressionModel:
    def __init__(self, client: TritonClient, name: str) -> None:
        self.client = client
        self.name = name
        self._spec: ModelSpec | None = None

    async def load(self) -> ModelSpec:
        """Reads the model's input size and version from Triton (fails fast if it is not served)."""
        self._spec = await self.client.model_spec(self.name)
        return self._spec

    @property
    def spec(self) -> ModelSpec:
        if self._spec is None:
            raise RuntimeError("ExpressionModel.load() was not awaited")
        return self._spec

    @property
    def input_size(self) -> tuple[int, int]:
        _, height, width = self.spec.inputs[0].shape
        return height, width

    @property
    def info(self) -> common_pb2.ModelInfo:
        return common_pb2.ModelInfo(name=self.name, version=self.spec.display_version)

    async def classify(self, faces: np.ndarray) -> np.ndarray:
        """faces: float32 [N, 1, H, W] gray 0..255 -> [N, 7] probabilities, in chunks Triton accepts."""
        if len(faces) == 0:
            return np.zeros((0, 7), dtype=np.float32)
        step = self.spec.max_batch_size or len(faces)
        input_name, output_name = self.spec.inputs[0].name, self.spec.outputs[0].name
        chunks = []
        for start in range(0, len(faces), step):
            result = await self.client.infer(self.name, {input_name: faces[start : start + step]}, [output_name])
            chunks.append(result[output_name])
        return np.concatenate(chunks).astype(np.float32)
