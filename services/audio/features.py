"""Audio decoding and the log-Mel features of the speech-emotion model, shared by training and serving.

Everything the model sees goes through `analysis_windows`; `services.audio.train` precomputes its
features with the same function, so what the model was trained on is what it is served.

Exact parameters (tested in tests/unit/audio/test_features.py):
- decode: PyAV (FFmpeg) for WAV, FLAC, OGG/Vorbis, Opus (OGG or WebM), MP3 and anything else FFmpeg
  reads; libswresample resamples to 16 kHz float32 keeping the channels, then the channels are
  averaged to mono (swresample's own downmix sums channels and clips a loud 7.1 file).
  16 kHz because the training data (RAVDESS, EmoDB copies) is 16 kHz and Whisper wants 16 kHz,
  so one decode serves both the emotion model and ASR.
- STFT: n_fft 1024 (64 ms), periodic Hann window of 1024, hop 384 (24 ms), centred frames with
  reflect padding of n_fft/2, power spectrum |X|^2.
- Mel: 128 triangular filters, Slaney mel scale and Slaney area normalisation (librosa's
  defaults), fmin 0 Hz, fmax 8000 Hz (Nyquist).
- log: 10*log10(max(mel, 1e-10)) dB re full scale, floored at 80 dB below the window's maximum.
  The model standardises each window itself (zero mean, unit variance), so loudness does not matter.
- window: 130 frames = (130-1)*384 = 49,536 samples = 3.096 s. Longer audio is cut into windows
  every 24,768 samples (50 % overlap); the last window is aligned to the end of the audio so no
  sample is dropped. Shorter audio is zero-padded at the end to one window and reported as padded.

Limits: empty input, input over `max_bytes`, audio shorter than `min_duration_s` and audio longer
than `max_duration_s` are refused. The duration is read from the container header before decoding;
files whose header has no duration (browser WebM) or lies are decoded as a stream that is abandoned as
soon as it passes the limit, so memory stays bounded by max_duration_s * 16000 * 4 bytes."""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import av
import numpy as np

from emomesh.errors import InvalidInput, TooLarge

SAMPLE_RATE = 16_000
N_FFT = 1024
WIN_LENGTH = 1024
HOP_LENGTH = 384
N_MELS = 128
FMIN = 0.0
FMAX = 8000.0
N_FRAMES = 130
TOP_DB = 80.0
POWER_FLOOR = 1e-10
WINDOW_SAMPLES = (N_FRAMES - 1) * HOP_LENGTH  # 49,536 samples = 3.096 s
WINDOW_STRIDE = WINDOW_SAMPLES // 2
WINDOW_SECONDS = WINDOW_SAMPLES / SAMPLE_RATE

FORMATS_HINT = "WAV, FLAC, OGG/Vorbis, Opus (OGG/WebM) or MP3"


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = 32 * 1024 * 1024
    min_duration_s: float = 0.25
    max_duration_s: float = 600.0


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32 mono at SAMPLE_RATE
    source_sample_rate: int
    source_channels: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass(frozen=True)
class Windows:
    """Fixed-length analysis windows of one clip."""

    log_mel: np.ndarray  # float32, one model input per window: [N, *FEATURE_SHAPES[kind]]
    starts_s: np.ndarray  # float64 [N]
    ends_s: np.ndarray  # float64 [N]; the end of the audio, not of the padding
    padded: bool


# ---------------------------------------------------------------------------------------------
# decoding


def _header_duration_s(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


# FFmpeg's default probe reads up to 5 MB and 5 s of a stream to learn what every format accepted here
# states in its header; for a 3 s WAV that probe was half of the whole decode (8.9 of 16 ms). A header-only
# open decodes the same samples (checked for WAV, FLAC, MP3, Vorbis, Opus, WebM and AAC); the full probe
# remains the fallback for a stream whose header leaves the rate or channel count unknown.
HEADER_ONLY_PROBE = {"probesize": "4096", "analyzeduration": "0"}


def _open_audio(data: bytes, options: dict[str, str]) -> av.container.InputContainer:
    try:
        return av.open(io.BytesIO(data), mode="r", options=options)
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise InvalidInput(f"audio could not be read: not {FORMATS_HINT}, or its header is corrupt") from exc


def _stream_format(container: av.container.InputContainer) -> tuple[int, int] | None:
    """(sample rate, channels) of the first audio stream; None when there is none or either is unknown."""
    if not container.streams.audio:
        return None
    context = container.streams.audio[0].codec_context
    rate, channels = int(context.sample_rate or 0), int(context.channels or 0)
    return (rate, channels) if rate > 0 and channels > 0 else None


def decode_audio(data: bytes, limits: DecodeLimits = DecodeLimits()) -> DecodedAudio:
    """Encoded audio bytes -> float32 mono at 16 kHz, refusing bad or oversized input with a clear error."""
    if not data:
        raise InvalidInput("audio is empty")
    if len(data) > limits.max_bytes:
        raise TooLarge(f"audio is {len(data)} bytes; the limit is {limits.max_bytes} bytes")
    container = _open_audio(data, HEADER_ONLY_PROBE)
    found = _stream_format(container)
    if found is None:
        # The header left the rate or channel count open: let FFmpeg look into the stream itself.
        container.close()
        container = _open_audio(data, {})
        found = _stream_format(container)
    with container:
        if not container.streams.audio:
            raise InvalidInput("the file has no audio stream")
        if found is None:
            raise InvalidInput("audio header has no sample rate or channel count; the file is corrupt")
        stream = container.streams.audio[0]
        rate, channels = found
        declared = _header_duration_s(container, stream)
        if declared is not None and declared > limits.max_duration_s:
            raise TooLarge(f"audio is {declared:.1f} s long; the limit is {limits.max_duration_s:.0f} s")
        samples = _decode_stream(container, stream, channels, limits.max_duration_s)
    duration = len(samples) / SAMPLE_RATE
    if len(samples) == 0:
        raise InvalidInput("audio contains no samples")
    if duration < limits.min_duration_s:
        raise InvalidInput(f"audio is {duration:.3f} s long; at least {limits.min_duration_s:.2f} s is needed")
    if not np.isfinite(samples).all():
        raise InvalidInput("audio contains NaN or infinite samples")
    return DecodedAudio(samples, rate, channels)


def _decode_stream(
    container: av.container.InputContainer, stream: av.AudioStream, channels: int, max_duration_s: float
) -> np.ndarray:
    """Decodes frame by frame, resampling as it goes; stops with TooLarge once past the limit."""
    max_samples = int(max_duration_s * SAMPLE_RATE)
    # Packed float keeps the channels interleaved; a planar 8-channel frame crashes PyAV's to_ndarray.
    resampler = av.AudioResampler(format="flt", layout=stream.layout, rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0

    def take(frames: list[av.AudioFrame]) -> None:
        nonlocal total
        for frame in frames:
            mono = frame.to_ndarray().reshape(-1, channels).mean(axis=1, dtype=np.float32)
            total += len(mono)
            if total > max_samples:
                raise TooLarge(f"audio is longer than the limit of {max_duration_s:.0f} s")
            chunks.append(mono)

    try:
        for frame in container.decode(stream):
            take(resampler.resample(frame))
        take(resampler.resample(None))
    except (av.error.FFmpegError, ValueError) as exc:
        raise InvalidInput(f"audio is corrupt and could not be decoded ({FORMATS_HINT} expected)") from exc
    return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)


# ---------------------------------------------------------------------------------------------
# log-Mel


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """[N_MELS, N_FFT//2+1] triangular filters, Slaney-normalised (each filter has unit area in Hz/2)."""
    fft_hz = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(np.array(FMIN)), _hz_to_mel(np.array(FMAX)), N_MELS + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def hann_window() -> np.ndarray:
    """Periodic Hann window (as torch.hann_window and librosa's get_window('hann') use)."""
    n = np.arange(WIN_LENGTH)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / WIN_LENGTH)).astype(np.float32)


def log_mel(segment: np.ndarray) -> np.ndarray:
    """Exactly WINDOW_SAMPLES mono samples -> float32 [N_MELS, N_FRAMES] log-Mel in dB."""
    if segment.shape != (WINDOW_SAMPLES,):
        raise ValueError(f"expected {WINDOW_SAMPLES} samples, got {segment.shape}")
    padded = np.pad(segment.astype(np.float32), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    power = np.abs(np.fft.rfft(frames * hann_window(), n=N_FFT, axis=1)) ** 2  # [N_FRAMES, bins]
    mel = mel_filterbank() @ power.T.astype(np.float32)
    db = 10.0 * np.log10(np.maximum(mel, POWER_FLOOR))
    return np.maximum(db, db.max() - TOP_DB).astype(np.float32)


# Whisper's own log-Mel (80 bands, 25 ms frames every 10 ms, log10 floored 8 decades below the window's
# maximum, scaled to about [-1, 1]), as faster-whisper computes it for the ASR. One analysis window
# (WINDOW_SAMPLES, plus the 160-sample tail padding faster-whisper adds) gives 310 frames.
WHISPER_N_MELS = 80
WHISPER_HOP = 160
WHISPER_FRAMES = (WINDOW_SAMPLES + WHISPER_HOP) // WHISPER_HOP


@lru_cache(maxsize=1)
def _whisper_feature_extractor() -> Any:
    # Imported here: faster-whisper pulls in CTranslate2, which the ACRNN features do not need.
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=WHISPER_N_MELS, hop_length=WHISPER_HOP)


def whisper_log_mel(segment: np.ndarray) -> np.ndarray:
    """Exactly WINDOW_SAMPLES mono samples -> float32 [80, 310] Whisper log-Mel (the encoder's input)."""
    if segment.shape != (WINDOW_SAMPLES,):
        raise ValueError(f"expected {WINDOW_SAMPLES} samples, got {segment.shape}")
    features = _whisper_feature_extractor()(segment.astype(np.float32), padding=WHISPER_HOP)
    return np.asarray(features, dtype=np.float32)


# The input each speech-emotion model reads per window, by the name its Triton config gives
# (`emomesh_audio_features`; models without it read the ACRNN's log-Mel).
FEATURE_SHAPES: dict[str, tuple[int, ...]] = {
    "log_mel_128x130": (1, N_MELS, N_FRAMES),
    "whisper_80x310": (WHISPER_N_MELS, WHISPER_FRAMES),
}
_FEATURE_FUNCTIONS = {"log_mel_128x130": log_mel, "whisper_80x310": whisper_log_mel}
DEFAULT_FEATURES = "log_mel_128x130"


def window_starts(n_samples: int) -> list[int]:
    """Start sample of each analysis window: every WINDOW_STRIDE, the last one flush with the end."""
    if n_samples <= WINDOW_SAMPLES:
        return [0]
    starts = list(range(0, n_samples - WINDOW_SAMPLES + 1, WINDOW_STRIDE))
    if starts[-1] + WINDOW_SAMPLES < n_samples:
        starts.append(n_samples - WINDOW_SAMPLES)
    return starts


def analysis_windows(samples: np.ndarray, features: str = DEFAULT_FEATURES) -> Windows:
    """Mono 16 kHz samples -> the model's inputs, one per overlapping window (padded if short).

    `features` names the model's input (FEATURE_SHAPES); training and serving both come through here."""
    if features not in FEATURE_SHAPES:
        raise ValueError(f"unknown audio features {features!r}; expected one of {sorted(FEATURE_SHAPES)}")
    transform = _FEATURE_FUNCTIONS[features]
    n = len(samples)
    padded = n < WINDOW_SAMPLES
    audio = np.pad(samples, (0, WINDOW_SAMPLES - n)) if padded else samples
    starts = window_starts(len(audio))
    out = np.empty((len(starts), *FEATURE_SHAPES[features]), dtype=np.float32)
    for i, start in enumerate(starts):
        out[i] = transform(audio[start : start + WINDOW_SAMPLES]).reshape(FEATURE_SHAPES[features])
    starts_s = np.asarray(starts, dtype=np.float64) / SAMPLE_RATE
    ends_s = np.minimum(starts_s + WINDOW_SECONDS, n / SAMPLE_RATE)
    return Windows(out, starts_s, ends_s, padded)


# ---------------------------------------------------------------------------------------------
# speech / silence


VAD_FRAME = 400  # 25 ms
VAD_HOP = 160  # 10 ms
VAD_ABS_FLOOR_DB = -70.0  # frames quieter than this (dB re full scale) are silence (quiet RAVDESS takes peak ~-45)
VAD_ABOVE_NOISE_DB = 12.0  # ...and so are frames less than this above the clip's noise floor
VAD_BELOW_PEAK_DB = 40.0  # ...or more than this below the clip's loudest frame
VAD_MAX_FLATNESS = 0.35  # white noise is ~0.56, voiced speech < 0.1
VAD_MIN_MODULATION_DB = 10.0  # speech rises and falls with syllables; a steady tone or hum does not


@dataclass(frozen=True)
class SpeechActivity:
    active: np.ndarray  # bool per 10 ms frame
    speech_s: float
    modulation_db: float

    def seconds_between(self, start_s: float, end_s: float) -> float:
        lo, hi = int(start_s * 100), int(np.ceil(end_s * 100))
        return float(self.active[lo:hi].sum()) * VAD_HOP / SAMPLE_RATE


def speech_activity(samples: np.ndarray) -> SpeechActivity:
    """Energy-based voice activity: a 10 ms frame is speech when it is loud (absolutely, relative to the
    clip's noise floor and to its loudest frame) and not noise-like (low spectral flatness). Deliberately
    simple; it keeps silence, hiss and hum from being scored as emotional speech."""
    if len(samples) < VAD_FRAME:
        return SpeechActivity(np.zeros(0, bool), 0.0, 0.0)
    frames = np.lib.stride_tricks.sliding_window_view(samples, VAD_FRAME)[::VAD_HOP]
    energy_db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    noise_floor = np.percentile(energy_db, 10)
    floor = max(VAD_ABS_FLOOR_DB, noise_floor + VAD_ABOVE_NOISE_DB, float(energy_db.max()) - VAD_BELOW_PEAK_DB)
    loud = energy_db > floor
    power = np.abs(np.fft.rfft(frames * np.hanning(VAD_FRAME), axis=1)) ** 2 + 1e-12
    flatness = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
    modulation = float(np.percentile(energy_db, 90) - np.percentile(energy_db, 10))
    active = loud & (flatness < VAD_MAX_FLATNESS)
    if modulation < VAD_MIN_MODULATION_DB:
        active[:] = False
    return SpeechActivity(active, float(active.sum()) * VAD_HOP / SAMPLE_RATE, modulation)
