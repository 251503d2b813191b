"""One-command benchmark: starts an ephemeral embedded stack (tritonserver + vision, audio, text and
fusion services on free loopback ports) and measures, in one run, latency (p50/p95/p99) and throughput
at concurrency 1, 8 and 32 of

- vision  AnalyzeImage (skimage's 512x512 astronaut photo, one face detected)
- audio   AnalyzeAudio without transcription (an espeak-ng sentence, 22.05 kHz WAV)
- text    AnalyzeText (one English sentence)
- analyze FusionService.Analyze with all three (transcript_as_text off)

each against an in-process baseline of the same ONNX models on the same inputs: the same work done in
this process (decode, detection/VAD/features/tokenization, onnxruntime with one thread per session,
fusion), driven by the same closed loop on threads. Ratios: gRPC p50 / in-process p50 and in-process
throughput / gRPC throughput. Writes JSON.

    OMP_NUM_THREADS=1 python -m bench --out runs/bench/all.json

Every cell is bounded: at most --requests calls or --max-seconds, whichever comes first.

GPU variant (on a machine with an NVIDIA GPU and the NGC Triton image): serve the GPU-rendered
repository (`emomesh triton render --variant gpu`) with the onnxruntime/TensorRT backends, then
`python -m bench --triton-url HOST:8001 --providers cuda --out runs/bench/gpu.json`: the
services talk to that Triton instead of the embedded CPU one, and the in-process baselines run on
onnxruntime's CUDA provider (onnxruntime-gpu)."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from bench.bench_analyze import AnalyzePipeline, inputs
from bench.common import CPU_PROVIDERS, closed_loop_async, closed_loop_threads, write_results
from emomesh.server import grpc_options
from emomesh.stack import Stack, StackConfig
from emotion.audio.v1 import audio_pb2, audio_pb2_grpc
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from emotion.text.v1 import text_pb2, text_pb2_grpc
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc

CALL_TIMEOUT_S = 60.0
TARGETS = ("vision", "audio", "text", "analyze")
CONCURRENCY = (1, 8, 32)
PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": CPU_PROVIDERS,
    "cuda": ("CUDAExecutionProvider", *CPU_PROVIDERS),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200, help="calls per cell at most")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="seconds per cell at most")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--ort-threads", type=int, default=1, help="onnxruntime threads per Triton model instance")
    parser.add_argument("--triton-url", help="use this Triton (e.g. a GPU one) instead of the embedded server")
    parser.add_argument("--providers", choices=sorted(PROVIDERS), default="cpu", help="in-process baseline device")
    parser.add_argument("--out", type=Path, help="JSON results")
    return parser


def grpc_call(target: str, channels: dict[str, grpc.aio.Channel], media: dict[str, Any]) -> Callable[[], Awaitable]:
    """The RPC of a target with its request built once (the bench measures serving, not encoding)."""
    if target == "vision":
        vision = vision_pb2_grpc.VisionServiceStub(channels["vision"])
        image_request = vision_pb2.AnalyzeImageRequest(image=media["image"])
        return lambda: vision.AnalyzeImage(image_request, timeout=CALL_TIMEOUT_S)
    if target == "audio":
        audio = audio_pb2_grpc.AudioServiceStub(channels["audio"])
        audio_request = audio_pb2.AnalyzeAudioRequest(audio=media["audio"], transcribe=False)
        return lambda: audio.AnalyzeAudio(audio_request, timeout=CALL_TIMEOUT_S)
    if target == "text":
        text = text_pb2_grpc.TextServiceStub(channels["text"])
        text_request = text_pb2.AnalyzeTextRequest(text=media["text"])
        return lambda: text.AnalyzeText(text_request, timeout=CALL_TIMEOUT_S)
    fusion = fusion_pb2_grpc.FusionServiceStub(channels["fusion"])
    analyze_request = fusion_pb2.AnalyzeRequest(
        image=media["image"], audio=media["audio"], text=media["text"], transcript_as_text=False
    )
    return lambda: fusion.Analyze(analyze_request, timeout=CALL_TIMEOUT_S)


def in_process_calls(media: dict[str, Any], providers: tuple[str, ...]) -> dict[str, Callable[[], object]]:
    analyze = AnalyzePipeline(providers)
    # The analyze pipeline holds one pipeline per modality: the per-modality baselines reuse them.
    return {
        "vision": lambda: analyze.image(media["image"]),
        "audio": lambda: analyze.audio(media["audio"]),
        "text": lambda: analyze.text(media["text"]),
        "analyze": lambda: analyze(media),
    }


async def measure_grpc(
    addresses: dict[str, str], media: dict[str, Any], target: str, concurrency: int, requests: int, seconds: float
) -> dict[str, float]:
    # One channel per service, shared by all workers, as a client process would.
    channels = {name: grpc.aio.insecure_channel(a, options=grpc_options(64 << 20)) for name, a in addresses.items()}
    try:
        return await closed_loop_async(grpc_call(target, channels, media), concurrency, requests, seconds)
    finally:
        for channel in channels.values():
            await channel.close()


def ratio_row(remote: dict[str, float], local: dict[str, float]) -> dict[str, float | None]:
    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    return {
        "p50_grpc_over_in_process": div(remote.get("p50_ms"), local.get("p50_ms")),
        "p99_grpc_over_in_process": div(remote.get("p99_ms"), local.get("p99_ms")),
        "throughput_in_process_over_grpc": div(local.get("per_s"), remote.get("per_s")),
    }


def line(target: str, concurrency: int, remote: dict[str, float], local: dict[str, float], ratio: dict) -> str:
    def cell(row: dict[str, float]) -> str:
        if not row.get("requests"):
            return "no completed calls"
        return (
            f"{row['per_s']:7.1f}/s p50 {row['p50_ms']:7.1f} p95 {row['p95_ms']:7.1f} p99 {row['p99_ms']:7.1f} ms "
            f"(n={row['requests']}{', errors=' + str(row['errors']) if row.get('errors') else ''})"
        )

    return (
        f"{target:<8} c={concurrency:<3} gRPC {cell(remote)} | in-process {cell(local)} | "
        f"p50 x{ratio['p50_grpc_over_in_process']}, throughput x{ratio['throughput_in_process_over_grpc']}"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results: dict[str, Any] = {
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "requests_per_cell": args.requests,
        "max_seconds_per_cell": args.max_seconds,
        "triton": args.triton_url or "embedded (Python backend, onnxruntime CPU)",
        "in_process_providers": list(PROVIDERS[args.providers]),
        "cells": [],
    }
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        media = inputs(Path(work))
        local_calls = in_process_calls(media, PROVIDERS[args.providers])
        config = StackConfig.ephemeral(Path(work) / "stack", services=("vision", "audio", "text", "fusion"))
        config.ort_threads = args.ort_threads
        if args.triton_url:
            config.extra_env = {"EMOMESH_TRITON_URL": args.triton_url}
        with Stack(config) as stack:
            results["stack_start_s"] = round(stack.timings.get("total", 0.0), 1)
            addresses = {name: stack.config.address(name) for name in ("vision", "audio", "text", "fusion")}
            for target in args.targets:
                for concurrency in args.concurrency:
                    remote = asyncio.run(
                        measure_grpc(addresses, media, target, concurrency, args.requests, args.max_seconds)
                    )
                    local = closed_loop_threads(local_calls[target], concurrency, args.requests, args.max_seconds)
                    ratio = ratio_row(remote, local)
                    results["cells"].append(
                        {"target": target, "concurrency": concurrency, "grpc": remote, "in_process": local, **ratio}
                    )
                    print(line(target, concurrency, remote, local, ratio), flush=True)
    results["seconds"] = round(time.perf_counter() - begin, 1)
    write_results(args.out, results)
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
