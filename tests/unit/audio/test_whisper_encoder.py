"""The Whisper encoder rebuilt as ONNX from CTranslate2 weights, against faster-whisper's own encoder,
and the setup-time assembly of the served emotion model (encoder + committed head)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from emomesh.config import ConfigError
from emomesh.wheel_assets import file_sha256
from services.audio.asr_models import WHISPER_BASE, WHISPER_TINY_EN
from services.audio.features import WHISPER_FRAMES, WINDOW_SAMPLES, analysis_windows, whisper_log_mel
from services.audio.whisper_encoder import build_encoder, encoder_layers, encoder_session, read_ctranslate2
from services.audio.whisper_model import AssemblySpec, assemble, build, whisper_model_bin
from tests.audio_media import decode_wav, espeak


@pytest.fixture(scope="module")
def speech_30s() -> np.ndarray:
    """espeak speech, resampled to 16 kHz and padded to Whisper's 30 s, as Whisper features [80, 3000]."""
    spoken, rate = decode_wav(espeak("I can't believe you did that, it is the best news I have heard all year."))
    samples = np.interp(np.arange(0, len(spoken), rate / 16_000), np.arange(len(spoken)), spoken)
    padded = np.pad(samples.astype(np.float32), (0, 30 * 16_000 - len(samples)))
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=80)(padded, padding=0)[:, :3000]


@pytest.mark.parametrize("name", [WHISPER_TINY_EN, WHISPER_BASE])
def test_onnx_encoder_matches_faster_whispers_encoder(name: str, speech_30s: np.ndarray) -> None:
    import ctranslate2

    path = whisper_model_bin(name)
    variables = read_ctranslate2(path)
    ours = encoder_session(build_encoder(variables, 3000), threads=2)(speech_30s[None])
    assert ours.shape == (1, encoder_layers(variables) + 1, 1500, variables["conv1/weight"].shape[0])
    whisper = ctranslate2.models.Whisper(str(path.parent), device="cpu", compute_type="float32", intra_threads=2)
    theirs = np.array(whisper.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(speech_30s[None]))))
    # The last state is the encoder's output; float32 both ways, different kernels and summation order.
    assert np.abs(ours[0, -1] - theirs[0]).max() < 5e-3
    assert np.abs(ours[0, -1] - theirs[0]).mean() < 1e-4


def test_an_analysis_window_gives_whisper_features_of_the_encoders_input_size() -> None:
    rng = np.random.default_rng(0)
    samples = rng.normal(0, 0.1, WINDOW_SAMPLES + 8000).astype(np.float32)
    windows = analysis_windows(samples, "whisper_80x310")
    assert windows.log_mel.shape == (2, 80, WHISPER_FRAMES) == (2, 80, 310)
    assert np.array_equal(windows.log_mel[0], whisper_log_mel(samples[:WINDOW_SAMPLES]))
    assert np.array_equal(windows.log_mel[1], whisper_log_mel(samples[-WINDOW_SAMPLES:]))
    with pytest.raises(ValueError, match="unknown audio features"):
        analysis_windows(np.zeros(WINDOW_SAMPLES, np.float32), "mfcc")


def test_a_file_that_is_not_a_whisper_ctranslate2_model_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.bin"
    old.write_bytes(struct.pack("<I", 3))
    with pytest.raises(ValueError, match="version 3"):
        read_ctranslate2(old)
    empty = tmp_path / "empty.bin"
    name = b"TransformerSpec\0"
    empty.write_bytes(struct.pack("<I", 6) + struct.pack("<H", len(name)) + name + struct.pack("<II", 1, 0))
    with pytest.raises(ValueError, match="no variables named encoder/"):
        read_ctranslate2(empty)


def test_the_served_model_is_assembled_with_the_committed_checksum(tmp_path: Path) -> None:
    spec = AssemblySpec.load()
    out = tmp_path / "audio_whisper_emotion" / "1" / "model.onnx"
    assert assemble(out, spec, whisper_model_bin(WHISPER_BASE)) == out
    assert out.stat().st_size == spec.size and file_sha256(out) == spec.sha256
    # A second run keeps the file; a damaged one is rebuilt.
    mtime = out.stat().st_mtime_ns
    assemble(out, spec, whisper_model_bin(WHISPER_BASE))
    assert out.stat().st_mtime_ns == mtime
    out.write_bytes(b"broken")
    assemble(out, spec, whisper_model_bin(WHISPER_BASE))
    assert file_sha256(out) == spec.sha256


def test_a_different_checksum_stops_the_assembly_and_names_both(tmp_path: Path) -> None:
    spec = AssemblySpec.load()
    wrong = AssemblySpec(spec.head, "0" * 64, spec.size)
    out = tmp_path / "model.onnx"
    with pytest.raises(ConfigError, match=r"expected .* with SHA-256 0000"):
        assemble(out, wrong, whisper_model_bin(WHISPER_BASE))
    assert not out.exists()


def test_the_assembled_model_gives_probabilities_for_speech() -> None:
    import onnxruntime as ort

    spec = AssemblySpec.load()
    session = ort.InferenceSession(
        build(spec.head, whisper_model_bin(WHISPER_BASE)), providers=["CPUExecutionProvider"]
    )
    spoken, rate = decode_wav(espeak("Get out of my house right now!"))
    samples = np.interp(np.arange(0, len(spoken), rate / 16_000), np.arange(len(spoken)), spoken).astype(np.float32)
    features = analysis_windows(samples, "whisper_80x310").log_mel
    probs = session.run(["probabilities"], {"features": features})[0]
    assert probs.shape == (len(features), 7)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
