"""Speech recognition with faster-whisper (CTranslate2), inside the audio service process.

Why here and not in Triton: faster-whisper runs a CTranslate2 model (an encoder-decoder with beam
search in C++), not an ONNX graph; Triton's Python backend could host it, but that would only add a
second copy of the decoded audio on the wire. The model is small (tiny.en, 75 MB) and the audio is
already decoded at 16 kHz here, which is exactly what Whisper takes.

CTranslate2 releases the GIL while it computes, so a transcription runs in a worker thread of a
bounded pool and the event loop keeps serving other calls. Requests beyond `max_pending` are
refused (UNAVAILABLE) rather than queued without bound, and each has a deadline."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from emomesh.errors import DeadlineExceeded, TooLarge, Unavailable
from emotion.audio.v1 import audio_pb2
from emotion.common.v1 import common_pb2
from services.audio.config import AsrSettings
from services.audio.features import SAMPLE_RATE
from services.audio.metrics import ASR_PENDING, ASR_REJECTED, AUDIO_STAGE_SECONDS


class SpeechTranscriber(Protocol):
    """What the audio servicer needs from speech recognition: Transcriber (Whisper), or a fake."""

    @property
    def info(self) -> common_pb2.ModelInfo: ...

    async def transcribe(self, samples: np.ndarray) -> audio_pb2.Transcript: ...


class Transcriber:
    def __init__(self, settings: AsrSettings) -> None:
        from faster_whisper import WhisperModel

        self.settings = settings
        path = Path(settings.model_dir)
        if not (path / "model.bin").exists():
            raise FileNotFoundError(f"{path} is not a CTranslate2 Whisper model directory (no model.bin)")
        self.model = WhisperModel(
            str(path), device="cpu", compute_type=settings.compute_type, cpu_threads=settings.cpu_threads
        )
        self._executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="asr")
        self._pending = 0

    @property
    def info(self) -> common_pb2.ModelInfo:
        return common_pb2.ModelInfo(name=self.settings.model_name, version=self.settings.compute_type)

    def _run(self, samples: np.ndarray) -> tuple[str, list[audio_pb2.TranscriptSegment]]:
        segments, info = self.model.transcribe(
            samples,
            language=self.settings.language,
            beam_size=self.settings.beam_size,
            # Each segment on its own: a misheard segment does not derail the next one.
            condition_on_previous_text=False,
        )
        # `segments` is lazy: decoding happens while iterating, so iterate here, in the worker thread.
        out = [
            audio_pb2.TranscriptSegment(start_s=float(s.start), end_s=float(s.end), text=s.text.strip())
            for s in segments
        ]
        return str(info.language), out

    async def transcribe(self, samples: np.ndarray) -> audio_pb2.Transcript:
        duration = len(samples) / SAMPLE_RATE
        if duration > self.settings.max_duration_s:
            raise TooLarge(
                f"audio is {duration:.0f} s long; transcription is limited to {self.settings.max_duration_s:.0f} s"
            )
        if self._pending >= self.settings.max_pending:
            ASR_REJECTED.inc()
            raise Unavailable(f"transcription is busy ({self._pending} requests in progress); retry later")
        self._pending += 1
        ASR_PENDING.set(self._pending)
        start = time.perf_counter()
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._run, samples)
        # The slot is released when the work really ends, not when the caller stops waiting: a
        # worker thread cannot be interrupted, so a timed-out transcription still occupies it.
        future.add_done_callback(self._release)
        try:
            language, segments = await asyncio.wait_for(asyncio.shield(future), self.settings.timeout_s)
        except TimeoutError as exc:
            raise DeadlineExceeded(f"transcription took longer than {self.settings.timeout_s:.0f} s") from exc
        elapsed = time.perf_counter() - start
        AUDIO_STAGE_SECONDS.labels("asr").observe(elapsed)
        return audio_pb2.Transcript(
            text=" ".join(s.text for s in segments if s.text).strip(),
            language=language,
            segments=segments,
            model=self.info,
            latency_ms=elapsed * 1000,
        )

    def _release(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            future.exception()  # marks a late failure as seen; the caller already had its answer
        self._pending -= 1
        ASR_PENDING.set(self._pending)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
