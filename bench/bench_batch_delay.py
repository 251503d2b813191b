"""What Triton's dynamic-batching delay costs and buys on this CPU, side by side in one run.

    OMP_NUM_THREADS=1 python -m bench.bench_batch_delay --calls 40 --out runs/bench/batch_delay.json

Starts two ephemeral embedded stacks with the vision and audio services: one as `emomesh up` renders the
local Triton repository (no queue delay), one whose dynamic batcher waits each model's configured
`max_queue_delay_microseconds` (500 µs for the vision models, 1,000 µs for the speech models; what the GPU
variant keeps). Then:
- latency at one client: AnalyzeImage (the 512x512 photo: detector + expression model, two Triton calls)
  and AnalyzeAudio (espeak-ng clips, one Triton call), each call made to both stacks in turn (the order
  alternating), reported as p50s and the median of the per-call differences;
- throughput at --concurrency clients: AnalyzeImage calls/s on each stack, in alternating rounds, with
  Triton's own count of inferences per model execution (how much the batcher merged).
`--audio-model` picks the speech model (default the ACRNN, whose Triton call is short enough for a
millisecond to show)."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc.aio as triton

from bench.bench_audio import make_clips
from bench.bench_vision import astronaut_jpeg
from bench.common import write_results
from emomesh.server import grpc_options
from emomesh.stack import Stack, StackConfig
from emotion.audio.v1 import audio_pb2, audio_pb2_grpc
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc

SETTINGS = {"no delay (local default)": False, "configured delay (as on GPU)": True}


async def executions(triton_url: str) -> dict[str, tuple[int, int]]:
    """(inferences, executions) so far of every model that ran, from Triton's statistics."""
    client = triton.InferenceServerClient(triton_url)
    try:
        stats = await client.get_inference_statistics(as_json=True)
    finally:
        await client.close()
    return {
        m["name"]: (int(m.get("inference_count", 0)), int(m.get("execution_count", 0)))
        for m in stats.get("model_stats", [])
        if int(m.get("inference_count", 0))
    }


async def calls_in_a_row(
    stub: vision_pb2_grpc.VisionServiceStub, request: vision_pb2.AnalyzeImageRequest, calls: int
) -> None:
    for _ in range(calls):
        await stub.AnalyzeImage(request)


async def measure(stacks: dict[str, Stack], clips: list[bytes], jpeg: bytes, concurrency: int, rounds: int) -> dict:
    channels = {
        name: (
            grpc.aio.insecure_channel(s.config.address("vision")),
            grpc.aio.insecure_channel(s.config.address("audio"), options=grpc_options(64 * 1024 * 1024)),
        )
        for name, s in stacks.items()
    }
    try:
        return await _measure(channels, stacks, clips, jpeg, concurrency, rounds)
    finally:
        for vision_channel, audio_channel in channels.values():
            await vision_channel.close()
            await audio_channel.close()


async def _measure(
    channels: dict[str, tuple[grpc.aio.Channel, grpc.aio.Channel]],
    stacks: dict[str, Stack],
    clips: list[bytes],
    jpeg: bytes,
    concurrency: int,
    rounds: int,
) -> dict:
    vision = {name: vision_pb2_grpc.VisionServiceStub(pair[0]) for name, pair in channels.items()}
    audio = {name: audio_pb2_grpc.AudioServiceStub(pair[1]) for name, pair in channels.items()}
    image_request = vision_pb2.AnalyzeImageRequest(image=jpeg)
    latencies: dict[str, dict[str, list[float]]] = {name: {"image": [], "audio": []} for name in stacks}
    for name in stacks:  # warm-up
        await vision[name].AnalyzeImage(image_request)
        await audio[name].AnalyzeAudio(audio_pb2.AnalyzeAudioRequest(audio=clips[0]))
    names = list(stacks)
    for i, clip in enumerate(clips):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            await vision[name].AnalyzeImage(image_request)
            latencies[name]["image"].append(time.perf_counter() - start)
            start = time.perf_counter()
            await audio[name].AnalyzeAudio(audio_pb2.AnalyzeAudioRequest(audio=clip))
            latencies[name]["audio"].append(time.perf_counter() - start)

    throughput: dict[str, list[float]] = {name: [] for name in stacks}
    before = {name: await executions(s.triton.grpc_url) for name, s in stacks.items()}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            await asyncio.gather(*(calls_in_a_row(vision[name], image_request, 8) for _ in range(concurrency)))
            throughput[name].append(8 * concurrency / (time.perf_counter() - start))
    after = {name: await executions(s.triton.grpc_url) for name, s in stacks.items()}

    results: dict[str, dict[str, object]] = {}
    for name in stacks:
        merged = {
            model: round((n - before[name].get(model, (0, 0))[0]) / max(1, e - before[name].get(model, (0, 0))[1]), 2)
            for model, (n, e) in after[name].items()
            if e > before[name].get(model, (0, 0))[1]
        }
        results[name] = {
            "analyze_image_p50_ms": float(np.median(latencies[name]["image"]) * 1000),
            "analyze_audio_p50_ms": float(np.median(latencies[name]["audio"]) * 1000),
            f"analyze_image_c{concurrency}_calls_per_s": float(np.median(throughput[name])),
            f"inferences_per_execution_c{concurrency}": merged,
        }
    first, second = names
    for kind in ("image", "audio"):
        paired = np.array(latencies[first][kind]) - np.array(latencies[second][kind])
        results[f"analyze_{kind}_paired_ms"] = {f"{first} - {second}": float(np.median(paired) * 1000)}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=40, help="calls of each kind to each stack at one client")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6, help="alternating throughput rounds per stack")
    parser.add_argument("--audio-model", default="audio_acrnn")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args(argv)
    env = {"EMOMESH_AUDIO_MODEL": args.audio_model, "EMOMESH_AUDIO_ASR_ENABLED": "false"}
    with tempfile.TemporaryDirectory() as work:
        clips = make_clips(Path(work), args.calls)
        with ExitStack() as running:
            stacks = {}
            for i, (name, delay) in enumerate(SETTINGS.items()):
                config = StackConfig.ephemeral(Path(work) / f"stack{i}", services=("vision", "audio"))
                stacks[name] = running.enter_context(Stack(replace(config, batch_delay=delay, extra_env=env)))
            results = asyncio.run(measure(stacks, clips, astronaut_jpeg(), args.concurrency, args.rounds))
    for name, row in results.items():
        print(f"{name}: {row}")
    write_results(args.out, {"calls": args.calls, "audio_model": args.audio_model, **results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
