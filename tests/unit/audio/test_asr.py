"""The Transcriber's bounds (queue, deadline, duration) and the transcript's confidences with a fake
Whisper; the real one runs in tests/integration/test_audio.py."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from emomesh.config import ConfigError
from emomesh.errors import DeadlineExceeded, TooLarge, Unavailable
from services.audio import asr
from services.audio.config import AudioSettings


class FakeWhisper:
    release = threading.Event()

    def __init__(self, path: str, **kwargs: Any) -> None:
        self.path = path

    def transcribe(self, samples: np.ndarray, **kwargs: Any) -> tuple[Iterator[Any], Any]:
        def segments() -> Iterator[Any]:
            FakeWhisper.release.wait(10)
            yield segment(0.0, len(samples) / 16000, " hello world ", tokens=3, avg_logprob=-0.25, no_speech_prob=0.1)

        return segments(), SimpleNamespace(language="en", language_probability=1.0)


def segment(
    start: float, end: float, text: str, *, tokens: int, avg_logprob: float, no_speech_prob: float
) -> SimpleNamespace:
    """What faster-whisper's Segment holds of it."""
    return SimpleNamespace(
        start=start,
        end=end,
        text=text,
        tokens=list(range(tokens)),
        avg_logprob=avg_logprob,
        no_speech_prob=no_speech_prob,
    )


@pytest.fixture
def transcriber(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[asr.Transcriber]:
    import faster_whisper

    monkeypatch.setattr(faster_whisper, "WhisperModel", FakeWhisper)
    (tmp_path / "model.bin").write_bytes(b"")
    settings = AudioSettings.from_env({"EMOMESH_AUDIO_ASR_MODEL": str(tmp_path)}).asr
    FakeWhisper.release.clear()
    t = asr.Transcriber(replace(settings, max_pending=1, timeout_s=0.5, max_duration_s=10))
    yield t
    FakeWhisper.release.set()
    t.close()


async def test_transcript_text_and_segments(transcriber: asr.Transcriber) -> None:
    FakeWhisper.release.set()
    transcript = await transcriber.transcribe(np.zeros(16000, np.float32))
    assert transcript.text == "hello world"
    assert transcript.language == "en"
    assert [(s.start_s, s.end_s) for s in transcript.segments] == [(0.0, 1.0)]
    assert transcript.model.name.startswith("whisper-")
    assert transcript.language_probability == 1.0
    assert transcript.avg_logprob == pytest.approx(-0.25)
    assert transcript.no_speech_prob == pytest.approx(0.1)
    assert transcript.segments[0].avg_logprob == pytest.approx(-0.25)
    assert transcript.segments[0].no_speech_prob == pytest.approx(0.1)


def test_transcript_confidences_are_weighted_by_tokens_and_by_time() -> None:
    segments = [
        segment(0.0, 1.0, " Guten Tag. ", tokens=1, avg_logprob=-1.0, no_speech_prob=0.4),
        segment(1.0, 4.0, " Wie geht es dir? ", tokens=3, avg_logprob=-0.2, no_speech_prob=0.0),
    ]
    transcript = asr.transcript_of(segments, "de", 0.9)
    assert transcript.text == "Guten Tag. Wie geht es dir?"
    assert (transcript.language, transcript.language_probability) == ("de", pytest.approx(0.9))
    # Per token: (1 x -1.0 + 3 x -0.2) / 4; per second: (1 s x 0.4 + 3 s x 0) / 4 s.
    assert transcript.avg_logprob == pytest.approx(-0.4)
    assert transcript.no_speech_prob == pytest.approx(0.1)
    assert [(s.start_s, s.end_s, s.text) for s in transcript.segments] == [
        (0.0, 1.0, "Guten Tag."),
        (1.0, 4.0, "Wie geht es dir?"),
    ]


def test_a_transcript_without_segments_is_empty() -> None:
    transcript = asr.transcript_of([], "en", 0.5)
    assert (transcript.text, transcript.avg_logprob, transcript.no_speech_prob) == ("", 0.0, 0.0)


async def test_busy_transcriber_refuses_instead_of_queueing(transcriber: asr.Transcriber) -> None:
    first = asyncio.ensure_future(transcriber.transcribe(np.zeros(16000, np.float32)))
    await asyncio.sleep(0)
    with pytest.raises(Unavailable, match="busy"):
        await transcriber.transcribe(np.zeros(16000, np.float32))
    FakeWhisper.release.set()
    assert (await first).text == "hello world"


async def test_slow_transcription_hits_the_deadline_and_keeps_its_slot(transcriber: asr.Transcriber) -> None:
    with pytest.raises(DeadlineExceeded):
        await transcriber.transcribe(np.zeros(16000, np.float32))
    # The worker thread is still busy, so the slot is still taken until it finishes.
    with pytest.raises(Unavailable):
        await transcriber.transcribe(np.zeros(16000, np.float32))
    FakeWhisper.release.set()
    for _ in range(100):
        if transcriber._pending == 0:
            break
        await asyncio.sleep(0.05)
    assert (await transcriber.transcribe(np.zeros(16000, np.float32))).text == "hello world"


async def test_too_long_for_transcription(transcriber: asr.Transcriber) -> None:
    with pytest.raises(TooLarge, match="limited to 10 s"):
        await transcriber.transcribe(np.zeros(11 * 16000, np.float32))


def test_missing_model_directory_fails_at_start(tmp_path: Path) -> None:
    settings = AudioSettings.from_env({"EMOMESH_AUDIO_ASR_MODEL": str(tmp_path / "nothing")}).asr
    with pytest.raises(ConfigError, match=r"neither base nor tiny\.en nor a CTranslate2 Whisper model directory"):
        asr.Transcriber(settings)
