"""Deriving the GPU image's float32 text models from the committed int8 ones (services/text/float_model.py):
on a small graph quantized here exactly as services.text.export quantizes, then on the two committed models,
whose derived files must match the SHA-256 in models.yaml and answer as their int8 files do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from emomesh.config import ConfigError
from emomesh.paths import MODEL_REPOSITORY, model_file
from emomesh.wheel_assets import file_sha256
from services.text import export, float_model
from services.text.config import DEFAULT_MULTILINGUAL_TOKENIZER, DEFAULT_TOKENIZER
from services.text.float_model import QUANTIZED_OPS, dequantize_model, derive, gpu_models
from services.text.tokenize import TextTokenizer

VOCAB, WIDTH, HIDDEN, CLASSES = 50, 16, 32, 7


def float_graph(seed: int = 0) -> onnx.ModelProto:
    """ids -> embedding Gather + position -> MatMul + bias -> Relu -> MatMul -> logits: the shapes of a text
    encoder's quantized parts (the embedding table, added to before any MatMul, and the dense layers)."""
    rng = np.random.default_rng(seed)
    weights = {
        "embedding": rng.normal(0, 1, (VOCAB, WIDTH)),
        "position": rng.normal(0, 0.1, (WIDTH,)),
        "dense": rng.normal(0, 0.3, (WIDTH, HIDDEN)),
        "bias": rng.normal(0, 0.1, (HIDDEN,)),
        "head": rng.normal(0, 0.3, (HIDDEN, CLASSES)),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["embedding", "ids"], ["embedded"]),
            helper.make_node("Add", ["embedded", "position"], ["positioned"]),
            helper.make_node("MatMul", ["positioned", "dense"], ["projected"]),
            helper.make_node("Add", ["projected", "bias"], ["biased"]),
            helper.make_node("Relu", ["biased"], ["hidden"]),
            helper.make_node("MatMul", ["hidden", "head"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", CLASSES])],
        [numpy_helper.from_array(value.astype(np.float32), name) for name, value in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def quantized(model: onnx.ModelProto, tmp_path: Path, per_channel: bool = False) -> onnx.ModelProto:
    """Quantized as services.text.export quantizes the shipped models, or per output channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, out = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(model, str(source))
    if per_channel:
        quantize_dynamic(
            str(source),
            str(out),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gather"],
            per_channel=True,
        )
    else:
        export.quantize(source, out)
    return onnx.load(str(out))


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def op_types(model: onnx.ModelProto) -> set[str]:
    return {node.op_type for node in model.graph.node}


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_dequantized_graph_has_only_float_ops_and_the_int8_weights(tmp_path: Path, per_channel: bool) -> None:
    original = float_graph()
    int8 = quantized(original, tmp_path, per_channel)
    assert {"MatMulInteger", "DynamicQuantizeLinear", "DequantizeLinear"} <= op_types(int8)

    derived = dequantize_model(int8)

    assert not op_types(derived) & QUANTIZED_OPS
    assert [node.op_type for node in derived.graph.node] == ["Gather", "Add", "MatMul", "Add", "Relu", "MatMul"]
    # Each float weight holds exactly the values the int8 graph multiplies by.
    int8_init = {t.name: numpy_helper.to_array(t) for t in int8.graph.initializer}
    derived_init = {t.name: numpy_helper.to_array(t) for t in derived.graph.initializer}
    for name in ("embedding", "dense", "head"):
        expected = (int8_init[f"{name}_quantized"].astype(np.float32) - int8_init[f"{name}_zero_point"]) * int8_init[
            f"{name}_scale"
        ]
        assert derived_init[name].dtype == np.float32
        np.testing.assert_array_equal(derived_init[name], expected.astype(np.float32))
    # The input model is left as it was.
    assert {"MatMulInteger"} <= op_types(int8)


def test_derived_outputs_are_the_float_models_up_to_weight_rounding_only(tmp_path: Path) -> None:
    original = float_graph(seed=1)
    int8 = quantized(original, tmp_path)
    derived = dequantize_model(int8)
    ids = np.random.default_rng(2).integers(0, VOCAB, (64, 12)).astype(np.int64)

    (reference,) = run(original, {"ids": ids})
    (from_int8,) = run(int8, {"ids": ids})
    (from_derived,) = run(derived, {"ids": ids})

    # The weights are int8-rounded, so not the float model's; but the activations are no longer rounded to
    # 8 bits on the fly, so the derived graph is closer to the float model than the int8 graph is.
    derived_error = np.abs(from_derived - reference).mean()
    int8_error = np.abs(from_int8 - reference).mean()
    assert 0 < derived_error < int8_error
    assert (from_derived.argmax(-1) == reference.argmax(-1)).mean() > 0.95


def test_unexpected_quantization_patterns_are_refused_by_name() -> None:
    # A DequantizeLinear of a computed (non-constant, non-gathered) tensor cannot be folded into a weight.
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["as_int8"], to=TensorProto.INT8),
            helper.make_node("DequantizeLinear", ["as_int8", "scale", "zero"], ["y"], name="dq_of_activation"),
        ],
        "odd",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [
            numpy_helper.from_array(np.array(0.5, np.float32), "scale"),
            numpy_helper.from_array(np.array(0, np.int8), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match="dq_of_activation: dequantizes 'as_int8', which is neither a constant"):
        dequantize_model(model)


def sentences() -> list[str]:
    return [
        "I can't believe you did this to me again.",
        "Thank you so much, this made my whole week!",
        "I'm scared of what the test results will say.",
        "The meeting is moved to Thursday at ten.",
        "Ugh, that smell is revolting.",
        "Wait, you're moving to Japan?",
        "I miss her every single day.",
        "Das ist wirklich eine schöne Überraschung.",
        "我今天非常开心",
        "ok",
    ]


@pytest.mark.parametrize(
    ("name", "tokenizer_json", "max_tokens"),
    [("text_minilm_emotion", DEFAULT_TOKENIZER, 64), ("text_e5_emotion", DEFAULT_MULTILINGUAL_TOKENIZER, 128)],
)
def test_committed_text_models_derive_to_their_checksums_and_answer_alike(
    tmp_path: Path, name: str, tokenizer_json: Path, max_tokens: int
) -> None:
    path = derive(name, gpu_models()[name], MODEL_REPOSITORY, tmp_path)

    assert path == model_file(name, tmp_path)
    assert file_sha256(path) == gpu_models()[name]["gpu_file"]["sha256"]
    assert list(tmp_path.rglob(".*.partial")) == []
    derived = onnx.load(str(path))
    assert not op_types(derived) & QUANTIZED_OPS
    assert all(t.data_type != TensorProto.INT8 for t in derived.graph.initializer)

    batch = TextTokenizer(tokenizer_json, max_tokens).encode(sentences())
    feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    int8_outputs = run(onnx.load(str(model_file(name))), feeds)
    derived_outputs = run(derived, feeds)
    assert len(int8_outputs) == len(derived_outputs)
    for int8_output, derived_output in zip(int8_outputs, derived_outputs, strict=True):
        assert np.abs(int8_output - derived_output).max() < 0.1
    # The same top emotion wherever the int8 model is not torn between two (its top two 0.1 apart or more).
    int8_probabilities, derived_probabilities = int8_outputs[0], derived_outputs[0]
    top_two = np.sort(int8_probabilities, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] >= 0.1
    assert clear.sum() >= 7
    np.testing.assert_array_equal(int8_probabilities[clear].argmax(1), derived_probabilities[clear].argmax(1))


def test_a_checksum_mismatch_leaves_nothing_and_names_the_command(tmp_path: Path) -> None:
    spec = {"gpu_file": {"sha256": "0" * 64}}
    with pytest.raises(ConfigError, match=r"was the int8 model changed without .*--print-checksum"):
        derive("text_minilm_emotion", spec, MODEL_REPOSITORY, tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_cli_refuses_a_model_without_a_gpu_file_and_a_missing_int8_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert float_model.main(["--out", str(tmp_path), "--models", "audio_acrnn"]) == 1
    assert "no gpu_file in models.yaml for audio_acrnn; models with one: text_minilm_emotion, text_e5_emotion" in (
        capsys.readouterr().err
    )
    assert float_model.main(["--out", str(tmp_path / "out"), "--source", str(tmp_path / "empty")]) == 1
    assert "text_minilm_emotion: no int8 model at" in capsys.readouterr().err


def test_every_model_with_a_gpu_file_is_int8_on_the_cpu() -> None:
    """The reason for a gpu_file: the committed file is quantized (and a float file needs none)."""
    models = gpu_models()
    assert set(models) == {"text_minilm_emotion", "text_e5_emotion"}
    for name in models:
        assert "MatMulInteger" in op_types(onnx.load(str(model_file(name)), load_external_data=False))
