"""The ACRNN definition and the committed ONNX artifact that Triton serves."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from emomesh.paths import MODEL_REPOSITORY
from services.audio.model_def import ACRNN, ACRNNConfig, ACRNNWithSoftmax

ONNX = MODEL_REPOSITORY / "audio_acrnn" / "1" / "model.onnx"


@pytest.mark.parametrize("width", [0.125, 0.25])
def test_acrnn_maps_windows_to_seven_logits(width: float) -> None:
    torch.manual_seed(0)
    model = ACRNN(ACRNNConfig(width=width)).eval()
    assert model.steps == 16, "time is pooled 130 -> 65 -> 32 -> 16 and kept there"
    with torch.no_grad():
        probs = ACRNNWithSoftmax(model)(torch.randn(3, 1, 128, 130) * 20 - 50)
    assert probs.shape == (3, 7)
    assert torch.allclose(probs.sum(dim=1), torch.ones(3), atol=1e-5)


def test_width_scales_the_model() -> None:
    small = sum(p.numel() for p in ACRNN(ACRNNConfig(width=0.125)).parameters())
    full = sum(p.numel() for p in ACRNN(ACRNNConfig(width=1.0)).parameters())
    assert small < 200_000 < 6_000_000 < full


def test_committed_onnx_contract_and_gain_invariance() -> None:
    assert ONNX.stat().st_size < 5 * 1024 * 1024, "committed models must stay small"
    session = ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape[1:], out.name, out.shape[1:]) == ("log_mel", [1, 128, 130], "probabilities", [7])
    x = (np.random.default_rng(0).normal(-45, 15, (4, 1, 128, 130))).astype(np.float32)
    probs = session.run(["probabilities"], {"log_mel": x})[0]
    assert probs.shape == (4, 7)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Each window is standardised inside the model: a louder recording (+12 dB) scores the same.
    louder = session.run(["probabilities"], {"log_mel": x + 12.0})[0]
    assert np.allclose(probs, louder, atol=1e-4)
