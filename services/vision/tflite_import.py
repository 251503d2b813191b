"""Imports a TensorFlow Lite CNN (a flatbuffer: tensors, constant buffers, a list of operators)
without TensorFlow, and runs it as a torch module that exports to ONNX.

The flatbuffer is read with the pure-Python `tflite` package (the schema's generated accessors, over
`flatbuffers`). Only the operators MediaPipe's BlazeFace detectors use are supported; anything else is
refused by name. TFLite tensors are NHWC; the module keeps 4-D activations NCHW (torch's layout) and
turns them back to NHWC only where TFLite's layout shows through (a RESHAPE of a 4-D tensor, which
flattens in NHWC order). Float16 weights (`DEQUANTIZE` of a constant) are widened to float32, which is
exact."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tflite
import torch
import torch.nn.functional as F
from tflite.ActivationFunctionType import ActivationFunctionType
from tflite.BuiltinOperator import BuiltinOperator
from tflite.Padding import Padding
from tflite.TensorType import TensorType
from torch import nn

_OPERATOR_NAMES = {value: name for name, value in vars(BuiltinOperator).items() if not name.startswith("_")}
_NUMPY_TYPES = {
    TensorType.FLOAT32: np.float32,
    TensorType.FLOAT16: np.float16,
    TensorType.INT32: np.int32,
    TensorType.INT64: np.int64,
}
SUPPORTED = {
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "DEQUANTIZE",
    "ADD",
    "RELU",
    "PAD",
    "MAX_POOL_2D",
    "RESHAPE",
    "CONCATENATION",
    "RESIZE_BILINEAR",
}


@dataclass
class TfliteOp:
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TfliteGraph:
    ops: list[TfliteOp]
    # Constant tensors by index (float16 weights already widened to float32).
    constants: dict[int, np.ndarray]
    shapes: dict[int, tuple[int, ...]]
    names: dict[int, str]
    inputs: list[int]
    outputs: list[int]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """NHWC shape of the (single) input, e.g. (1, 128, 128, 3)."""
        return self.shapes[self.inputs[0]]


def _options(op: Any, kind: str) -> dict[str, Any]:
    """The operator's builtin options as a dict of plain values."""
    table = op.BuiltinOptions()
    if table is None:
        return {}
    classes = {
        "CONV_2D": tflite.Conv2DOptions,
        "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
        "ADD": tflite.AddOptions,
        "MAX_POOL_2D": tflite.Pool2DOptions,
        "RESHAPE": tflite.ReshapeOptions,
        "CONCATENATION": tflite.ConcatenationOptions,
        "RESIZE_BILINEAR": tflite.ResizeBilinearOptions,
    }
    if kind not in classes:
        return {}
    options = classes[kind]()
    options.Init(table.Bytes, table.Pos)
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return {
            "padding": options.Padding(),
            "stride": (options.StrideH(), options.StrideW()),
            "dilation": (options.DilationHFactor(), options.DilationWFactor()),
            "activation": options.FusedActivationFunction(),
        }
    if kind == "MAX_POOL_2D":
        return {
            "padding": options.Padding(),
            "stride": (options.StrideH(), options.StrideW()),
            "kernel": (options.FilterHeight(), options.FilterWidth()),
            "activation": options.FusedActivationFunction(),
        }
    if kind == "ADD":
        return {"activation": options.FusedActivationFunction()}
    if kind == "CONCATENATION":
        return {"axis": options.Axis(), "activation": options.FusedActivationFunction()}
    if kind == "RESHAPE":
        return {"new_shape": tuple(int(d) for d in options.NewShapeAsNumpy())} if options.NewShapeLength() else {}
    return {"align_corners": bool(options.AlignCorners()), "half_pixel_centers": bool(options.HalfPixelCenters())}


def load_tflite(path: Path) -> TfliteGraph:
    data = path.read_bytes()
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise ValueError(f"{path.name}: expected one subgraph, found {model.SubgraphsLength()}")
    graph = model.Subgraphs(0)
    constants: dict[int, np.ndarray] = {}
    shapes: dict[int, tuple[int, ...]] = {}
    names: dict[int, str] = {}
    for index in range(graph.TensorsLength()):
        tensor = graph.Tensors(index)
        shapes[index] = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        names[index] = tensor.Name().decode()
        buffer = model.Buffers(tensor.Buffer())
        if buffer is not None and buffer.DataLength() > 0:
            dtype = _NUMPY_TYPES.get(tensor.Type())
            if dtype is None:
                raise ValueError(f"{path.name}: constant {names[index]} has unsupported type {tensor.Type()}")
            raw = buffer.DataAsNumpy().tobytes()
            constants[index] = np.frombuffer(raw, dtype=dtype).reshape(shapes[index])
    ops = []
    for index in range(graph.OperatorsLength()):
        op = graph.Operators(index)
        code = model.OperatorCodes(op.OpcodeIndex())
        # Newer schemas moved builtin codes past 127 to BuiltinCode; older files use the deprecated byte.
        kind = _OPERATOR_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        if kind not in SUPPORTED:
            raise ValueError(f"{path.name}: operator {kind} is not supported by the importer")
        inputs = [int(i) for i in op.InputsAsNumpy()]
        outputs = [int(i) for i in op.OutputsAsNumpy()]
        if kind == "DEQUANTIZE" and inputs[0] in constants:
            # Float16 weights stored compactly: widen once, at import.
            constants[outputs[0]] = constants[inputs[0]].astype(np.float32)
            continue
        ops.append(TfliteOp(kind, inputs, outputs, _options(op, kind)))
    return TfliteGraph(
        ops, constants, shapes, names, [int(i) for i in graph.InputsAsNumpy()], [int(i) for i in graph.OutputsAsNumpy()]
    )


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow 'SAME' padding of one dimension: (before, after), the odd pixel after."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _activate(x: torch.Tensor, activation: int) -> torch.Tensor:
    if activation == ActivationFunctionType.NONE:
        return x
    if activation == ActivationFunctionType.RELU:
        return F.relu(x)
    if activation == ActivationFunctionType.RELU6:
        return torch.clamp(x, 0.0, 6.0)
    raise ValueError(f"fused activation {activation} is not supported by the importer")


class TfliteGraphModule(nn.Module):
    """Runs a TfliteGraph in torch. Input: the graph's input as NCHW float32 (TFLite's NHWC input,
    transposed). Outputs: the graph's outputs in TFLite's own layout."""

    def __init__(self, graph: TfliteGraph) -> None:
        super().__init__()
        self.graph = graph
        self.consts = nn.ParameterDict()
        for op in graph.ops:
            for key, value in self._torch_weights(op).items():
                self.consts[key] = nn.Parameter(torch.from_numpy(np.ascontiguousarray(value)), requires_grad=False)

    def _torch_weights(self, op: TfliteOp) -> dict[str, np.ndarray]:
        constants = self.graph.constants
        out: dict[str, np.ndarray] = {}
        if op.kind == "CONV_2D":
            out[f"w{op.outputs[0]}"] = constants[op.inputs[1]].transpose(0, 3, 1, 2)  # OHWI -> OIHW
        elif op.kind == "DEPTHWISE_CONV_2D":
            out[f"w{op.outputs[0]}"] = constants[op.inputs[1]].transpose(3, 0, 1, 2)  # 1HW(C*M) -> (C*M)1HW
        elif op.kind == "ADD":
            # A constant operand of an ADD (none in BlazeFace, but cheap to allow): NHWC -> NCHW.
            for position, index in enumerate(op.inputs):
                if index in constants:
                    value = constants[index].astype(np.float32)
                    out[f"add{op.outputs[0]}_{position}"] = value.transpose(0, 3, 1, 2) if value.ndim == 4 else value
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op.inputs) > 2 and op.inputs[2] >= 0:
            out[f"b{op.outputs[0]}"] = constants[op.inputs[2]].astype(np.float32)
        return {key: value.astype(np.float32) for key, value in out.items()}

    def _run(self, op: TfliteOp, values: dict[int, torch.Tensor]) -> torch.Tensor:
        x = values[op.inputs[0]]
        key = op.outputs[0]
        options = op.options
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            weight = self.consts[f"w{key}"]
            bias = self.consts.get(f"b{key}")
            padding: tuple[int, int] = (0, 0)
            if options["padding"] == Padding.SAME:
                kernel = (int(weight.shape[2]), int(weight.shape[3]))
                top, bottom = same_padding(int(x.shape[2]), kernel[0], options["stride"][0], options["dilation"][0])
                left, right = same_padding(int(x.shape[3]), kernel[1], options["stride"][1], options["dilation"][1])
                if (top, left) == (bottom, right):
                    # Symmetric (every stride-1 convolution): the convolution pads, no separate Pad node.
                    padding = (top, left)
                else:
                    x = F.pad(x, (left, right, top, bottom))
            groups = int(x.shape[1]) if op.kind == "DEPTHWISE_CONV_2D" else 1
            x = F.conv2d(
                x, weight, bias, stride=options["stride"], padding=padding, dilation=options["dilation"], groups=groups
            )
            return _activate(x, options["activation"])
        if op.kind == "ADD":
            a, b = (
                self.consts[f"add{key}_{position}"] if f"add{key}_{position}" in self.consts else values[index]
                for position, index in enumerate(op.inputs)
            )
            return _activate(a + b, options["activation"])
        if op.kind == "RELU":
            return F.relu(x)
        if op.kind == "MAX_POOL_2D":
            if options["padding"] == Padding.SAME:
                # TFLite pads max pooling with -inf, so padding never wins.
                top, bottom = same_padding(int(x.shape[2]), options["kernel"][0], options["stride"][0])
                left, right = same_padding(int(x.shape[3]), options["kernel"][1], options["stride"][1])
                if top or bottom or left or right:
                    x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
            return _activate(F.max_pool2d(x, options["kernel"], options["stride"]), options["activation"])
        if op.kind == "PAD":
            pads = self.graph.constants[op.inputs[1]]  # NHWC: [[n0, n1], [h0, h1], [w0, w1], [c0, c1]]
            if pads[0].any():
                raise ValueError("padding the batch dimension is not supported")
            # F.pad lists the last dimension first: W, then H, then C of the NCHW tensor.
            return F.pad(x, tuple(int(p) for axis in (2, 1, 3) for p in pads[axis]))
        if op.kind == "RESHAPE":
            shape = options.get("new_shape") or tuple(int(d) for d in self.graph.constants[op.inputs[1]])
            if x.dim() == 4:
                x = x.permute(0, 2, 3, 1)  # TFLite flattens in NHWC order
            # The batch dimension comes from the input, so the exported graph takes any batch size.
            return x.reshape(x.shape[0], *shape[1:])
        if op.kind == "CONCATENATION":
            parts = [values[index] for index in op.inputs]
            axis = options["axis"] % parts[0].dim()
            if parts[0].dim() == 4:
                axis = (0, 2, 3, 1)[axis]  # NHWC axis -> NCHW axis
            return _activate(torch.cat(parts, dim=axis), options["activation"])
        if op.kind == "RESIZE_BILINEAR":
            height, width = (int(d) for d in self.graph.constants[op.inputs[1]])
            if options["align_corners"] or not options["half_pixel_centers"]:
                raise ValueError("only half-pixel-centre bilinear resizing is supported")
            return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        raise ValueError(f"operator {op.kind} is not supported by the importer")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values = {self.graph.inputs[0]: x}
        for op in self.graph.ops:
            values[op.outputs[0]] = self._run(op, values)
        outputs = []
        for index in self.graph.outputs:
            value = values[index]
            outputs.append(value.permute(0, 2, 3, 1) if value.dim() == 4 else value)
        return tuple(outputs)
