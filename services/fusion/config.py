"""Fusion service settings, read once from the environment (EMOMESH_FUSION_*)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from emomesh.config import ConfigError, Env, MiB, ServerSettings
from emomesh.ports import service_port
from emomesh.security import ClientSecurity, read_token
from services.fusion.fuse import FusionConfig, load_fusion_file
from services.fusion.stream import StreamLimits

DEFAULT_PORT = service_port("fusion")
DEFAULT_WEIGHTS_FILE = Path(__file__).resolve().parent / "weights.json"


@dataclass(frozen=True)
class FusionSettings:
    server: ServerSettings
    fusion: FusionConfig
    # Modality service addresses; None when the deployment has no such service (the modality is
    # then always reported UNAVAILABLE instead of failing the whole service at start-up).
    vision_addr: str | None
    audio_addr: str | None
    text_addr: str | None
    # Upper bound of one Analyze call; a caller's shorter gRPC deadline wins.
    max_deadline_s: float
    # Kept back from the caller's deadline so the partial answer still reaches the caller in time
    # on a busy machine: max(deadline_margin_s, deadline_margin_share x the caller's time), at most
    # half of that time.
    deadline_margin_s: float
    deadline_margin_share: float
    # A dependent call (text on the ASR transcript) is not started with less time than this left;
    # the modality is reported TIMED_OUT instead of sending a call that cannot finish.
    min_call_budget_s: float
    max_request_bytes: int
    max_text_chars: int
    # TLS and bearer token towards each modality service, by name (vision, audio, text).
    outbound: Mapping[str, ClientSecurity]
    # AnalyzeStream (EMOMESH_FUSION_STREAM_*).
    stream: StreamLimits

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FusionSettings:
        env = Env("EMOMESH_FUSION_", environ)
        weights_file = Path(env.get_str("WEIGHTS_FILE", str(DEFAULT_WEIGHTS_FILE)))
        try:
            loaded = load_fusion_file(weights_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"EMOMESH_FUSION_WEIGHTS_FILE={weights_file}: {exc}") from exc
        # One TLS setting and token for all modality services (EMOMESH_FUSION_OUTBOUND_*); a
        # service's own token (EMOMESH_FUSION_<MODALITY>_TOKEN) wins over the shared one.
        outbound = ClientSecurity.from_env(Env("EMOMESH_FUSION_OUTBOUND_", environ))
        # One message carries an image (vision refuses one above 20 MiB) or a video, and the audio
        # (ten minutes of 16 kHz speech is 19 MB as WAV): gRPC refuses a larger one unread.
        server = ServerSettings.from_env(
            "fusion", DEFAULT_PORT, environ, max_message_bytes=21 * MiB, max_inflight_bytes=64 * MiB
        )
        return cls(
            server=server,
            fusion=FusionConfig(
                weights=loaded.weights,
                neutral_discount=loaded.neutral_discount,
                entropy_discount=loaded.entropy_discount,
                min_reliability=env.get_float("MIN_RELIABILITY", 0.3, minimum=0.0),
                conflict_polarity_mass=env.get_float("CONFLICT_POLARITY_MASS", 0.6, minimum=0.0),
                conflict_js=env.get_float("CONFLICT_JS", 0.6, minimum=0.0),
                conflict_confidence=env.get_float("CONFLICT_CONFIDENCE", 0.5, minimum=0.0),
                conflict_min_top=env.get_float("CONFLICT_MIN_TOP", 0.35, minimum=0.0),
            ),
            vision_addr=env.get_optional_str("VISION_ADDR"),
            audio_addr=env.get_optional_str("AUDIO_ADDR"),
            text_addr=env.get_optional_str("TEXT_ADDR"),
            max_deadline_s=env.get_float("MAX_DEADLINE_S", 30.0, minimum=0.01),
            deadline_margin_s=env.get_float("DEADLINE_MARGIN_S", 0.25, minimum=0.0),
            deadline_margin_share=env.get_float("DEADLINE_MARGIN_SHARE", 0.1, minimum=0.0),
            min_call_budget_s=env.get_float("MIN_CALL_BUDGET_S", 0.02, minimum=0.0),
            max_request_bytes=env.get_int("MAX_REQUEST_BYTES", server.max_message_bytes, minimum=1),
            max_text_chars=env.get_int("MAX_TEXT_CHARS", 20_000, minimum=1),
            outbound={
                name: replace(outbound, token=read_token(env, f"{name.upper()}_TOKEN") or outbound.token)
                for name in ("vision", "audio", "text")
            },
            stream=StreamLimits(
                max_streams=env.get_int("STREAM_MAX_STREAMS", 8, minimum=1),
                max_duration_s=env.get_float("STREAM_MAX_DURATION_S", 3600.0, minimum=1.0),
                max_bytes=env.get_int("STREAM_MAX_BYTES", 4 << 30, minimum=1),
                max_fps=env.get_int("STREAM_MAX_FPS", 60, minimum=1),
                frames_in_flight=env.get_int("STREAM_FRAMES_IN_FLIGHT", 2, minimum=1),
                max_utterance_s=env.get_float("STREAM_MAX_UTTERANCE_S", 15.0, minimum=3.0),
                call_timeout_s=env.get_float("STREAM_CALL_TIMEOUT_S", 10.0, minimum=0.01),
                event_queue=env.get_int("STREAM_EVENT_QUEUE", 256, minimum=8),
                max_text_chars=env.get_int("MAX_TEXT_CHARS", 20_000, minimum=1),
                text_context_turns=env.get_int("STREAM_TEXT_CONTEXT_TURNS", 8, minimum=0),
                smoothing_s=env.get_float("STREAM_SMOOTHING_S", 2.0, minimum=0.0),
            ),
        )
