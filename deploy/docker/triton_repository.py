"""Prepares the model repository of the Triton image, in place:

    python triton_repository.py MODEL_REPOSITORY [--cpu]

1. Warm-up. Triton runs a model's `model_warmup` samples while loading it, before the model (and, with
--strict-readiness, the server) reports ready. On GPU nodes this is the TensorRT build step: the
onnxruntime TensorRT execution provider builds its engine at the first inference of each new input
shape, so warming with batch 1 and with max_batch_size builds the engine for the whole batch range
before any user request arrives, and the Kubernetes startupProbe covers the build time. Engines are
cached (trt_engine_cache_path in config.pbtxt), so a restart on a warm cache is quick.

2. --cpu: the committed configs are the GPU variant (`emomesh triton render --variant gpu`); for a
CPU-only cluster (the dev overlay) the instance groups become KIND_CPU and the TensorRT accelerator
is dropped, so that NGC Triton's onnxruntime backend runs the same ONNX files on CPU.

Used by deploy/docker/triton.Dockerfile; needs only protobuf and tritonclient's model_config_pb2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

# Length used for variable (-1) dimensions, e.g. a token sequence: long enough to be realistic.
VARIABLE_DIM = 16
HEADER = "# Prepared by deploy/docker/triton_repository.py at image build time (warm-up{cpu}).\n"


def warmup_samples(config: model_config_pb2.ModelConfig) -> list[model_config_pb2.ModelWarmup]:
    batch_sizes = sorted({1, config.max_batch_size}) if config.max_batch_size > 0 else [0]
    samples = []
    for batch_size in batch_sizes:
        sample = model_config_pb2.ModelWarmup(name=f"zeros_batch{batch_size}", batch_size=batch_size, count=1)
        for tensor in config.input:
            sample.inputs[tensor.name].CopyFrom(
                model_config_pb2.ModelWarmup.Input(
                    data_type=tensor.data_type,
                    dims=[VARIABLE_DIM if d < 0 else d for d in tensor.dims],
                    zero_data=True,
                )
            )
        samples.append(sample)
    return samples


def prepare_config(config_text: str, cpu: bool = False) -> str:
    """config.pbtxt text with warm-up samples (unless it declares its own), for CPU if asked."""
    config = text_format.Parse(config_text, model_config_pb2.ModelConfig())
    if not config.model_warmup:
        config.model_warmup.extend(warmup_samples(config))
    if cpu:
        for group in config.instance_group:
            group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
            del group.gpus[:]
        del config.optimization.execution_accelerators.gpu_execution_accelerator[:]
        if not config.optimization.execution_accelerators.ListFields():
            config.optimization.ClearField("execution_accelerators")
        if not config.optimization.ListFields():
            config.ClearField("optimization")
    return HEADER.format(cpu=", CPU" if cpu else "") + text_format.MessageToString(config)


def prepare_repository(repository: Path, cpu: bool = False) -> list[str]:
    """Rewrites every <model>/config.pbtxt under repository; returns the model names."""
    names = []
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        config_path.write_text(prepare_config(config_path.read_text(), cpu))
        names.append(config_path.parent.name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("--cpu", action="store_true", help="run every model on CPU, without TensorRT")
    args = parser.parse_args(argv)
    names = prepare_repository(args.repository, args.cpu)
    if not names:
        print(f"no */config.pbtxt under {args.repository}", file=sys.stderr)
        return 1
    print(f"prepared ({'CPU' if args.cpu else 'GPU'}): " + ", ".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
