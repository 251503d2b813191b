"""The expression model as the vision service sees it: face crops in, probabilities out, via Triton."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from emomesh.labels import NUM_LABELS
from emomesh.triton import ModelSpec, ServedModel
from emotion.common.v1 import common_pb2

INPUT = "face_gray"
INPUT_DATATYPE = "FP32"
OUTPUT = "probabilities"
# The contrast a model was trained on, from its Triton config's `emomesh_input_contrast` parameter:
# `raw` (the default: crops as they come) or `equalized` (each crop's histogram equalised, as
# FER2013's JPEGs are; preprocess.equalize_faces).
CONTRASTS = ("raw", "equalized")
CONTRAST_PARAMETER = "emomesh_input_contrast"


class ExpressionClassifier(Protocol):
    """What the vision servicer needs from its model: ExpressionModel, or a fake in unit tests."""

    @property
    def input_size(self) -> tuple[int, int]: ...

    @property
    def equalized_input(self) -> bool: ...

    @property
    def info(self) -> common_pb2.ModelInfo: ...

    async def classify(self, faces: np.ndarray) -> np.ndarray: ...


class ExpressionModel(ServedModel):
    def check(self, spec: ModelSpec) -> None:
        """The served model must take one gray face crop [1, H, W] as FP32 `face_gray` and give the 7
        probabilities as `probabilities` (what crop_faces makes and distribution_from_probs reads)."""
        inputs = {t.name: (t.datatype, t.shape) for t in spec.inputs}
        datatype, shape = inputs.get(INPUT, ("", ()))
        if len(inputs) != 1 or datatype != INPUT_DATATYPE or len(shape) != 3 or shape[0] != 1 or min(shape) <= 0:
            raise RuntimeError(
                f"model {self.name} takes {inputs}; the vision service sends one {INPUT_DATATYPE} input "
                f"{INPUT!r} of shape [1, H, W] (a gray face crop of fixed size)"
            )
        contrast = spec.parameters.get(CONTRAST_PARAMETER, "raw")
        if contrast not in CONTRASTS:
            raise RuntimeError(
                f"model {self.name} says {CONTRAST_PARAMETER}={contrast!r}; "
                f"the vision service knows {', '.join(CONTRASTS)}"
            )
        outputs = {t.name: t.shape for t in spec.outputs}
        if outputs.get(OUTPUT) != (NUM_LABELS,):
            raise RuntimeError(
                f"model {self.name} gives {outputs}; the vision service reads {OUTPUT!r} of shape [{NUM_LABELS}]"
            )

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the face crops the served model takes (64x64 FER, 48x48 DeepFace)."""
        _, height, width = self.spec.input(INPUT).shape
        return height, width

    @property
    def equalized_input(self) -> bool:
        """Whether the model expects histogram-equalised face crops (CONTRASTS)."""
        return self.spec.parameters.get(CONTRAST_PARAMETER, "raw") == "equalized"

    async def classify(self, faces: np.ndarray) -> np.ndarray:
        """faces: float32 [N, 1, H, W] gray 0..255 -> [N, 7] probabilities."""
        return await self.infer_in_chunks(len(faces), lambda rows: {INPUT: faces[rows]}, OUTPUT)
