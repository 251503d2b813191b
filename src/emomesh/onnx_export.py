"""The one way Emomesh exports a torch module to the ONNX file Triton serves: named tensors, a
dynamic batch dimension (plus any other dynamic axes), opset 17.

The TorchScript exporter is used on purpose: the graphs are static and it needs no onnxscript
dependency; its deprecation and tracer notices are expected and silenced here only. Needs the
`train` extra (torch)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

OPSET = 17


def export_onnx(
    module: Any,
    example_inputs: tuple[Any, ...],
    out: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> None:
    """Writes module (switched to eval mode) to out. Without dynamic_axes, dimension 0 of every
    input and output is the batch."""
    import torch

    if dynamic_axes is None:
        dynamic_axes = {name: {0: "batch"} for name in [*input_names, *output_names]}
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        # LSTMs (the audio model) trace with a dynamic batch; their initial states are zeros, which is
        # batch-size independent, so the exporter's generic caution does not apply.
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
        torch.onnx.export(
            module.eval(),
            example_inputs,
            str(out),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )
