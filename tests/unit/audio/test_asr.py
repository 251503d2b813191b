"""The Transcriber's bounds (queue, deadline, duration) with a fake Whisper; the real one runs in
tests/integration/test_audio.py."""

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
            yield SimpleNamespace(start=0.0, end=len(samples) / 16000, text=" hello world ")

        return segments(), SimpleNamespace(language="en")


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
    with pytest.raises(FileNotFoundError, match=r"model\.bin"):
        asr.Transcriber(settings)
