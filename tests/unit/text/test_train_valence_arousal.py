"""The valence/arousal read-out: found where the emotion head reads, appended as a second output,
and the ridge + spread choice on synthetic data (the EmoBank run is in docs/text.md)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from emomesh.evaluation.metrics import concordance_correlation
from services.text.config import DEFAULT_MODEL_FILE
from services.text.train_valence_arousal import OUTPUT, choose, embedding_name, fit, with_readout


def tiny_classifier() -> onnx.ModelProto:
    """embedding [N, 4] -> head MatMul -> Softmax, as the text models end."""
    head = numpy_helper.from_array(np.eye(4, 7, dtype=np.float32), "head.weight")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["embedding", "head.weight"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "tiny",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 7])],
        initializer=[head],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_readout_is_a_second_output_and_leaves_the_emotions_alone() -> None:
    model = tiny_classifier()
    assert embedding_name(model) == "embedding"
    weight = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
    extended = with_readout(model, weight, np.array([0.1, -0.1]))
    x = np.array([[0.2, 0.1, 0.0, 0.0], [5.0, 5.0, 1.0, 0.0]], np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(["probabilities"], {"embedding": x})[0]
    probs, dims = ort.InferenceSession(extended.SerializeToString()).run(["probabilities", OUTPUT], {"embedding": x})
    assert np.array_equal(probs, before)
    assert dims == pytest.approx(np.array([[0.3, 0.1], [1.0, 1.0]]))  # the second row is clipped to 1
    with pytest.raises(ValueError, match="already has an output"):
        with_readout(extended, weight, np.zeros(2))


def test_the_served_english_model_reads_out_its_mean_pooled_embedding() -> None:
    model = onnx.load(str(DEFAULT_MODEL_FILE), load_external_data=False)
    assert embedding_name(model) == "/Div_output_0"
    assert OUTPUT in [o.name for o in model.graph.output]


def test_choice_and_fit_recover_a_linear_target() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8))
    y = np.clip(np.stack([x[:, 0] * 0.3, x[:, 1] * 0.2 - x[:, 2] * 0.1], axis=1) + rng.normal(0, 0.02, (600, 2)), -1, 1)
    chosen = choose(x, y)
    assert chosen["valence"]["cv_ccc"] > 0.95 and chosen["arousal"]["cv_ccc"] > 0.9
    weight, bias = fit(x, y, chosen)
    assert concordance_correlation(y[:, 0], x @ weight[:, 0] + bias[0]) > 0.95
