"""Audio made by the tests themselves: tones, noise, silence, espeak-ng speech, and the same audio
in the formats clients send (encoded with soundfile and the ffmpeg command line)."""

from __future__ import annotations

import io
import subprocess

import numpy as np
import soundfile as sf

from tests.tools import require_tool

FFMPEG_FORMATS = {
    # name: (ffmpeg muxer, codec arguments)
    "mp3": ("mp3", ["-c:a", "libmp3lame", "-b:a", "64k"]),
    "ogg": ("ogg", ["-c:a", "libvorbis"]),
    "opus": ("ogg", ["-c:a", "libopus", "-b:a", "32k"]),
    "webm": ("webm", ["-c:a", "libopus", "-b:a", "32k"]),
}


def tone(seconds: float, rate: int = 16_000, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, rate: int = 16_000, amplitude: float = 0.2, seed: int = 0) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).standard_normal(round(seconds * rate))).astype(np.float32)


def silence(seconds: float, rate: int = 16_000) -> np.ndarray:
    return np.zeros(round(seconds * rate), dtype=np.float32)


def encode(samples: np.ndarray, rate: int = 16_000, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    """samples: [n] mono or [n, channels]."""
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def transcode(data: bytes, name: str, rate: int | None = None) -> bytes:
    """Re-encodes audio bytes with the ffmpeg CLI into one of FFMPEG_FORMATS, written to a pipe (so
    the container is not seekable and, for WebM, carries no duration: what browsers send)."""
    muxer, codec = FFMPEG_FORMATS[name]
    ffmpeg = require_tool("ffmpeg", "scripts/setup.sh installs it")
    resample = ["-ar", str(rate)] if rate else []
    return subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-i", "pipe:0", *codec, *resample, "-f", muxer, "pipe:1"],
        input=data,
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout


def espeak(text: str, words_per_minute: int = 150, voice: str | None = None) -> bytes:
    """WAV bytes (22.05 kHz mono) of text spoken by espeak-ng, in its default voice (English) or `voice`
    (`espeak-ng --voices` lists them)."""
    espeak_ng = require_tool("espeak-ng", "scripts/setup.sh installs it")
    voice_args = ["-v", voice] if voice else []
    return subprocess.run(
        [espeak_ng, *voice_args, "-s", str(words_per_minute), "--stdout", text],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, int(rate)
