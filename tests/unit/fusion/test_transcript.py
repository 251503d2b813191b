"""How far text read from a transcript is trusted (services/fusion/transcript.py): pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emotion.audio.v1 import audio_pb2
from services.fusion.transcript import (
    NO_SPEECH_MAX,
    asr_confidence,
    describe_confidence,
    no_text_reason,
    transcript_text_reliability,
)


@pytest.mark.parametrize(
    ("avg_logprob", "no_speech_prob", "confidence"),
    [
        (-0.4, 0.0, 1.0),  # clean speech: fully trusted
        (-0.1, 0.0, 1.0),
        (-0.7, 0.0, 0.5),  # half-way between Whisper's failure threshold and clean speech
        (-1.0, 0.0, 0.0),  # Whisper's own "decoding failed"
        (-2.5, 0.0, 0.0),
        (-0.4, 0.25, 0.75),
        (-0.7, 0.5, 0.25),
        (0.0, 0.0, 1.0),  # an audio service that does not report confidences: trusted as before
    ],
)
def test_asr_confidence_anchors(avg_logprob: float, no_speech_prob: float, confidence: float) -> None:
    assert asr_confidence(avg_logprob, no_speech_prob) == pytest.approx(confidence)


@given(
    st.floats(-5.0, 0.0),
    st.floats(-5.0, 0.0),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
)
def test_asr_confidence_is_bounded_and_monotonic(
    logprob_a: float, logprob_b: float, no_speech_a: float, no_speech_b: float
) -> None:
    low_lp, high_lp = sorted((logprob_a, logprob_b))
    low_ns, high_ns = sorted((no_speech_a, no_speech_b))
    assert 0.0 <= asr_confidence(low_lp, low_ns) <= 1.0
    assert asr_confidence(low_lp, low_ns) <= asr_confidence(high_lp, low_ns)
    assert asr_confidence(low_lp, high_ns) <= asr_confidence(low_lp, low_ns)


def transcript(text: str = "Ich freue mich", avg_logprob: float = 0.0, no_speech: float = 0.0) -> audio_pb2.Transcript:
    return audio_pb2.Transcript(text=text, avg_logprob=avg_logprob, no_speech_prob=no_speech)


@pytest.mark.parametrize(
    ("heard", "reason"),
    [
        (transcript(text=""), "audio gave no transcript"),
        (transcript(text="  "), "audio gave no transcript"),
        (
            transcript(no_speech=NO_SPEECH_MAX),
            "the audio transcript is of no speech (no-speech probability 0.60)",
        ),
        (transcript(no_speech=1.0), "the audio transcript is of no speech (no-speech probability 1.00)"),
        (transcript(no_speech=0.59), None),
        (transcript(avg_logprob=-3.0), None),  # words, however doubtful: the reliability says how doubtful
    ],
)
def test_only_a_transcript_of_speech_gives_text(heard: audio_pb2.Transcript, reason: str | None) -> None:
    assert no_text_reason(heard) == reason


@pytest.mark.parametrize(
    ("text_reliability", "heard", "reliability"),
    [
        (1.0, transcript(avg_logprob=-0.35, no_speech=0.02), 0.98),  # English, Whisper base
        (0.8, transcript(avg_logprob=-0.7), 0.4),  # translated text, half-sure recogniser
        (0.2, transcript(avg_logprob=-0.55, no_speech=0.03), 0.2 * 0.75 * 0.97),  # a language the text path cannot read
        (1.0, transcript(avg_logprob=-0.96, no_speech=0.19), 0.04 / 0.6 * 0.81),  # tiny.en's English for German speech
        (0.0, transcript(avg_logprob=-0.7), 0.5),  # text reliability not reported: counted as 1, as fusion does
    ],
)
def test_text_reliability_is_the_text_services_times_the_recognisers(
    text_reliability: float, heard: audio_pb2.Transcript, reliability: float
) -> None:
    assert transcript_text_reliability(text_reliability, heard) == pytest.approx(reliability)


def test_the_confidence_is_described_with_its_inputs() -> None:
    assert describe_confidence(transcript(avg_logprob=-0.955, no_speech=0.19)) == (
        "transcript confidence 0.06: mean log-probability -0.95, no-speech probability 0.19"
    )
