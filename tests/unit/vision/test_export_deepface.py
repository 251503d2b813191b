"""The DeepFace converter on a weights file with DeepFace's layout and random weights (the real file is
not redistributable here): the ONNX export must match the script's independent NumPy reference."""

from pathlib import Path

import h5py
import numpy as np
import onnxruntime as ort
import pytest

from services.vision.export_deepface import (
    CONV_SHAPES,
    DENSE_SHAPES,
    load_weights,
    main,
    numpy_forward,
    parity_inputs,
)

# The layer names Keras 2 gives DeepFace's Sequential (layers without weights are listed too).
LAYERS = [
    "conv2d_1",
    "max_pooling2d_1",
    "conv2d_2",
    "conv2d_3",
    "average_pooling2d_1",
    "conv2d_4",
    "conv2d_5",
    "average_pooling2d_2",
    "flatten_1",
    "dense_1",
    "dropout_1",
    "dense_2",
    "dropout_2",
    "dense_3",
]


def write_keras_weights(path: Path, seed: int = 0, skip_last: bool = False) -> None:
    """A Keras 2 `save_weights` HDF5 with DeepFace's shapes and He-scaled random weights."""
    rng = np.random.default_rng(seed)
    shapes = iter(
        [((k, k, cin, cout), cout, k * k * cin) for k, cin, cout in CONV_SHAPES]
        + [((din, dout), dout, din) for din, dout in DENSE_SHAPES]
    )
    with h5py.File(path, "w") as h5:
        names = LAYERS[:-1] if skip_last else LAYERS
        h5.attrs["layer_names"] = [n.encode() for n in names]
        h5.attrs["backend"] = b"tensorflow"
        h5.attrs["keras_version"] = b"2.2.4"
        for name in names:
            group = h5.create_group(name)
            if not name.startswith(("conv2d", "dense")):
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            kernel_shape, bias_size, fan_in = next(shapes)
            group.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            group.create_dataset(
                f"{name}/kernel:0", data=rng.normal(0, np.sqrt(2 / fan_in), kernel_shape).astype(np.float32)
            )
            group.create_dataset(f"{name}/bias:0", data=rng.normal(0, 0.05, bias_size).astype(np.float32))


def test_export_matches_the_numpy_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hdf5, onnx_path = tmp_path / "facial_expression_model_weights.h5", tmp_path / "model.onnx"
    write_keras_weights(hdf5)
    main(["--hdf5", str(hdf5), "--out", str(onnx_path)])
    assert "parity with the NumPy reference" in capsys.readouterr().out

    weights = load_weights(hdf5)
    pixels = parity_inputs()
    reference = numpy_forward(weights, pixels)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [("face_gray", [1, 48, 48])]
    out = session.run(["probabilities"], {"face_gray": pixels[:, None].astype(np.float32)})[0]
    assert out.shape == (4, 7)
    np.testing.assert_allclose(out, reference, atol=1e-5)
    np.testing.assert_allclose(out.sum(axis=1), 1, atol=1e-5)
    # Random weights must still give input-dependent, non-degenerate outputs, or parity proves little.
    assert out.max() < 0.999 and np.abs(out[0] - out[3]).max() > 1e-3


def test_wrong_files_are_refused(tmp_path: Path) -> None:
    short = tmp_path / "short.h5"
    write_keras_weights(short, skip_last=True)
    with pytest.raises(ValueError, match="expected 8 layers with weights"):
        load_weights(short)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match="not a Keras weights file"):
        load_weights(other)
