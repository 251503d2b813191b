"""Adds warm-up requests to every model of a Triton model repository, in place:

    python triton_warmup.py MODEL_REPOSITORY

Triton runs a model's `model_warmup` samples while loading it, before the model (and, with
--strict-readiness, the server) reports ready. On GPU nodes this is the TensorRT build step: the
onnxruntime TensorRT execution provider builds its engine at the first inference of each new input
shape, so warming with batch 1 and with max_batch_size builds the engine for the whole batch range
before any user request arrives, and the Kubernetes startupProbe covers the build time. Engines are
cached (trt_engine_cache_path in config.pbtxt), so a restart on a warm cache is quick.

Used by deploy/docker/triton.Dockerfile; needs only protobuf and tritonclient's model_config_pb2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

# Length used for variable (-1) dimensions, e.g. a token sequence: long enough to be realistic.
VARIABLE_DIM = 16
HEADER = "# Warm-up samples added by deploy/docker/triton_warmup.py at image build time.\n"


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


def with_warmup(config_text: str) -> str:
    """config.pbtxt text with warm-up samples; unchanged if it already declares its own."""
    config = text_format.Parse(config_text, model_config_pb2.ModelConfig())
    if config.model_warmup:
        return config_text
    config.model_warmup.extend(warmup_samples(config))
    return HEADER + text_format.MessageToString(config)


def add_warmup(repository: Path) -> list[str]:
    """Rewrites every <model>/config.pbtxt under repository; returns the model names."""
    names = []
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        config_path.write_text(with_warmup(config_path.read_text()))
        names.append(config_path.parent.name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path)
    args = parser.parse_args(argv)
    names = add_warmup(args.repository)
    if not names:
        print(f"no */config.pbtxt under {args.repository}", file=sys.stderr)
        return 1
    print("warm-up added to: " + ", ".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
