"""AudioServicer logic with a fake model (the real model and Triton are in tests/integration/test_audio.py)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest

from emomesh.errors import Unimplemented
from emomesh.labels import LABELS, NUM_LABELS
from emotion.audio.v1 import audio_pb2
from emotion.common.v1 import common_pb2
from services.audio.config import AudioSettings
from services.audio.features import WINDOW_SAMPLES
from services.audio.servicer import AudioServicer, reliability
from tests.audio_media import decode_wav, encode, espeak, silence, tone


class FakeModel:
    """Says "happy" for every window and remembers what it was asked."""

    features = "log_mel_128x130"

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []

    @property
    def info(self) -> common_pb2.ModelInfo:
        return common_pb2.ModelInfo(name="fake", version="1")

    async def classify(self, log_mel: np.ndarray) -> np.ndarray:
        self.calls.append(log_mel)
        probs = np.full((len(log_mel), NUM_LABELS), 0.05, np.float32)
        probs[:, LABELS.index("happy")] = 0.7
        return probs


def servicer(model: FakeModel) -> AudioServicer:
    settings = AudioSettings.from_env({"EMOMESH_AUDIO_ASR_ENABLED": "false"})
    return AudioServicer(settings, model, transcriber=None)


def speech_with_silence() -> bytes:
    """22.05 kHz espeak speech, then 8 s of silence: the later windows hold no speech."""
    spoken, rate = decode_wav(espeak("Hello there, I am so glad that you came to see me today."))
    return encode(np.concatenate([spoken, silence(8.0, rate)]), rate=rate)


async def test_speech_windows_are_scored_and_silent_windows_are_not() -> None:
    model = FakeModel()
    response = await servicer(model).AnalyzeAudio(
        audio_pb2.AnalyzeAudioRequest(audio=speech_with_silence()), cast(Any, None)
    )
    assert response.speech_detected
    assert response.source_sample_rate == 22050
    assert response.source_channels == 1
    assert not response.padded
    assert len(response.windows) >= 4
    scored = sum(len(call) for call in model.calls)
    assert 1 <= scored < len(response.windows), "only windows with speech go to the model"
    assert response.windows[0].distribution.top == common_pb2.EMOTION_HAPPY
    assert response.windows[0].speech_detected
    last = response.windows[-1]
    assert not last.speech_detected and not last.HasField("distribution"), "a silent window has no emotion"
    assert response.distribution.top == common_pb2.EMOTION_HAPPY
    assert sum(response.distribution.probabilities) == pytest.approx(1.0, abs=1e-5)
    assert 0.0 < response.reliability <= 1.0


async def test_silence_is_not_scored_and_says_no_speech() -> None:
    model = FakeModel()
    response = await servicer(model).AnalyzeAudio(
        audio_pb2.AnalyzeAudioRequest(audio=encode(silence(2.0))), cast(Any, None)
    )
    assert not response.speech_detected
    assert response.reliability == 0.0
    assert response.padded
    assert model.calls == [] or all(len(c) == 0 for c in model.calls)
    # No speech, no label: no distribution (so no top emotion a client could read), and the reason.
    assert not response.HasField("distribution")
    assert response.distribution.top == common_pb2.EMOTION_UNSPECIFIED
    assert response.no_speech_reason.startswith("no speech detected: 0.00 s of speech in 2.00 s")
    assert not any(window.HasField("distribution") for window in response.windows)


async def test_tone_longer_than_a_window_is_not_speech() -> None:
    model = FakeModel()
    data = encode(tone(2 * WINDOW_SAMPLES / 16000))
    response = await servicer(model).AnalyzeAudio(audio_pb2.AnalyzeAudioRequest(audio=data), cast(Any, None))
    assert not response.speech_detected
    assert len(response.windows) == 3
    assert not response.HasField("distribution") and response.no_speech_reason


async def test_transcription_disabled_is_unimplemented() -> None:
    with pytest.raises(Unimplemented):
        await servicer(FakeModel()).AnalyzeAudio(
            audio_pb2.AnalyzeAudioRequest(audio=encode(tone(1.0)), transcribe=True), cast(Any, None)
        )


def test_reliability_grows_with_speech_and_certainty() -> None:
    uniform = np.full(NUM_LABELS, 1 / NUM_LABELS)
    peaked = np.full(NUM_LABELS, 0.01)
    peaked[0] = 1 - 0.01 * (NUM_LABELS - 1)
    assert reliability(peaked, 0.0, 2.0) == 0.0
    assert reliability(uniform, 2.0, 2.0) == pytest.approx(0.5)
    assert reliability(peaked, 1.0, 2.0) < reliability(peaked, 3.0, 2.0) <= 1.0
    assert reliability(uniform, 3.0, 2.0) < reliability(peaked, 3.0, 2.0)
