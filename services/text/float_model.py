"""The GPU image's text models: float32 graphs derived from the committed int8 ones.

    python -m services.text.float_model --out DIR [--source deploy/triton/models] [--print-checksum]

The text models ship int8 (services/text/export.quantize: onnxruntime's dynamic quantization), which is
~4x smaller and faster on CPU. On a GPU that graph is the wrong one: onnxruntime's CUDA provider has no
kernels for DynamicQuantizeLinear and runs those nodes, and the MatMulIntegers around them, on the CPU
with a copy each way, and TensorRT cannot build it at all. The float model they were quantized from is
not committed (90 MB for MiniLM alone, beyond the repository's model budget).

So the GPU image (deploy/docker/triton.Dockerfile) derives a float32 graph from each committed int8 graph
whose models.yaml entry has a `gpu_file`:
- every `DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scales)` chain becomes one float `MatMul`
  by the dequantized weight, (W_q - W_zero_point) * W_scale;
- every `DequantizeLinear` of constant int8 data (the quantized embedding tables behind their `Gather`)
  becomes a float table;
- the nodes and initializers nothing reads any more are dropped.

The weights are exactly the values the int8 model multiplies by, so the GPU serves the same trained model;
only the activations are no longer rounded to 8 bits on the fly, so its outputs are, if anything, closer to
the float model's. TensorRT then runs it in FP16 (the `precision_mode` of the GPU variant's config).
The derivation is pure arithmetic on the committed bytes, so its result is checked against the SHA-256
in models.yaml like an assembled model."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from emomesh.config import ConfigError
from emomesh.paths import MODEL_REPOSITORY, model_file
from emomesh.triton_repo import load_specs
from emomesh.wheel_assets import file_sha256

# Operators of int8 dynamic quantization; none may remain in a derived graph.
QUANTIZED_OPS = frozenset(
    {"DynamicQuantizeLinear", "MatMulInteger", "DequantizeLinear", "QuantizeLinear", "ConvInteger", "QLinearMatMul"}
)


class _Graph:
    """Index of a graph's producers, consumers and initializers, for the rewrite below."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.initializers = {tensor.name: tensor for tensor in graph.initializer}
        self.producer = {output: node for node in graph.node for output in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def constant(self, name: str) -> np.ndarray:
        if name not in self.initializers:
            raise ValueError(f"{name!r} is not a constant; only constant quantized weights can be dequantized")
        return numpy_helper.to_array(self.initializers[name])

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto:
        consumers = self.consumers.get(name, [])
        if len(consumers) != 1 or consumers[0].op_type != op_type:
            found = ", ".join(node.op_type for node in consumers) or "nothing"
            raise ValueError(f"{name!r} should feed one {op_type}; it feeds {found}")
        return consumers[0]


def _dequantize(quantized: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    # Scales and zero points are per tensor or per output channel (the last axis of a MatMul weight):
    # both broadcast against the weight as they are.
    return ((quantized.astype(np.float32) - zero_point.astype(np.float32)) * scale.astype(np.float32)).astype(
        np.float32
    )


def _float_name(quantized_name: str, taken: set[str]) -> str:
    name = quantized_name.removesuffix("_quantized")
    if name == quantized_name or name in taken:
        name = f"{quantized_name}_dequantized"
    return name


def dequantize_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with its int8 dynamic quantization folded back into float32 weights."""
    derived = onnx.ModelProto()
    derived.CopyFrom(model)
    graph = derived.graph
    index = _Graph(graph)
    taken = set(index.initializers) | set(index.producer) | {tensor.name for tensor in graph.input}
    float_weights: dict[tuple[str, str, str], str] = {}
    new_initializers: list[onnx.TensorProto] = []

    def float_weight(quantized: str, scale: str, zero_point: str) -> str:
        key = (quantized, scale, zero_point)
        if key not in float_weights:
            values = _dequantize(index.constant(quantized), index.constant(scale), index.constant(zero_point))
            name = _float_name(quantized, taken)
            taken.add(name)
            new_initializers.append(numpy_helper.from_array(values, name))
            float_weights[key] = name
        return float_weights[key]

    replaced: dict[int, onnx.NodeProto | None] = {}  # id(node) -> its replacement (None: dropped)
    for node in list(graph.node):
        if node.op_type == "MatMulInteger":
            activation_q, weight_q, activation_zp, weight_zp = node.input
            quantizer = index.producer.get(activation_q)
            if quantizer is None or quantizer.op_type != "DynamicQuantizeLinear":
                raise ValueError(f"{node.name}: its input {activation_q!r} does not come from DynamicQuantizeLinear")
            if activation_zp != quantizer.output[2]:
                raise ValueError(f"{node.name}: its zero point is not its quantizer's")
            cast = index.only_consumer(node.output[0], "Cast")
            rescale = index.only_consumer(cast.output[0], "Mul")
            scales = index.producer.get(rescale.input[1] if rescale.input[0] == cast.output[0] else rescale.input[0])
            if scales is None or scales.op_type != "Mul" or quantizer.output[1] not in scales.input:
                raise ValueError(f"{node.name}: its output is not scaled by activation scale x weight scale")
            weight_scale = next(name for name in scales.input if name != quantizer.output[1])
            weight = float_weight(weight_q, weight_scale, weight_zp)
            replaced[id(node)] = onnx.helper.make_node(
                "MatMul", [quantizer.input[0], weight], [rescale.output[0]], name=node.name.removesuffix("_quant")
            )
            replaced[id(cast)] = None
            replaced[id(rescale)] = None
        elif node.op_type == "DequantizeLinear":
            quantized, scale, zero_point = [*node.input, ""][:3]
            if not zero_point:
                raise ValueError(f"{node.name}: a DequantizeLinear without a zero point is not supported")
            source = index.producer.get(quantized)
            if quantized in index.initializers:
                # A constant dequantized in the graph: fold it into a float constant of the same name.
                replaced[id(node)] = None
                values = _dequantize(index.constant(quantized), index.constant(scale), index.constant(zero_point))
                new_initializers.append(numpy_helper.from_array(values, node.output[0]))
            elif source is not None and source.op_type == "Gather" and source.input[0] in index.initializers:
                # Gather from an int8 table, then dequantize: gather from the float table instead. Only a
                # per-tensor scale commutes with the Gather.
                if index.constant(scale).size != 1 or index.constant(zero_point).size != 1:
                    raise ValueError(f"{node.name}: a per-axis scale after a Gather is not supported")
                table = float_weight(source.input[0], scale, zero_point)
                replaced[id(source)] = onnx.helper.make_node(
                    "Gather",
                    [table, source.input[1]],
                    [node.output[0]],
                    name=source.name,
                    axis=next((a.i for a in source.attribute if a.name == "axis"), 0),
                )
                replaced[id(node)] = None
            else:
                raise ValueError(f"{node.name}: dequantizes {quantized!r}, which is neither a constant nor gathered")

    nodes = [replaced.get(id(node), node) for node in graph.node]
    del graph.node[:]
    graph.node.extend(node for node in nodes if node is not None)
    graph.initializer.extend(new_initializers)
    _drop_unused(graph)
    remaining = sorted({node.op_type for node in graph.node} & QUANTIZED_OPS)
    if remaining:
        raise ValueError(f"quantized operators remain after dequantizing: {', '.join(remaining)}")
    onnx.checker.check_model(derived)
    return derived


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Removes nodes none of whose outputs is read, until none is left, then unread initializers."""
    outputs = {tensor.name for tensor in graph.output}
    while True:
        read = outputs | {name for node in graph.node for name in node.input}
        kept = [node for node in graph.node if any(output in read for output in node.output)]
        if len(kept) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(kept)
    read = outputs | {name for node in graph.node for name in node.input}
    kept_initializers = [tensor for tensor in graph.initializer if tensor.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept_initializers)
    produced = {output for node in graph.node for output in node.output}
    kept_info = [info for info in graph.value_info if info.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)


def gpu_models(specs: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The models.yaml entries that have a `gpu_file` (a float graph for the GPU image)."""
    specs = load_specs() if specs is None else specs
    return {name: spec for name, spec in specs.items() if spec.get("gpu_file")}


def derive(name: str, spec: dict[str, Any], source: Path, out: Path, check: bool = True) -> Path:
    """Writes `name`'s float graph to out/<name>/1/model.onnx, complete or not at all, and checks its
    SHA-256 against models.yaml's `gpu_file.sha256` (a mismatch is a ConfigError and leaves nothing)."""
    int8_path = model_file(name, source)
    if not int8_path.exists():
        raise ConfigError(f"{name}: no int8 model at {int8_path} to derive the GPU model from")
    target = model_file(name, out)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    try:
        onnx.save(dequantize_model(onnx.load(str(int8_path))), str(partial))
        if check:
            expected = str(spec["gpu_file"]["sha256"])
            digest = file_sha256(partial)
            if digest != expected:
                raise ConfigError(
                    f"{name}: the derived GPU model's SHA-256 is {digest}, models.yaml expects {expected}; "
                    "was the int8 model changed without `python -m services.text.float_model --print-checksum`?"
                )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def derive_all(out: Path, source: Path = MODEL_REPOSITORY, names: Iterable[str] | None = None) -> list[Path]:
    models = gpu_models()
    chosen = list(models) if names is None else list(names)
    unknown = [name for name in chosen if name not in models]
    if unknown:
        raise ConfigError(f"no gpu_file in models.yaml for {', '.join(unknown)}; models with one: {', '.join(models)}")
    return [derive(name, models[name], source, out) for name in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a model repository: writes <name>/1/model.onnx")
    parser.add_argument("--source", type=Path, default=MODEL_REPOSITORY, help="where the int8 models are")
    parser.add_argument("--models", nargs="*", help="default: every model with a gpu_file in models.yaml")
    parser.add_argument(
        "--print-checksum",
        action="store_true",
        help="derive without checking, and print each SHA-256 for models.yaml (after re-exporting a model)",
    )
    args = parser.parse_args(argv)
    try:
        if args.print_checksum:
            for name, spec in gpu_models().items():
                if args.models and name not in args.models:
                    continue
                path = derive(name, spec, args.source, args.out, check=False)
                print(f"{name}: {path.stat().st_size} bytes, sha256 {file_sha256(path)}")
            return 0
        for path in derive_all(args.out, args.source, args.models or None):
            print(f"{path} ({path.stat().st_size / 1e6:.1f} MB, checksum verified)")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
