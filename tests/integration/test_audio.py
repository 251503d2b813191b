"""The audio service against the real tritonserver, the real ACRNN ONNX model and the real Whisper
models (base, the default, assembled from its wheels; tiny.en), with speech synthesised by espeak-ng
and audio made by the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from emomesh.labels import NUM_LABELS
from emomesh.tritonserver import TritonServer
from emotion.audio.v1 import audio_pb2, audio_pb2_grpc
from emotion.common.v1 import common_pb2
from services.audio.config import ACRNN_MODEL, DEFAULT_MODEL, AudioSettings
from services.audio.server import build_server
from tests.audio_media import decode_wav, encode, espeak, noise, silence, tone, transcode
from tests.conftest import service_env, serving

pytestmark = pytest.mark.integration

SENTENCE = "The weather is beautiful today and I am going to the beach with my family."
KEY_WORDS = ("weather", "beautiful", "today", "beach", "family")


@pytest.fixture(scope="module")
def speech_wav() -> bytes:
    return espeak(SENTENCE)


@pytest.fixture
async def channel(triton_server: TritonServer) -> AsyncIterator[grpc.aio.Channel]:
    # A maximum duration small enough that a test can exceed it without megabytes of audio.
    settings = AudioSettings.from_env(service_env("audio", triton_server, EMOMESH_AUDIO_MAX_DURATION_S="120"))
    async with serving(await build_server(settings)) as channel:
        yield channel


@pytest.fixture
def audio(channel: grpc.aio.Channel) -> audio_pb2_grpc.AudioServiceStub:
    return audio_pb2_grpc.AudioServiceStub(channel)


async def analyze(
    stub: audio_pb2_grpc.AudioServiceStub, data: bytes, transcribe: bool = False
) -> audio_pb2.AnalyzeAudioResponse:
    return await stub.AnalyzeAudio(audio_pb2.AnalyzeAudioRequest(audio=data, transcribe=transcribe), timeout=120)


async def test_speech_gives_a_distribution_and_a_transcript(
    audio: audio_pb2_grpc.AudioServiceStub, speech_wav: bytes
) -> None:
    response = await analyze(audio, speech_wav, transcribe=True)
    assert response.speech_detected
    assert sum(response.distribution.probabilities) == pytest.approx(1.0, abs=1e-4)
    assert len(response.distribution.probabilities) == NUM_LABELS
    assert 0.0 < response.reliability <= 1.0
    assert response.source_sample_rate == 22050 and response.source_channels == 1
    assert response.duration_s > 3.0
    assert len(response.windows) >= 2 and not response.padded
    assert response.windows[0].speech_detected
    for window in response.windows:
        if window.speech_detected:
            assert sum(window.distribution.probabilities) == pytest.approx(1.0, abs=1e-4)
        else:
            assert not window.HasField("distribution")
    assert response.model.name == DEFAULT_MODEL == "audio_whisper_emotion"
    text = response.transcript.text.lower()
    found = [word for word in KEY_WORDS if word in text]
    assert len(found) >= 4, f"transcript {text!r} misses key words"
    assert response.transcript.language == "en"
    assert response.transcript.language_probability > 0.5
    assert response.transcript.model.name == "whisper-base"
    assert response.transcript.segments
    # Clean speech: confident words (fusion trusts them fully from -0.4), surely speech.
    assert -0.5 < response.transcript.avg_logprob < 0
    assert response.transcript.no_speech_prob < 0.2


# Each sentence was picked as one that espeak-ng speaks well enough for Whisper base to identify its
# language. Mandarin takes the pinyin voice: espeak-ng 1.51's `cmn` voice reads the tone numbers of
# its own romanisation as English words ("jin1" as "jin one"), and Whisper hears English or Thai.
SPOKEN = {
    "de": ("de", "Ich freue mich sehr, dich zu sehen.", "ich freue mich"),
    "zh": ("cmn-latn-pinyin", "我们明天一起去北京吧。", "一起去"),
}


@pytest.mark.parametrize("language", list(SPOKEN))
async def test_whisper_base_identifies_the_language_of_german_and_mandarin_speech(
    audio: audio_pb2_grpc.AudioServiceStub, language: str
) -> None:
    voice, sentence, words = SPOKEN[language]
    response = await audio.Transcribe(audio_pb2.TranscribeRequest(audio=espeak(sentence, voice=voice)), timeout=120)
    transcript = response.transcript
    assert (transcript.language, transcript.model.name) == (language, "whisper-base")
    assert transcript.language_probability > 0.8
    assert words in transcript.text.lower(), transcript.text
    assert transcript.segments and all(s.end_s > s.start_s for s in transcript.segments)
    assert transcript.segments[-1].end_s <= 10.0
    assert -1.0 < transcript.avg_logprob < 0 and 0 <= transcript.no_speech_prob < 0.6


async def test_tiny_en_stays_selectable(triton_server: TritonServer, speech_wav: bytes) -> None:
    settings = AudioSettings.from_env(service_env("audio", triton_server, EMOMESH_AUDIO_ASR_MODEL="tiny.en"))
    async with serving(await build_server(settings)) as channel:
        stub = audio_pb2_grpc.AudioServiceStub(channel)
        response = await stub.Transcribe(audio_pb2.TranscribeRequest(audio=speech_wav), timeout=120)
    transcript = response.transcript
    assert transcript.model.name == "whisper-tiny.en"
    # English-only: the language is not detected but fixed.
    assert (transcript.language, transcript.language_probability) == ("en", 1.0)
    assert len([word for word in KEY_WORDS if word in transcript.text.lower()]) >= 4, transcript.text


async def test_transcribe_alone(audio: audio_pb2_grpc.AudioServiceStub, speech_wav: bytes) -> None:
    response = await audio.Transcribe(audio_pb2.TranscribeRequest(audio=transcode(speech_wav, "webm")), timeout=120)
    # Opus at 32 kb/s on synthetic speech costs the recogniser words: Whisper base kept 2 of the 5 key
    # words ("... beautiful tonight, I'm going to have each with my family"), tiny.en 3 or more; both
    # get all 5 from the WAV.
    text = response.transcript.text.lower()
    assert len([word for word in KEY_WORDS if word in text]) >= 2, text
    assert response.transcript.language == "en"


async def test_the_acrnn_stays_selectable_and_reads_its_own_features(
    triton_server: TritonServer, speech_wav: bytes
) -> None:
    """EMOMESH_AUDIO_MODEL=audio_acrnn: the service computes the log-Mel 128x130 its config names."""
    settings = AudioSettings.from_env(service_env("audio", triton_server, EMOMESH_AUDIO_MODEL=ACRNN_MODEL))
    async with serving(await build_server(settings)) as channel:
        response = await analyze(audio_pb2_grpc.AudioServiceStub(channel), speech_wav)
    assert response.model.name == ACRNN_MODEL
    assert response.speech_detected
    assert sum(response.distribution.probabilities) == pytest.approx(1.0, abs=1e-4)


async def test_eight_channel_96k_speech_is_analysed(audio: audio_pb2_grpc.AudioServiceStub, speech_wav: bytes) -> None:
    spoken, rate = decode_wav(speech_wav)
    resampled = np.interp(np.arange(0, len(spoken), rate / 96_000), np.arange(len(spoken)), spoken)
    eight = np.stack([resampled.astype(np.float32)] * 8, axis=1)
    response = await analyze(audio, encode(eight, rate=96_000))
    assert (response.source_sample_rate, response.source_channels) == (96_000, 8)
    assert response.speech_detected
    assert sum(response.distribution.probabilities) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("samples", [silence(4.0), noise(4.0, amplitude=0.05)], ids=["silence", "noise"])
async def test_no_speech_is_said_instead_of_an_emotion(
    audio: audio_pb2_grpc.AudioServiceStub, samples: np.ndarray
) -> None:
    response = await analyze(audio, encode(samples), transcribe=True)
    assert not response.speech_detected
    assert response.reliability == 0.0
    # No top label a client could mistake for a prediction, and the reason in words.
    assert not response.HasField("distribution")
    assert response.distribution.top == common_pb2.EMOTION_UNSPECIFIED
    assert response.no_speech_reason.startswith("no speech detected")
    assert response.transcript.text == ""
    # Whisper is not run on it; the transcript says there is no speech.
    assert response.transcript.no_speech_prob == 1.0


async def test_short_speech_is_padded(audio: audio_pb2_grpc.AudioServiceStub) -> None:
    response = await analyze(audio, espeak("Hello, how are you?"))
    assert response.padded
    assert len(response.windows) == 1
    assert response.windows[0].end_s == pytest.approx(response.duration_s)


def two_hours_of_silence() -> bytes:
    """A few kB of FLAC that declare 7200 s: refused from the header before decoding."""
    return encode(np.zeros(7200 * 8000, np.int16), rate=8000, fmt="FLAC")


# Built lazily (inside the test), so collecting the test suite does not synthesise two hours of audio.
BAD_AUDIO = {
    "empty": (lambda: b"", grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    "0.05s": (lambda: encode(tone(0.05)), grpc.StatusCode.INVALID_ARGUMENT, "at least"),
    "corrupt-header": (
        lambda: b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\xff" * 64,
        grpc.StatusCode.INVALID_ARGUMENT,
        "corrupt",
    ),
    "garbage": (lambda: b"\x00\x01garbage" * 100, grpc.StatusCode.INVALID_ARGUMENT, "could not be read"),
    "two-hours": (two_hours_of_silence, grpc.StatusCode.RESOURCE_EXHAUSTED, "limit"),
}


@pytest.mark.parametrize("case", list(BAD_AUDIO))
async def test_bad_audio_gets_a_clear_status_and_the_service_keeps_serving(
    audio: audio_pb2_grpc.AudioServiceStub,
    channel: grpc.aio.Channel,
    case: str,
    speech_wav: bytes,
) -> None:
    make, code, message = BAD_AUDIO[case]
    data = make()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await analyze(audio, data)
    assert error.value.code() == code
    assert message in (error.value.details() or "")
    assert "Traceback" not in (error.value.details() or "")
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    still = await analyze(audio, speech_wav)
    assert still.speech_detected and len(still.distribution.probabilities) == NUM_LABELS


async def test_over_long_stream_without_header_duration_is_refused(audio: audio_pb2_grpc.AudioServiceStub) -> None:
    webm = transcode(encode(noise(130.0, amplitude=0.01)), "webm")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await analyze(audio, webm)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit of 120 s" in (error.value.details() or "")
