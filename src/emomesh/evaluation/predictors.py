"""Predictors: one sample in, the service's distribution out, over gRPC with a deadline per call.

A predictor returns `Prediction(probabilities=None)` when the service answered but found nothing to
classify (no face), and raises for failed calls; the runner records both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import grpc

from emomesh.evaluation.adapters import Sample
from emomesh.labels import probs_from_distribution
from emomesh.server import grpc_options
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc


@dataclass(frozen=True)
class Prediction:
    probabilities: list[float] | None
    model: str = ""


class Predictor(Protocol):
    async def predict(self, sample: Sample) -> Prediction: ...

    async def close(self) -> None: ...


class VisionImagePredictor:
    """AnalyzeImage on the vision service. `whole_image_is_face` for datasets of face crops (FER2013,
    CK+48), where the detector often finds no face in a 48x48 image; detection otherwise (JAFFE)."""

    def __init__(
        self, address: str, whole_image_is_face: bool, timeout_s: float = 30.0, max_message_bytes: int = 32 << 20
    ) -> None:
        self.channel = grpc.aio.insecure_channel(address, options=grpc_options(max_message_bytes))
        self.stub = vision_pb2_grpc.VisionServiceStub(self.channel)
        self.whole_image_is_face = whole_image_is_face
        self.timeout_s = timeout_s

    async def predict(self, sample: Sample) -> Prediction:
        if sample.path is None:
            raise ValueError(f"sample {sample.id} has no image path")
        request = vision_pb2.AnalyzeImageRequest(
            image=sample.path.read_bytes(), whole_image_is_face=self.whole_image_is_face
        )
        response = await self.stub.AnalyzeImage(request, timeout=self.timeout_s)
        model = f"{response.model.name}:{response.model.version}"
        if not response.HasField("primary"):
            return Prediction(None, model)
        return Prediction(probs_from_distribution(response.primary).tolist(), model)

    async def close(self) -> None:
        await self.channel.close()
