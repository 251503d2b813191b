"""The text emotion model as the service sees it: token ids in, 7 probabilities out.

`TritonTextModel` is what the service uses; `OnnxTextModel` runs the same model.onnx in-process
(evaluation, benchmarks). Both take a TokenBatch and return float32 [N, 7] in LABELS order."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from emomesh.labels import NUM_LABELS
from emomesh.triton import ModelSpec, ServedModel
from emotion.common.v1 import common_pb2
from services.text.tokenize import TokenBatch

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
OUTPUT = "probabilities"


class TextClassifier(Protocol):
    """What the text servicer needs from its model: TritonTextModel, or a fake in unit tests."""

    @property
    def info(self) -> common_pb2.ModelInfo: ...

    async def classify(self, batch: TokenBatch) -> np.ndarray: ...


class TritonTextModel(ServedModel):
    def check(self, spec: ModelSpec) -> None:
        names = {t.name for t in spec.inputs}
        if names != {INPUT_IDS, ATTENTION_MASK}:
            raise RuntimeError(f"model {self.name} takes {sorted(names)}, expected {INPUT_IDS} and {ATTENTION_MASK}")

    async def classify(self, batch: TokenBatch) -> np.ndarray:
        def inputs_for(rows: slice) -> dict[str, np.ndarray]:
            # Each chunk is cut to its own longest sequence: no padding beyond what it needs.
            width = int(batch.attention_mask[rows].sum(axis=1).max())
            return {INPUT_IDS: batch.input_ids[rows, :width], ATTENTION_MASK: batch.attention_mask[rows, :width]}

        return await self.infer_in_chunks(len(batch.input_ids), inputs_for, OUTPUT)


class OnnxTextModel:
    """The same ONNX file run in-process with onnxruntime on the CPU."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def classify(self, batch: TokenBatch) -> np.ndarray:
        if len(batch.input_ids) == 0:
            return np.zeros((0, NUM_LABELS), dtype=np.float32)
        (probs,) = self.session.run([OUTPUT], {INPUT_IDS: batch.input_ids, ATTENTION_MASK: batch.attention_mask})
        return np.asarray(probs, dtype=np.float32)
