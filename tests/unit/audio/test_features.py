"""Decoding, limits, log-Mel parameters, windowing and speech detection of services.audio.features."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from emomesh.errors import InvalidInput, TooLarge
from services.audio import features as F
from services.audio.features import DecodeLimits, analysis_windows, decode_audio, log_mel, speech_activity
from tests.audio_media import encode, espeak, noise, silence, tone, transcode


def test_documented_parameters() -> None:
    assert (F.SAMPLE_RATE, F.N_FFT, F.WIN_LENGTH, F.HOP_LENGTH) == (16_000, 1024, 1024, 384)
    assert (F.N_MELS, F.N_FRAMES, F.FMIN, F.FMAX, F.TOP_DB) == (128, 130, 0.0, 8000.0, 80.0)
    assert F.WINDOW_SAMPLES == 49_536
    assert pytest.approx(3.096) == F.WINDOW_SECONDS
    assert F.WINDOW_STRIDE == F.WINDOW_SAMPLES // 2


def test_mel_filterbank_shape_and_slaney_normalisation() -> None:
    bank = F.mel_filterbank()
    assert bank.shape == (128, 513)
    assert (bank >= 0).all()
    assert (bank.sum(axis=1) > 0).all(), "no empty filter"
    fft_hz = np.linspace(0, 8000, 513)
    centres = fft_hz[bank.argmax(axis=1)]
    assert (np.diff(centres) >= 0).all()
    # Slaney normalisation: each triangle has area 1 over its Hz support, i.e. sum * bin width ~ 1.
    areas = bank.sum(axis=1) * (fft_hz[1] - fft_hz[0])
    assert np.median(areas[20:]) == pytest.approx(1.0, rel=0.05)
    # Slaney mel scale: linear below 1 kHz (15 mels per 1000 Hz), 1000 Hz is mel 15.
    assert F._hz_to_mel(np.array(1000.0)) == pytest.approx(15.0)
    assert F._mel_to_hz(F._hz_to_mel(np.array([100.0, 3000.0]))) == pytest.approx([100.0, 3000.0])


def test_hann_window_is_periodic() -> None:
    window = F.hann_window()
    assert window.shape == (1024,)
    assert window[0] == 0.0
    assert window[512] == pytest.approx(1.0)


def test_log_mel_of_a_tone_peaks_in_its_band() -> None:
    spec = log_mel(tone(F.WINDOW_SECONDS, freq=1000.0)[: F.WINDOW_SAMPLES])
    assert spec.shape == (128, 130)
    assert spec.dtype == np.float32
    band = int(np.argmax(F.mel_filterbank()[:, round(1000 / (8000 / 512))]))
    assert abs(int(np.argmax(spec[:, 65])) - band) <= 1
    assert spec.max() - spec.min() <= F.TOP_DB + 1e-3


def test_log_mel_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        log_mel(np.zeros(1000, np.float32))


def test_short_audio_is_padded_to_one_window() -> None:
    windows = analysis_windows(tone(1.0))
    assert windows.padded
    assert windows.log_mel.shape == (1, 1, 128, 130)
    assert windows.starts_s.tolist() == [0.0]
    assert windows.ends_s.tolist() == [1.0]


def test_exactly_one_window_is_not_padded() -> None:
    windows = analysis_windows(np.ones(F.WINDOW_SAMPLES, np.float32) * 0.1)
    assert not windows.padded
    assert len(windows.log_mel) == 1


def test_long_audio_is_cut_into_overlapping_windows_to_the_end() -> None:
    samples = tone(10.0)
    windows = analysis_windows(samples)
    assert not windows.padded
    starts = F.window_starts(len(samples))
    assert starts[:3] == [0, F.WINDOW_STRIDE, 2 * F.WINDOW_STRIDE]
    assert starts[-1] == len(samples) - F.WINDOW_SAMPLES, "the last window ends with the audio"
    assert len(windows.log_mel) == len(starts) == 6
    assert windows.ends_s[-1] == pytest.approx(10.0)
    assert np.all(windows.ends_s - windows.starts_s <= F.WINDOW_SECONDS + 1e-9)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "opus", "mp3", "webm"])
def test_decodes_common_formats_to_16k_mono(fmt: str) -> None:
    wav = encode(tone(2.0, rate=44_100, freq=440.0), rate=44_100)
    data = encode(tone(2.0, rate=44_100), rate=44_100, fmt="FLAC") if fmt == "flac" else wav
    if fmt not in ("wav", "flac"):
        data = transcode(wav, fmt)
    audio = decode_audio(data)
    assert audio.source_channels == 1
    assert audio.source_sample_rate == (48_000 if fmt in ("opus", "webm") else 44_100)
    assert audio.samples.dtype == np.float32
    # Lossy codecs add priming samples; the duration stays within a few tens of ms.
    assert audio.duration_s == pytest.approx(2.0, abs=0.06)
    spectrum = np.abs(np.fft.rfft(audio.samples[4000:20000]))
    assert np.fft.rfftfreq(16000, 1 / 16000)[np.argmax(spectrum)] == pytest.approx(440, abs=2)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "opus", "mp3", "webm"])
def test_header_only_open_decodes_the_samples_a_full_probe_does(fmt: str) -> None:
    stereo = np.stack([tone(1.5, rate=44_100, freq=440.0), tone(1.5, rate=44_100, freq=660.0)], axis=1)
    wav = encode(stereo, rate=44_100)
    data = encode(stereo, rate=44_100, fmt="FLAC") if fmt == "flac" else wav if fmt == "wav" else transcode(wav, fmt)
    with av.open(io.BytesIO(data), mode="r") as container:  # FFmpeg's default, full probe
        stream = container.streams.audio[0]
        channels = int(stream.codec_context.channels)
        reference = F._decode_stream(container, stream, channels, 600.0)
    decoded = decode_audio(data)
    assert decoded.source_channels == channels
    np.testing.assert_array_equal(decoded.samples, reference)


def test_a_header_without_the_format_falls_back_to_the_full_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[dict[str, str]] = []
    real_open, real_format = F._open_audio, F._stream_format

    def recording_open(data: bytes, options: dict[str, str]) -> av.container.InputContainer:
        opened.append(options)
        return real_open(data, options)

    monkeypatch.setattr(F, "_open_audio", recording_open)
    # As if the header-only open had left the sample rate unknown.
    monkeypatch.setattr(F, "_stream_format", lambda c: None if len(opened) == 1 else real_format(c))
    audio = decode_audio(encode(tone(1.0, rate=22_050), rate=22_050))
    assert opened == [F.HEADER_ONLY_PROBE, {}]
    assert audio.source_sample_rate == 22_050 and audio.duration_s == pytest.approx(1.0, abs=0.01)


def test_eight_channel_96k_is_averaged_to_mono() -> None:
    channels = np.stack([tone(1.0, rate=96_000, amplitude=0.5)] * 8, axis=1)
    audio = decode_audio(encode(channels, rate=96_000))
    assert (audio.source_sample_rate, audio.source_channels) == (96_000, 8)
    assert audio.duration_s == pytest.approx(1.0, abs=0.01)
    # Averaged, not summed: the amplitude stays 0.5 (swresample's own downmix would clip).
    assert np.abs(audio.samples).max() == pytest.approx(0.5, abs=0.02)


def test_empty_audio_is_invalid() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode_audio(b"")


def test_too_many_bytes_is_refused_before_decoding() -> None:
    with pytest.raises(TooLarge, match="bytes"):
        decode_audio(b"\0" * 2000, DecodeLimits(max_bytes=1000))


def test_a_twentieth_of_a_second_is_too_short() -> None:
    with pytest.raises(InvalidInput, match=r"0\.050 s"):
        decode_audio(encode(tone(0.05)))


@pytest.mark.parametrize(
    "data",
    [b"this is not audio at all" * 10, b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\xff" * 64],
    ids=["garbage", "broken-wav-header"],
)
def test_corrupt_header_is_invalid(data: bytes) -> None:
    with pytest.raises(InvalidInput, match="could not be"):
        decode_audio(data)


def test_truncated_file_without_samples_is_invalid() -> None:
    with pytest.raises(InvalidInput):
        decode_audio(encode(tone(1.0))[:44])


def test_over_long_audio_is_refused_from_the_header() -> None:
    # Two hours of silence compress to a few kB of FLAC: refused from the header's duration alone.
    two_hours = encode(np.zeros(7200 * 8000, np.int16), rate=8000, fmt="FLAC")
    assert len(two_hours) < 2_000_000
    with pytest.raises(TooLarge, match=r"7200\.0 s long"):
        decode_audio(two_hours)


def test_over_long_stream_without_duration_stops_at_the_limit() -> None:
    # WebM written to a pipe has no duration in its header: decoding must stop at the limit.
    webm = transcode(encode(tone(12.0)), "webm")
    with pytest.raises(TooLarge, match="longer than the limit of 5 s"):
        decode_audio(webm, DecodeLimits(max_duration_s=5.0))
    assert decode_audio(webm, DecodeLimits(max_duration_s=20.0)).duration_s == pytest.approx(12.0, abs=0.05)


@pytest.mark.parametrize(
    "samples",
    [silence(3.0), noise(3.0), tone(3.0), tone(3.0, amplitude=0.0001) + noise(3.0, amplitude=0.00005)],
    ids=["silence", "white-noise", "steady-tone", "faint-hum"],
)
def test_no_speech_in_silence_noise_or_tones(samples: np.ndarray) -> None:
    assert speech_activity(samples).speech_s == 0.0


def test_speech_is_detected() -> None:
    speech = decode_audio(espeak("The quick brown fox jumps over the lazy dog near the river bank.")).samples
    activity = speech_activity(speech)
    assert activity.speech_s > 1.0
    assert activity.modulation_db > F.VAD_MIN_MODULATION_DB
    # Silence around the speech does not count.
    padded = np.concatenate([silence(2.0), speech, silence(2.0)])
    activity = speech_activity(padded)
    assert activity.seconds_between(0.0, 1.9) == 0.0
    assert activity.seconds_between(2.0, 2.0 + len(speech) / 16000) > 1.0
