"""Predictors: one sample in, the service's distribution out, over gRPC with a deadline per call.

A predictor returns `Prediction(probabilities=None)` when the service answered but found nothing to
classify (no face, no speech), and raises for failed calls; the runner records both. One predictor per
modality: AnalyzeImage (vision), AnalyzeAudio without transcription (audio), AnalyzeText (text)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from emomesh.evaluation.adapters import Sample
from emomesh.labels import probs_from_distribution
from emomesh.server import grpc_options
from emotion.audio.v1 import audio_pb2, audio_pb2_grpc
from emotion.text.v1 import text_pb2, text_pb2_grpc
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc

# The stack service that answers each modality.
SERVICE_OF_MODALITY = {"image": "vision", "audio": "audio", "text": "text"}


@dataclass(frozen=True)
class Prediction:
    probabilities: list[float] | None
    model: str = ""
    # More fields for the sample's record (the speech-transcript mode's per-modality results).
    extra: Mapping[str, Any] = field(default_factory=dict)


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


class AudioPredictor:
    """AnalyzeAudio without transcription: the clip's distribution (mean over its analysis windows).
    A clip in which the service detects no speech has no prediction (the service answers uniform)."""

    def __init__(self, address: str, timeout_s: float = 30.0, max_message_bytes: int = 64 << 20) -> None:
        self.channel = grpc.aio.insecure_channel(address, options=grpc_options(max_message_bytes))
        self.stub = audio_pb2_grpc.AudioServiceStub(self.channel)
        self.timeout_s = timeout_s

    async def predict(self, sample: Sample) -> Prediction:
        if sample.path is None:
            raise ValueError(f"sample {sample.id} has no audio path")
        request = audio_pb2.AnalyzeAudioRequest(audio=sample.path.read_bytes(), transcribe=False)
        response = await self.stub.AnalyzeAudio(request, timeout=self.timeout_s)
        model = f"{response.model.name}:{response.model.version}"
        if not response.speech_detected or not response.HasField("distribution"):
            return Prediction(None, model)
        return Prediction(probs_from_distribution(response.distribution).tolist(), model)

    async def close(self) -> None:
        await self.channel.close()


class TextPredictor:
    """AnalyzeText: the text's distribution, and its valence/arousal when the model gives them. A sample
    from a conversation (MELD) is sent with its speaker and earlier turns unless `context` is False."""

    def __init__(self, address: str, timeout_s: float = 30.0, context: bool = True) -> None:
        self.channel = grpc.aio.insecure_channel(address, options=grpc_options(4 << 20))
        self.stub = text_pb2_grpc.TextServiceStub(self.channel)
        self.timeout_s = timeout_s
        self.context = context

    async def predict(self, sample: Sample) -> Prediction:
        if sample.text is None:
            raise ValueError(f"sample {sample.id} has no text")
        request = text_pb2.AnalyzeTextRequest(text=sample.text)
        if self.context and sample.context:
            request.speaker = sample.speaker
            request.context.extend(text_pb2.ConversationTurn(speaker=t.speaker, text=t.text) for t in sample.context)
        response = await self.stub.AnalyzeText(request, timeout=self.timeout_s)
        model = f"{response.model.name}:{response.model.version}"
        if not response.HasField("distribution"):
            return Prediction(None, model)
        extra: dict[str, Any] = {}
        if response.HasField("dimensions"):
            extra["dimensions"] = {"valence": response.dimensions.valence, "arousal": response.dimensions.arousal}
        return Prediction(probs_from_distribution(response.distribution).tolist(), model, extra)

    async def close(self) -> None:
        await self.channel.close()


def predictor_for(
    modality: str,
    address: str,
    *,
    whole_image_is_face: bool = False,
    timeout_s: float = 30.0,
    text_context: bool = True,
) -> Predictor:
    """The gRPC predictor of a modality (image, audio or text) against the service at address."""
    if modality == "image":
        return VisionImagePredictor(address, whole_image_is_face=whole_image_is_face, timeout_s=timeout_s)
    if modality == "audio":
        return AudioPredictor(address, timeout_s=timeout_s)
    if modality == "text":
        return TextPredictor(address, timeout_s=timeout_s, context=text_context)
    raise ValueError(f"no predictor for modality {modality!r}; expected one of {', '.join(SERVICE_OF_MODALITY)}")
