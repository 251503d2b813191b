"""Imports a Keras HDF5 CNN (functional `model_config` + weights) without TensorFlow.

Two independent interpreters of the same graph:
- `KerasGraphModule`, a torch module, which is exported to ONNX;
- `numpy_forward`, a plain NumPy implementation of Keras' NHWC semantics, used once to compute the
  parity reference. Keras' "same" padding is asymmetric (extra pixel at the bottom/right); the two
  implementations agreeing is what shows the torch rebuild got it right."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED = {
    "InputLayer",
    "Conv2D",
    "SeparableConv2D",
    "BatchNormalization",
    "Activation",
    "MaxPooling2D",
    "Add",
    "GlobalAveragePooling2D",
}


@dataclass
class KerasLayer:
    name: str
    kind: str
    config: dict[str, Any]
    inbound: list[str]
    weights: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class KerasGraph:
    layers: list[KerasLayer]
    input_name: str
    output_name: str
    input_shape: tuple[int, int, int]  # H, W, C


def load_keras_h5(path: Path) -> KerasGraph:
    with h5py.File(path, "r") as h5:
        config = json.loads(h5.attrs["model_config"])
        weight_root = h5["model_weights"]
        layers = []
        for raw in config["config"]["layers"]:
            kind = raw["class_name"]
            if kind not in SUPPORTED:
                raise ValueError(f"layer type {kind} is not supported by the importer")
            name = raw["config"]["name"]
            inbound = [node[0] for node in raw["inbound_nodes"][0]] if raw.get("inbound_nodes") else []
            weights: dict[str, np.ndarray] = {}
            if name in weight_root:

                def collect(key: str, obj: Any, weights: dict[str, np.ndarray] = weights) -> None:
                    if isinstance(obj, h5py.Dataset):
                        weights[key.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(obj, dtype=np.float32)

                weight_root[name].visititems(collect)
            layers.append(KerasLayer(name, kind, raw["config"], inbound, weights))
        input_cfg = config["config"]["layers"][0]["config"]
        h, w, c = input_cfg["batch_input_shape"][1:]
        return KerasGraph(layers, layers[0].name, config["config"]["output_layers"][0][0], (h, w, c))


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras/TensorFlow 'same' padding: (before, after), with the odd pixel after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


# ---------------------------------------------------------------------------------------------
# torch rebuild


class KerasGraphModule(nn.Module):
    """Runs the Keras graph in torch (NCHW). Input: gray pixels 0..255, shape [N, C, H, W]."""

    def __init__(self, graph: KerasGraph, input_scale: float = 1 / 127.5, input_shift: float = -1.0) -> None:
        super().__init__()
        self.graph = graph
        self.input_scale, self.input_shift = input_scale, input_shift
        self.params = nn.ParameterDict()
        for layer in graph.layers:
            for key, value in self._torch_weights(layer).items():
                self.params[f"{layer.name}__{key}"] = nn.Parameter(torch.from_numpy(value), requires_grad=False)

    @staticmethod
    def _torch_weights(layer: KerasLayer) -> dict[str, np.ndarray]:
        w = layer.weights
        if layer.kind == "Conv2D":
            out = {"kernel": w["kernel"].transpose(3, 2, 0, 1).copy()}  # HWIO -> OIHW
            if "bias" in w:
                out["bias"] = w["bias"]
            return out
        if layer.kind == "SeparableConv2D":
            depthwise = w["depthwise_kernel"]  # H, W, C, M -> C*M, 1, H, W
            h, k, c, m = depthwise.shape
            return {
                "depthwise": depthwise.transpose(2, 3, 0, 1).reshape(c * m, 1, h, k).copy(),
                "pointwise": w["pointwise_kernel"].transpose(3, 2, 0, 1).copy(),
            }
        if layer.kind == "BatchNormalization":
            return {k: w[k] for k in ("gamma", "beta", "moving_mean", "moving_variance")}
        return {}

    def _p(self, layer: KerasLayer, key: str) -> torch.Tensor:
        return self.params[f"{layer.name}__{key}"]

    def _pad_same(self, x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
        top, bottom = same_padding(int(x.shape[2]), kernel, stride)
        left, right = same_padding(int(x.shape[3]), kernel, stride)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), value=value)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {}
        for layer in self.graph.layers:
            cfg = layer.config
            inputs = [values[name] for name in layer.inbound]
            if layer.kind == "InputLayer":
                y = x * self.input_scale + self.input_shift
            elif layer.kind in ("Conv2D", "SeparableConv2D"):
                (y,) = inputs
                kernel, stride = cfg["kernel_size"][0], cfg["strides"][0]
                if cfg["padding"] == "same":
                    y = self._pad_same(y, kernel, stride)
                if layer.kind == "Conv2D":
                    bias = self._p(layer, "bias") if cfg.get("use_bias") else None
                    y = F.conv2d(y, self._p(layer, "kernel"), bias, stride=stride)
                else:
                    y = F.conv2d(y, self._p(layer, "depthwise"), stride=stride, groups=int(y.shape[1]))
                    y = F.conv2d(y, self._p(layer, "pointwise"))
                y = self._activation(y, cfg.get("activation", "linear"))
            elif layer.kind == "BatchNormalization":
                (y,) = inputs
                y = F.batch_norm(
                    y,
                    self._p(layer, "moving_mean"),
                    self._p(layer, "moving_variance"),
                    self._p(layer, "gamma"),
                    self._p(layer, "beta"),
                    training=False,
                    eps=cfg["epsilon"],
                )
            elif layer.kind == "Activation":
                y = self._activation(inputs[0], cfg["activation"])
            elif layer.kind == "MaxPooling2D":
                (y,) = inputs
                pool, stride = cfg["pool_size"][0], cfg["strides"][0]
                if cfg["padding"] == "same":
                    y = self._pad_same(y, pool, stride, value=float("-inf"))
                y = F.max_pool2d(y, pool, stride)
            elif layer.kind == "Add":
                y = inputs[0]
                for other in inputs[1:]:
                    y = y + other
            elif layer.kind == "GlobalAveragePooling2D":
                y = inputs[0].mean(dim=(2, 3))
            else:  # pragma: no cover - rejected in load_keras_h5
                raise ValueError(layer.kind)
            values[layer.name] = y
        return values[self.graph.output_name]

    @staticmethod
    def _activation(x: torch.Tensor, name: str) -> torch.Tensor:
        if name == "relu":
            return F.relu(x)
        if name == "softmax":
            return F.softmax(x, dim=-1)
        if name == "linear":
            return x
        raise ValueError(f"activation {name} is not supported")


# ---------------------------------------------------------------------------------------------
# independent NumPy reference (NHWC, as Keras computes)


def _np_conv(x: np.ndarray, kernel: np.ndarray, stride: int, padding: str) -> np.ndarray:
    """x: [N,H,W,C], kernel: [kh,kw,C,O] -> [N,H',W',O]."""
    kh, kw = kernel.shape[:2]
    if padding == "same":
        top, bottom = same_padding(x.shape[1], kh, stride)
        left, right = same_padding(x.shape[2], kw, stride)
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, h, w, _c = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, kernel.shape[3]), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :]
            out += patch @ kernel[i, j]
    return out


def _np_depthwise(x: np.ndarray, kernel: np.ndarray, padding: str) -> np.ndarray:
    kh, kw, _, m = kernel.shape
    assert m == 1, "depth multipliers other than 1 are not supported"
    if padding == "same":
        top, bottom = same_padding(x.shape[1], kh, 1)
        left, right = same_padding(x.shape[2], kw, 1)
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, h, w, c = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    out = np.zeros((n, oh, ow, c), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            out += x[:, i : i + oh, j : j + ow, :] * kernel[i, j, :, 0]
    return out


def _np_maxpool(x: np.ndarray, pool: int, stride: int, padding: str) -> np.ndarray:
    if padding == "same":
        top, bottom = same_padding(x.shape[1], pool, stride)
        left, right = same_padding(x.shape[2], pool, stride)
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-np.inf)
    n, h, w, c = x.shape
    oh, ow = (h - pool) // stride + 1, (w - pool) // stride + 1
    out = np.full((n, oh, ow, c), -np.inf)
    for i in range(pool):
        for j in range(pool):
            out = np.maximum(out, x[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :])
    return out


def _np_activation(x: np.ndarray, name: str) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0)
    if name == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return x


def numpy_forward(graph: KerasGraph, pixels: np.ndarray) -> np.ndarray:
    """pixels: [N, H, W] gray 0..255 -> probabilities [N, classes], float64, Keras semantics."""
    values: dict[str, np.ndarray] = {}
    for layer in graph.layers:
        cfg, w = layer.config, layer.weights
        inputs = [values[name] for name in layer.inbound]
        if layer.kind == "InputLayer":
            y = (pixels.astype(np.float64)[..., None] / 255.0 - 0.5) * 2.0
        elif layer.kind == "Conv2D":
            y = _np_conv(inputs[0], w["kernel"], cfg["strides"][0], cfg["padding"])
            if cfg.get("use_bias"):
                y = y + w["bias"]
            y = _np_activation(y, cfg.get("activation", "linear"))
        elif layer.kind == "SeparableConv2D":
            y = _np_depthwise(inputs[0], w["depthwise_kernel"], cfg["padding"])
            y = _np_conv(y, w["pointwise_kernel"], 1, "valid")
            y = _np_activation(y, cfg.get("activation", "linear"))
        elif layer.kind == "BatchNormalization":
            y = (inputs[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + cfg["epsilon"]) * w["gamma"] + w["beta"]
        elif layer.kind == "Activation":
            y = _np_activation(inputs[0], cfg["activation"])
        elif layer.kind == "MaxPooling2D":
            y = _np_maxpool(inputs[0], cfg["pool_size"][0], cfg["strides"][0], cfg["padding"])
        elif layer.kind == "Add":
            y = sum(inputs[1:], inputs[0])
        elif layer.kind == "GlobalAveragePooling2D":
            y = inputs[0].mean(axis=(1, 2))
        values[layer.name] = y
    return values[graph.output_name]
