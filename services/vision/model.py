"""The expression model as the vision service sees it: face crops in, probabilities out, via Triton."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from emomesh.triton import ServedModel
from emotion.common.v1 import common_pb2


class ExpressionClassifier(Protocol):
    """What the vision servicer needs from its model: ExpressionModel, or a fake in unit tests."""

    @property
    def input_size(self) -> tuple[int, int]: ...

    @property
    def info(self) -> common_pb2.ModelInfo: ...

    async def classify(self, faces: np.ndarray) -> np.ndarray: ...


class ExpressionModel(ServedModel):
    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the face crops the served model takes (64x64 FER, 48x48 DeepFace)."""
        _, height, width = self.spec.inputs[0].shape
        return height, width

    async def classify(self, faces: np.ndarray) -> np.ndarray:
        """faces: float32 [N, 1, H, W] gray 0..255 -> [N, 7] probabilities."""
        name = self.spec.inputs[0].name
        return await self.infer_in_chunks(len(faces), lambda rows: {name: faces[rows]})
