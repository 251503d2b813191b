"""The float32 text models the GPU image derives (services/text/float_model.py) load in the real
tritonserver under their committed names, inputs and outputs, and answer as the int8 models do. The
bundled tritonserver runs them through the Python backend on CPU; the GPU image's onnxruntime backend
reads the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http

from emomesh.paths import MODEL_REPOSITORY
from emomesh.procs import free_port
from emomesh.triton_repo import RenderOptions, render_repository
from emomesh.tritonserver import TritonPorts, TritonServer
from services.text.config import DEFAULT_TOKENIZER
from services.text.float_model import derive_all, gpu_models
from services.text.tokenize import TextTokenizer

pytestmark = pytest.mark.integration

TEXTS = [
    "I can't believe you lied to me.",
    "This is the best news I've had all year!",
    "I'm really worried about tomorrow.",
    "The train leaves at six.",
]


def infer(client: triton_http.InferenceServerClient, model: str, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    inputs = []
    for name, values in (("input_ids", ids), ("attention_mask", mask)):
        inputs.append(triton_http.InferInput(name, list(values.shape), "INT64"))
        inputs[-1].set_data_from_numpy(values)
    result = client.infer(model, inputs)
    probabilities = result.as_numpy("probabilities")
    assert probabilities is not None
    return probabilities


def test_derived_text_models_are_served_by_triton_and_answer_as_the_int8_ones(tmp_path: Path) -> None:
    derived = tmp_path / "derived"
    derive_all(derived)
    names = list(gpu_models())
    float_repository, int8_repository = tmp_path / "float", tmp_path / "int8"
    assert render_repository(float_repository, RenderOptions("local"), source=derived, only=names) == names
    assert render_repository(int8_repository, RenderOptions("local"), source=MODEL_REPOSITORY, only=names) == names

    batch = TextTokenizer(DEFAULT_TOKENIZER, 64).encode(TEXTS)
    answers = {}
    for label, repository in (("float", float_repository), ("int8", int8_repository)):
        ports = TritonPorts(free_port(), free_port(), free_port())
        server = TritonServer(repository, tmp_path / f"{label}-state", ports, tmp_path / f"{label}.log")
        server.start()
        try:
            server.wait_ready(180)
            client = triton_http.InferenceServerClient(f"127.0.0.1:{ports.http}")
            assert all(client.is_model_ready(name) for name in names)
            answers[label] = infer(client, "text_minilm_emotion", batch.input_ids, batch.attention_mask)
        finally:
            server.stop()

    assert answers["float"].shape == (len(TEXTS), 7)
    np.testing.assert_allclose(answers["float"].sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(answers["float"] - answers["int8"]).max() < 0.1
    np.testing.assert_array_equal(answers["float"].argmax(axis=1), answers["int8"].argmax(axis=1))
