"""AudioService: decode -> speech activity + log-Mel windows -> classify speech windows on Triton (and
transcribe, concurrently) -> aggregate -> encode. Thin on purpose: the steps are pure functions
(features), a model client (model) and a transcriber (asr)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc
import numpy as np

from emomesh.errors import Unimplemented
from emomesh.labels import NUM_LABELS, distribution_from_probs
from emotion.audio.v1 import audio_pb2, audio_pb2_grpc
from services.audio.asr import SpeechTranscriber
from services.audio.config import AudioSettings
from services.audio.features import (
    DecodedAudio,
    SpeechActivity,
    Windows,
    analysis_windows,
    decode_audio,
    speech_activity,
)
from services.audio.metrics import AUDIO_DURATION_SECONDS, AUDIO_STAGE_SECONDS, SPEECH_RESULTS
from services.audio.model import SpeechEmotionClassifier


@dataclass
class _Prepared:
    audio: DecodedAudio
    activity: SpeechActivity
    windows: Windows
    # Which windows hold enough speech to be scored.
    scored: np.ndarray


def reliability(probs: np.ndarray, speech_s: float, full_speech_s: float) -> float:
    """How much a fusion step should trust this clip's distribution, in [0, 1]:
    coverage (speech time, saturating at full_speech_s) x (0.5 + 0.5 x certainty), where certainty is
    1 - normalised entropy of the distribution. No speech gives 0."""
    if speech_s <= 0:
        return 0.0
    p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    certainty = 1.0 - float(-(p * np.log(p)).sum() / np.log(NUM_LABELS))
    coverage = min(1.0, speech_s / full_speech_s)
    return float(np.clip(coverage * (0.5 + 0.5 * certainty), 0.0, 1.0))


class AudioServicer(audio_pb2_grpc.AudioServiceServicer):
    def __init__(
        self, settings: AudioSettings, model: SpeechEmotionClassifier, transcriber: SpeechTranscriber | None
    ) -> None:
        self.settings = settings
        self.model = model
        self.transcriber = transcriber

    def _decode(self, data: bytes) -> tuple[DecodedAudio, SpeechActivity]:
        start = time.perf_counter()
        audio = decode_audio(data, self.settings.limits)
        decoded = time.perf_counter()
        activity = speech_activity(audio.samples)
        AUDIO_STAGE_SECONDS.labels("decode").observe(decoded - start)
        AUDIO_STAGE_SECONDS.labels("vad").observe(time.perf_counter() - decoded)
        AUDIO_DURATION_SECONDS.observe(audio.duration_s)
        return audio, activity

    def _prepare(self, data: bytes) -> _Prepared:
        """CPU-bound part (decode, voice activity, log-Mel); runs in a worker thread."""
        audio, activity = self._decode(data)
        start = time.perf_counter()
        windows = analysis_windows(audio.samples, self.model.features)
        AUDIO_STAGE_SECONDS.labels("features").observe(time.perf_counter() - start)
        speech_detected = activity.speech_s >= self.settings.min_speech_s
        scored = np.array(
            [
                speech_detected and activity.seconds_between(s, e) >= self.settings.min_window_speech_s
                for s, e in zip(windows.starts_s, windows.ends_s, strict=True)
            ],
            dtype=bool,
        )
        return _Prepared(audio, activity, windows, scored)

    async def _transcript(self, audio: DecodedAudio, activity: SpeechActivity) -> audio_pb2.Transcript:
        if self.transcriber is None:
            raise Unimplemented("transcription is disabled on this server (EMOMESH_AUDIO_ASR_ENABLED=false)")
        if activity.speech_s < self.settings.min_speech_s:
            # Whisper invents text ("Thank you.") for silence and noise; say nothing instead, and that
            # there is no speech (no_speech_prob 1), as Whisper would with its own detector.
            return audio_pb2.Transcript(text="", no_speech_prob=1.0, model=self.transcriber.info)
        return await self.transcriber.transcribe(audio.samples)

    async def AnalyzeAudio(
        self, request: audio_pb2.AnalyzeAudioRequest, context: grpc.aio.ServicerContext
    ) -> audio_pb2.AnalyzeAudioResponse:
        start = time.perf_counter()
        if request.transcribe and self.transcriber is None:
            raise Unimplemented("transcription is disabled on this server (EMOMESH_AUDIO_ASR_ENABLED=false)")
        prepared = await asyncio.to_thread(self._prepare, request.audio)
        # Triton scores the windows while Whisper transcribes in its own thread.
        classify = self.model.classify(prepared.windows.log_mel[prepared.scored])
        if request.transcribe:
            scored_probs, transcript = await asyncio.gather(
                classify, self._transcript(prepared.audio, prepared.activity)
            )
        else:
            scored_probs, transcript = await classify, None
        speech_detected = bool(prepared.scored.any())
        SPEECH_RESULTS.labels("yes" if speech_detected else "no").inc()
        windows = prepared.windows
        # No speech, no label: a window or clip without speech carries no distribution at all (a uniform
        # one would still have a "top" emotion that a client could read as a prediction).
        window_results = [
            audio_pb2.AudioWindow(start_s=float(s), end_s=float(e), speech_detected=bool(scored))
            for s, e, scored in zip(windows.starts_s, windows.ends_s, prepared.scored, strict=True)
        ]
        for window, probs in zip((w for w in window_results if w.speech_detected), scored_probs, strict=True):
            window.distribution.CopyFrom(distribution_from_probs(probs))
        response = audio_pb2.AnalyzeAudioResponse(
            windows=window_results,
            padded=windows.padded,
            duration_s=prepared.audio.duration_s,
            speech_detected=speech_detected,
            source_sample_rate=prepared.audio.source_sample_rate,
            source_channels=prepared.audio.source_channels,
            model=self.model.info,
        )
        if speech_detected:
            overall = scored_probs.mean(axis=0)
            response.distribution.CopyFrom(distribution_from_probs(overall))
            response.reliability = reliability(
                overall, prepared.activity.speech_s, self.settings.full_reliability_speech_s
            )
        else:
            response.no_speech_reason = (
                f"no speech detected: {prepared.activity.speech_s:.2f} s of speech in "
                f"{prepared.audio.duration_s:.2f} s of audio (at least {self.settings.min_speech_s:.2f} s "
                f"is needed, {self.settings.min_window_speech_s:.2f} s within one window)"
            )
        if transcript is not None:
            response.transcript.CopyFrom(transcript)
        response.latency_ms = (time.perf_counter() - start) * 1000
        return response

    async def Transcribe(
        self, request: audio_pb2.TranscribeRequest, context: grpc.aio.ServicerContext
    ) -> audio_pb2.TranscribeResponse:
        if self.transcriber is None:
            raise Unimplemented("transcription is disabled on this server (EMOMESH_AUDIO_ASR_ENABLED=false)")
        audio, activity = await asyncio.to_thread(self._decode, request.audio)
        return audio_pb2.TranscribeResponse(transcript=await self._transcript(audio, activity))
