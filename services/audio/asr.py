"""Speech recognition with faster-whisper (CTranslate2), inside the audio service process.

Why here and not in Triton: faster-whisper runs a CTranslate2 model (an encoder-decoder with beam
search in C++), not an ONNX graph; Triton's Python backend could host it, but that would only add a
second copy of the decoded audio on the wire. The model is small (Whisper base, 145 MB int8; tiny.en,
75 MB) and the audio is already decoded at 16 kHz here, which is exactly what Whisper takes.

Besides the text, a transcript carries what a reader needs to judge it: the detected language and its
probability, the mean token log-probability and the no-speech probability (per segment and for the
whole transcript). Fusion discounts text read from a transcript by them (services/fusion/transcript.py).

CTranslate2 releases the GIL while it computes, so a transcription runs in a worker thread of a
bounded pool and the event loop keeps serving other calls. Requests beyond `max_pending` are
refused (UNAVAILABLE) rather than queued without bound, and each has a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from emomesh.errors import DeadlineExceeded, TooLarge, Unavailable
from emotion.audio.v1 import audio_pb2
from emotion.common.v1 import common_pb2
from services.audio.asr_models import model_directory
from services.audio.config import AsrSettings
from services.audio.features import SAMPLE_RATE
from services.audio.metrics import ASR_PENDING, ASR_REJECTED, AUDIO_STAGE_SECONDS


class SpeechTranscriber(Protocol):
    """What the audio servicer needs from speech recognition: Transcriber (Whisper), or a fake."""

    @property
    def info(self) -> common_pb2.ModelInfo: ...

    async def transcribe(self, samples: np.ndarray) -> audio_pb2.Transcript: ...


class DecodedSegment(Protocol):
    """The fields of a faster-whisper Segment that a transcript keeps."""

    start: float
    end: float
    text: str
    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float


def transcript_of(
    segments: Sequence[DecodedSegment], language: str, language_probability: float
) -> audio_pb2.Transcript:
    """The transcript of decoded segments: their text, times and confidences, plus the whole transcript's
    mean token log-probability (the segments' weighted by their token counts) and no-speech probability
    (weighted by their durations). Without segments (Whisper found nothing to say) both stay 0 and the
    text is empty."""
    transcript = audio_pb2.Transcript(
        text=" ".join(s.text.strip() for s in segments if s.text.strip()),
        language=language,
        language_probability=language_probability,
        segments=[
            audio_pb2.TranscriptSegment(
                start_s=float(s.start),
                end_s=float(s.end),
                text=s.text.strip(),
                avg_logprob=float(s.avg_logprob),
                no_speech_prob=float(s.no_speech_prob),
            )
            for s in segments
        ],
    )
    tokens = sum(len(s.tokens) for s in segments)
    if tokens > 0:
        transcript.avg_logprob = sum(s.avg_logprob * len(s.tokens) for s in segments) / tokens
    durations = [max(0.0, s.end - s.start) for s in segments]
    if sum(durations) > 0:
        weighted = sum(s.no_speech_prob * d for s, d in zip(segments, durations, strict=True))
        transcript.no_speech_prob = weighted / sum(durations)
    elif segments:
        transcript.no_speech_prob = sum(s.no_speech_prob for s in segments) / len(segments)
    return transcript


class Transcriber:
    def __init__(self, settings: AsrSettings) -> None:
        from faster_whisper import WhisperModel

        self.settings = settings
        # The first start assembles Whisper base from its wheels (a second or two); later ones reuse it.
        self.model_dir = model_directory(settings.model, Path(settings.cache_dir))
        self.model = WhisperModel(
            str(self.model_dir),
            device="cpu",
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
            # A local directory always; never a model hub, even if the directory were to vanish.
            local_files_only=True,
        )
        self._executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="asr")
        self._pending = 0

    @property
    def info(self) -> common_pb2.ModelInfo:
        return common_pb2.ModelInfo(name=self.settings.model_name, version=self.settings.compute_type)

    def _run(self, samples: np.ndarray) -> audio_pb2.Transcript:
        segments, info = self.model.transcribe(
            samples,
            language=self.settings.language,
            beam_size=self.settings.beam_size,
            # Each segment on its own: a misheard segment does not derail the next one.
            condition_on_previous_text=False,
        )
        # `segments` is lazy: decoding happens while iterating, so iterate here, in the worker thread.
        decoded = list(segments)
        return transcript_of(decoded, str(info.language), float(info.language_probability))

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
            transcript = await asyncio.wait_for(asyncio.shield(future), self.settings.timeout_s)
        except TimeoutError as exc:
            raise DeadlineExceeded(f"transcription took longer than {self.settings.timeout_s:.0f} s") from exc
        elapsed = time.perf_counter() - start
        AUDIO_STAGE_SECONDS.labels("asr").observe(elapsed)
        transcript.model.CopyFrom(self.info)
        transcript.latency_ms = elapsed * 1000
        return transcript

    def _release(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            future.exception()  # marks a late failure as seen; the caller already had its answer
        self._pending -= 1
        ASR_PENDING.set(self._pending)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
