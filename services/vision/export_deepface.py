"""Converts DeepFace's facial expression model (`facial_expression_model_weights.h5`) to the ONNX form
the vision service serves, without TensorFlow, for users who have the file:

    python -m services.vision.export_deepface --hdf5 ~/.deepface/weights/facial_expression_model_weights.h5
    # writes deploy/triton/models/deepface_emotion/1/model.onnx; then
    emomesh triton render ... ; EMOMESH_VISION_MODEL=deepface_emotion

The file holds weights only (Keras `save_weights`); the graph is DeepFace's `Emotion.load_model()`
(serengil/deepface, deepface/models/demography/Emotion.py), a Sequential on 48x48x1 input:
Conv2D(64, 5x5, relu) -> MaxPool(5, stride 2) -> Conv2D(64, 3x3, relu) x2 -> AvgPool(3, stride 2) ->
Conv2D(128, 3x3, relu) x2 -> AvgPool(3, stride 2) -> Flatten -> Dense(1024, relu) -> Dropout ->
Dense(1024, relu) -> Dropout -> Dense(7, softmax); all convolutions and pools "valid". Its labels
(angry, disgust, fear, happy, sad, surprise, neutral) are the project's order. DeepFace feeds gray
pixels scaled to 0..1 (its face extractor returns faces / 255); the exported model takes 0..255 like
the other face models and scales inside.

Every conversion checks itself: the ONNX output on fixed inputs is compared with an independent NumPy
implementation of the Keras graph (NHWC, Keras flatten order), and the script fails if they differ."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emomesh.onnx_export import export_onnx
from emomesh.paths import model_file
from services.vision.keras_import import _np_activation, _np_conv, _np_maxpool

MODEL_NAME = "deepface_emotion"
DEFAULT_OUT = model_file(MODEL_NAME)
INPUT_SIDE = 48
# (kernel side, in channels, out channels) of the five Conv2D layers, in graph order.
CONV_SHAPES = ((5, 1, 64), (3, 64, 64), (3, 64, 64), (3, 64, 128), (3, 128, 128))
# (in, out) of the three Dense layers; 128 = 1x1x128 after the last pool.
DENSE_SHAPES = ((128, 1024), (1024, 1024), (1024, 7))
PARITY_ATOL = 1e-5


@dataclass(frozen=True)
class DeepFaceWeights:
    """Keras layouts: conv kernels HWIO, dense kernels [in, out]."""

    convs: list[tuple[np.ndarray, np.ndarray]]
    denses: list[tuple[np.ndarray, np.ndarray]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def load_weights(path: Path) -> DeepFaceWeights:
    """Reads a Keras 2 weights file (root attribute `layer_names`, each layer group's `weight_names`),
    or a full-model file's `model_weights` group. Like Keras' own `load_weights` for HDF5, layers are
    matched by order (layer names differ between Keras versions: conv2d_1 or conv2d), and every shape
    is checked against DeepFace's architecture."""
    with h5py.File(path, "r") as h5:
        root = h5.get("model_weights", h5)
        if "layer_names" not in root.attrs:
            raise ValueError(f"{path} is not a Keras weights file (no layer_names attribute)")
        weighted: list[tuple[str, list[np.ndarray]]] = []
        for name in map(_text, root.attrs["layer_names"]):
            group = root[name]
            names = [_text(w) for w in group.attrs.get("weight_names", [])]
            if names:
                weighted.append((name, [np.asarray(group[w], dtype=np.float32) for w in names]))
    expected = len(CONV_SHAPES) + len(DENSE_SHAPES)
    if len(weighted) != expected:
        raise ValueError(f"expected {expected} layers with weights (5 Conv2D, 3 Dense), found {len(weighted)}")
    convs, denses = [], []
    for (name, tensors), (k, cin, cout) in zip(weighted[:5], CONV_SHAPES, strict=True):
        kernel, bias = tensors
        if kernel.shape != (k, k, cin, cout) or bias.shape != (cout,):
            raise ValueError(f"layer {name}: kernel {kernel.shape}, expected {(k, k, cin, cout)}")
        convs.append((kernel, bias))
    for (name, tensors), (din, dout) in zip(weighted[5:], DENSE_SHAPES, strict=True):
        kernel, bias = tensors
        if kernel.shape != (din, dout) or bias.shape != (dout,):
            raise ValueError(f"layer {name}: kernel {kernel.shape}, expected {(din, dout)}")
        denses.append((kernel, bias))
    return DeepFaceWeights(convs, denses)


class DeepFaceEmotion(nn.Module):
    """DeepFace's emotion CNN in torch (NCHW). Input: gray pixels 0..255, [N, 1, 48, 48]."""

    def __init__(self, weights: DeepFaceWeights) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        for kernel, bias in weights.convs:
            conv = nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[0])
            conv.weight = nn.Parameter(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))  # HWIO -> OIHW
            conv.bias = nn.Parameter(torch.from_numpy(bias))
            self.convs.append(conv)
        self.denses = nn.ModuleList()
        for kernel, bias in weights.denses:
            dense = nn.Linear(kernel.shape[0], kernel.shape[1])
            dense.weight = nn.Parameter(torch.from_numpy(kernel.T.copy()))
            dense.bias = nn.Parameter(torch.from_numpy(bias))
            self.denses.append(dense)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.convs
        x = x / 255.0
        x = F.max_pool2d(F.relu(c[0](x)), 5, 2)
        x = F.avg_pool2d(F.relu(c[2](F.relu(c[1](x)))), 3, 2)
        x = F.avg_pool2d(F.relu(c[4](F.relu(c[3](x)))), 3, 2)
        # Keras flattens NHWC; go through that order so Dense weights line up for any spatial size.
        x = x.permute(0, 2, 3, 1).flatten(1)
        x = F.relu(self.denses[0](x))  # dropout is the identity at inference
        x = F.relu(self.denses[1](x))
        return F.softmax(self.denses[2](x), dim=-1)


def _np_avgpool(x: np.ndarray, pool: int, stride: int) -> np.ndarray:
    n, h, w, c = x.shape
    oh, ow = (h - pool) // stride + 1, (w - pool) // stride + 1
    out = np.zeros((n, oh, ow, c), dtype=np.float64)
    for i in range(pool):
        for j in range(pool):
            out += x[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :]
    return out / (pool * pool)


def numpy_forward(weights: DeepFaceWeights, pixels: np.ndarray) -> np.ndarray:
    """pixels: [N, 48, 48] gray 0..255 -> probabilities [N, 7], float64, with Keras (NHWC) semantics."""

    def conv(x: np.ndarray, layer: int) -> np.ndarray:
        kernel, bias = weights.convs[layer]
        return _np_activation(_np_conv(x, kernel.astype(np.float64), 1, "valid") + bias, "relu")

    x = pixels.astype(np.float64)[..., None] / 255.0
    x = _np_maxpool(conv(x, 0), 5, 2, "valid")
    x = _np_avgpool(conv(conv(x, 1), 2), 3, 2)
    x = _np_avgpool(conv(conv(x, 3), 4), 3, 2)
    x = x.reshape(len(x), -1)
    for layer, (kernel, bias) in enumerate(weights.denses):
        x = x @ kernel.astype(np.float64) + bias
        x = _np_activation(x, "softmax" if layer == len(weights.denses) - 1 else "relu")
    return x


def export(weights: DeepFaceWeights, out: Path) -> None:
    module = DeepFaceEmotion(weights)
    export_onnx(module, (torch.zeros(1, 1, INPUT_SIDE, INPUT_SIDE),), out, ["face_gray"], ["probabilities"])


def parity_inputs() -> np.ndarray:
    """Deterministic 48x48 gray inputs: skimage's astronaut face, noise, a gradient and flat gray."""
    import cv2
    from skimage import data

    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    face = cv2.resize(astronaut[20:220, 140:320], (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(11)
    gradient = np.tile(np.linspace(0, 255, INPUT_SIDE), (INPUT_SIDE, 1))
    flat = np.full((INPUT_SIDE, INPUT_SIDE), 128)
    return np.stack([face, rng.integers(0, 256, (INPUT_SIDE, INPUT_SIDE)), gradient, flat]).astype(np.uint8)


def check_parity(weights: DeepFaceWeights, onnx_path: Path) -> float:
    """Max absolute difference between the ONNX model (onnxruntime) and the NumPy reference."""
    import onnxruntime as ort

    pixels = parity_inputs()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_probs = session.run(["probabilities"], {"face_gray": pixels[:, None].astype(np.float32)})[0]
    return float(np.abs(onnx_probs - numpy_forward(weights, pixels)).max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hdf5", type=Path, required=True, help="DeepFace's facial_expression_model_weights.h5")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    weights = load_weights(args.hdf5)
    export(weights, args.out)
    diff = check_parity(weights, args.out)
    if diff > PARITY_ATOL:
        args.out.unlink()
        raise SystemExit(f"parity check failed: ONNX and the NumPy reference differ by {diff:.2e}; removed {args.out}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB); parity with the NumPy reference: {diff:.1e}")


if __name__ == "__main__":
    main()
