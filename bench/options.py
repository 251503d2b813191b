"""The command-line options of bench.run_all, importable without the bench's heavy dependencies (the
`emomesh bench` subcommand declares them when building its parser)."""

from __future__ import annotations

import argparse
from pathlib import Path

TARGETS = ("vision", "audio", "text", "analyze")
CONCURRENCY = (1, 8, 32)
PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=200, help="calls per cell at most")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="seconds per cell at most")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--ort-threads", type=int, default=1, help="onnxruntime threads per Triton model instance")
    parser.add_argument("--triton-url", help="use this Triton (e.g. a GPU one) instead of the embedded server")
    parser.add_argument("--providers", choices=sorted(PROVIDERS), default="cpu", help="in-process baseline device")
    parser.add_argument("--out", type=Path, help="JSON results")
