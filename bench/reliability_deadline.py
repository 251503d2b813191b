"""Partial results before the deadline with a frozen modality on a busy machine: how many Analyze
calls come back in time (OK, the frozen modality TIMED_OUT) and how many fail DEADLINE_EXCEEDED.

    python -m bench.reliability_deadline --out runs/bench/reliability_deadline.json

Starts an ephemeral embedded stack (tritonserver, vision, text, fusion; real models), warms it up,
freezes the text service with SIGSTOP (its socket still accepts, it answers nothing), then sends
`--requests` Analyze calls with an image and text, each with a `--deadline-s` gRPC deadline,
`--concurrency` in flight, while `--burners` processes spin on the CPU. The outcome of each call is
its status and, for OK, each modality's status: a partial result in time is "OK (vision OK, text
TIMED_OUT; fused)"; the caller sees DEADLINE_EXCEEDED when fusion's answer misses
the deadline. Text gets SIGCONT afterwards and one more call checks that it answers again. Before
issue #13 a call where nothing could be fused still came back OK; those are counted apart."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np

from emomesh.server import grpc_options
from emomesh.stack import Stack, StackConfig
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc

TEXT = "Thank you so much, I love it!"


def astronaut_jpeg() -> bytes:
    from skimage import data

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def outcome(response: fusion_pb2.AnalyzeResponse) -> str:
    """ "OK" with each sent modality's status, e.g. "OK (vision OK, text TIMED_OUT)"."""
    sent = [r for r in response.modalities if r.status != common_pb2.MODALITY_STATUS_MISSING]
    statuses = ", ".join(
        f"{common_pb2.Modality.Name(r.modality).removeprefix('MODALITY_').lower()} "
        f"{common_pb2.ModalityStatus.Name(r.status).removeprefix('MODALITY_STATUS_')}"
        for r in sent
    )
    fused = "fused" if response.fused.HasField("distribution") else "nothing fused"
    return f"OK ({statuses}; {fused})"


async def frozen_run(address: str, image: bytes, args: argparse.Namespace) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    late_ms: list[float] = []
    left = args.requests
    async with grpc.aio.insecure_channel(address, options=grpc_options(64 << 20)) as channel:
        fusion = fusion_pb2_grpc.FusionServiceStub(channel)
        request = fusion_pb2.AnalyzeRequest(image=image, text=TEXT)

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                start = time.perf_counter()
                try:
                    response = await fusion.Analyze(request, timeout=args.deadline_s)
                    outcomes[outcome(response)] += 1
                except grpc.aio.AioRpcError as err:
                    outcomes[err.code().name] += 1
                late_ms.append((time.perf_counter() - start - args.deadline_s) * 1000)

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    margins = np.asarray(late_ms)
    return {
        "outcomes": dict(outcomes),
        # Negative: the answer came that long before the deadline.
        "answer_vs_deadline_ms": {
            "p50": round(float(np.percentile(margins, 50)), 1),
            "p95": round(float(np.percentile(margins, 95)), 1),
            "max": round(float(margins.max()), 1),
        },
    }


async def analyze_once(address: str, image: bytes, timeout_s: float) -> fusion_pb2.AnalyzeResponse:
    async with grpc.aio.insecure_channel(address, options=grpc_options(64 << 20)) as channel:
        fusion = fusion_pb2_grpc.FusionServiceStub(channel)
        response: fusion_pb2.AnalyzeResponse = await fusion.Analyze(
            fusion_pb2.AnalyzeRequest(image=image, text=TEXT), timeout=timeout_s
        )
        return response


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--deadline-s", type=float, default=2.0)
    parser.add_argument("--burners", type=int, default=2, help="CPU-spinning processes during the run")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args(argv)
    image = astronaut_jpeg()
    with tempfile.TemporaryDirectory() as work:
        config = StackConfig.ephemeral(Path(work), services=("vision", "text", "fusion"))
        with Stack(config) as stack:
            address = stack.config.address("fusion")
            for _ in range(5):
                asyncio.run(analyze_once(address, image, 30))
            text = stack.processes["text"]
            burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.burners)]
            os.kill(text.pid, signal.SIGSTOP)
            try:
                result = asyncio.run(frozen_run(address, image, args))
            finally:
                os.kill(text.pid, signal.SIGCONT)
                for burner in burners:
                    burner.kill()
                    burner.wait()
            thawed = asyncio.run(analyze_once(address, image, 30))
            statuses = {
                common_pb2.Modality.Name(r.modality): common_pb2.ModalityStatus.Name(r.status)
                for r in thawed.modalities
            }
    print(
        f"text frozen, {args.requests} Analyze calls (image + text), {args.concurrency} in flight, "
        f"{args.deadline_s:g} s deadline, {args.burners} CPU burners: {result['outcomes']}"
    )
    print(f"answer vs deadline (ms, negative = before it): {result['answer_vs_deadline_ms']}")
    print(f"after SIGCONT: {statuses}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        document = {**vars(args), "out": str(args.out), **result, "after_sigcont": statuses}
        args.out.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
