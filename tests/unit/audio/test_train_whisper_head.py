"""The speech-emotion head's training tool (services/audio/train_whisper_head.py), on small random
encoder states: speed perturbation resamples as a faster or slower playback, perturbed windows train
but are never scored, the served ensemble averages its heads' probabilities, and a short run learns
labels that the states carry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from emomesh.labels import NUM_LABELS
from services.audio.dataset import Clip
from services.audio.features import SAMPLE_RATE
from services.audio.train_whisper_head import (
    EmotionHead,
    EncoderStates,
    HeadEnsemble,
    clip_probabilities,
    export_head,
    speed_perturb,
    train_ensemble,
)

STATES, FRAMES, WIDTH = 2, 6, 8


def tone(hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return np.sin(2 * np.pi * hz * t).astype(np.float32)


def peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)[spectrum.argmax()])


def test_speed_perturbation_plays_faster_or_slower() -> None:
    samples = tone(200.0)
    faster, slower = speed_perturb(samples, 1.1), speed_perturb(samples, 0.9)
    assert abs(len(faster) - len(samples) / 1.1) <= 1
    assert abs(len(slower) - len(samples) / 0.9) <= 1
    assert abs(peak_hz(faster) - 220.0) < 2.0
    assert abs(peak_hz(slower) - 180.0) < 2.0
    assert faster.dtype == np.float32
    assert speed_perturb(samples, 1.0) is samples


def states_for(labels: list[int], windows_per_clip: int, perturbed_copies: int, seed: int = 0) -> EncoderStates:
    """Clips whose states carry their label (a bump in one feature per label) plus noise; each clip
    has windows_per_clip recorded windows, and as many again per perturbed copy."""
    rng = np.random.default_rng(seed)
    clips = [Clip(Path(f"clip{i}.wav"), label, f"speaker{i % 4}", "test") for i, label in enumerate(labels)]
    rows, window_clip, recorded = [], [], []
    for copy in range(1 + perturbed_copies):
        for index, label in enumerate(labels):
            for _ in range(windows_per_clip):
                state = rng.normal(0, 0.3, (STATES, FRAMES, WIDTH))
                state[:, :, label] += 2.0
                rows.append(state)
                window_clip.append(index)
                recorded.append(copy == 0)
    return EncoderStates(clips, np.asarray(rows, np.float16), np.asarray(window_clip), np.asarray(recorded, dtype=bool))


def test_clip_probabilities_read_only_the_recorded_windows() -> None:
    data = states_for([0, 1, 2], windows_per_clip=2, perturbed_copies=2)
    torch.manual_seed(0)
    head = HeadEnsemble([EmotionHead(STATES, WIDTH, hidden=4)]).eval()
    everything = np.ones(3, dtype=bool)
    before = clip_probabilities(head, data, everything)
    scrambled = data.states.copy()
    scrambled[~data.recorded] = 9.0  # perturbed windows changed: scores must not move
    after = clip_probabilities(head, EncoderStates(data.clips, scrambled, data.window_clip, data.recorded), everything)
    np.testing.assert_allclose(before, after, atol=1e-6)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-5)
    # Only the masked clips get rows.
    partial = clip_probabilities(head, data, np.array([True, False, True]))
    assert partial[1].sum() == 0 and abs(partial[0].sum() - 1.0) < 1e-5


def test_ensemble_averages_its_heads_probabilities() -> None:
    torch.manual_seed(1)
    first, second = EmotionHead(STATES, WIDTH, hidden=4).eval(), EmotionHead(STATES, WIDTH, hidden=4).eval()
    x = torch.randn(3, STATES, FRAMES, WIDTH)
    with torch.no_grad():
        expected = (torch.softmax(first(x), -1) + torch.softmax(second(x), -1)) / 2
        np.testing.assert_allclose(HeadEnsemble([first, second])(x).numpy(), expected.numpy(), atol=1e-6)
        np.testing.assert_allclose(HeadEnsemble([first])(x).numpy(), torch.softmax(first(x), -1).numpy(), atol=1e-6)


def test_a_short_run_learns_and_exports_the_served_ensemble(tmp_path: Path) -> None:
    labels = [i % NUM_LABELS for i in range(42)]
    data = states_for(labels, windows_per_clip=1, perturbed_copies=1, seed=3)
    val = np.zeros(len(labels), dtype=bool)
    val[-14:] = True
    ensemble, reports = train_ensemble(data, ~val, val, seed=5, size=2)
    assert len(ensemble.heads) == 2 and len(reports) == 2
    assert all(1 <= int(report["best_epoch"]) <= 40 for report in reports)  # type: ignore[call-overload]
    predicted = clip_probabilities(ensemble, data, val)[val].argmax(axis=1)
    assert (predicted == np.asarray(labels)[val]).mean() >= 0.9

    out = tmp_path / "head.onnx"
    export_head(ensemble, out, np.asarray(data.states[:2]))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["hidden_states"]
    served = session.run(["probabilities"], {"hidden_states": data.states[:5].astype(np.float32)})[0]
    with torch.no_grad():
        expected = ensemble(torch.from_numpy(data.states[:5].astype(np.float32))).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
