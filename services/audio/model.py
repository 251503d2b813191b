"""The speech-emotion model as the audio service sees it: feature windows in, probabilities out, via Triton."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from emomesh.triton import ModelSpec, ServedModel
from emotion.common.v1 import common_pb2
from services.audio.features import DEFAULT_FEATURES, FEATURE_SHAPES

# Which features a model reads, from its Triton config's `emomesh_audio_features` parameter
# (features.FEATURE_SHAPES: `log_mel_128x130`, the ACRNN's and the default; `whisper_80x310`, Whisper's
# own log-Mel for models built on its encoder). The service computes what the model says it was
# trained on, with the function training used.
FEATURES_PARAMETER = "emomesh_audio_features"


class SpeechEmotionClassifier(Protocol):
    """What the audio servicer needs from its model: SpeechEmotionModel, or a fake in unit tests."""

    @property
    def info(self) -> common_pb2.ModelInfo: ...

    @property
    def features(self) -> str: ...

    async def classify(self, windows: np.ndarray) -> np.ndarray: ...


def model_features(name: str, parameters: Mapping[str, object]) -> str:
    """The features a model reads, from its parameters (Triton's config, or models.yaml for the benches)."""
    features = str(parameters.get(FEATURES_PARAMETER, DEFAULT_FEATURES))
    if features not in FEATURE_SHAPES:
        raise RuntimeError(
            f"model {name} says {FEATURES_PARAMETER}={features!r}; the audio service computes "
            f"{' or '.join(sorted(FEATURE_SHAPES))}"
        )
    return features


class SpeechEmotionModel(ServedModel):
    def check(self, spec: ModelSpec) -> None:
        """The served model must take exactly the features this service computes for it."""
        features = model_features(spec.name, spec.parameters)
        expected = FEATURE_SHAPES[features]
        if not spec.inputs or tuple(spec.inputs[0].shape) != expected:
            shape = spec.inputs[0].shape if spec.inputs else None
            raise RuntimeError(f"model {self.name} takes {shape}; its features ({features}) are {expected}")

    @property
    def features(self) -> str:
        return model_features(self.spec.name, self.spec.parameters)

    async def classify(self, windows: np.ndarray) -> np.ndarray:
        """windows: float32 [N, *FEATURE_SHAPES[features]] -> [N, 7] probabilities."""
        name = self.spec.inputs[0].name
        return await self.infer_in_chunks(len(windows), lambda rows: {name: windows[rows]})
