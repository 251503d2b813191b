"""Audio emotion throughput: clips/s through gRPC + the audio service + Triton, against the same work
done in-process (PyAV decode, voice activity, log-Mel, onnxruntime with one thread), in one run.

    OMP_NUM_THREADS=1 python -m bench.bench_audio --clips 40 --concurrency 4 --out runs/bench/audio.json

Starts an ephemeral embedded stack with only the audio service (tritonserver + `services.audio.server`).
The clips are espeak-ng sentences (3-5 s, 22.05 kHz WAV, 1-2 analysis windows each). Transcription is
off for the emotion rows; `--asr` adds a row for AnalyzeAudio with transcribe=true (the service's default
ASR model, Whisper base; `EMOMESH_AUDIO_ASR_MODEL=tiny.en` for tiny.en; bench.bench_asr compares them)."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np

from bench.common import CPU_PROVIDERS, ort_session, write_results
from emomesh.server import grpc_options
from emomesh.stack import Stack, StackConfig
from emotion.audio.v1 import audio_pb2, audio_pb2_grpc
from services.audio.config import DEFAULT_MODEL
from services.audio.features import analysis_windows, decode_audio, speech_activity

SENTENCES = (
    "I am so happy to see you again, this is wonderful news.",
    "Why would you do that to me? I told you a hundred times not to.",
    "The train leaves at seven, so we should pack tonight.",
    "I miss her every single day, and nothing feels the same.",
    "Watch out! There is something moving behind the door.",
)


def make_clips(work: Path, count: int) -> list[bytes]:
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is needed for the speech clips")
    clips = []
    for i in range(count):
        wav = work / f"clip{i}.wav"
        speed = str(130 + 10 * (i % 5))
        subprocess.run(["espeak-ng", "-s", speed, "-w", str(wav), SENTENCES[i % len(SENTENCES)]], check=True)
        clips.append(wav.read_bytes())
    return clips


class AudioPipeline:
    """AnalyzeAudio's emotion work in-process (no transcription): PyAV decode to 16 kHz mono, voice
    activity, log-Mel analysis windows, the model on all windows in one batch, mean of the windows."""

    def __init__(self, providers: Sequence[str] = CPU_PROVIDERS) -> None:
        self.model = ort_session(DEFAULT_MODEL, providers)
        self.model.run(None, {"log_mel": np.zeros((1, 1, 128, 130), np.float32)})

    def features(self, clip: bytes) -> np.ndarray:
        audio = decode_audio(clip)
        speech_activity(audio.samples)
        return analysis_windows(audio.samples).log_mel

    def model_only(self, log_mel: np.ndarray) -> np.ndarray:
        return self.model.run(["probabilities"], {"log_mel": log_mel})[0]

    def __call__(self, clip: bytes) -> np.ndarray:
        return self.model_only(self.features(clip)).mean(axis=0)


def in_process(clips: list[bytes]) -> dict[str, float]:
    pipeline = AudioPipeline()
    model_s, start = 0.0, time.perf_counter()
    windows = 0
    for data in clips:
        log_mel = pipeline.features(data)
        windows += len(log_mel)
        t = time.perf_counter()
        pipeline.model_only(log_mel)
        model_s += time.perf_counter() - t
    total = time.perf_counter() - start
    return {
        "clips_per_s": len(clips) / total,
        "model_only_clips_per_s": len(clips) / model_s,
        "model_ms_per_window": model_s / windows * 1000,
        "windows": windows,
    }


async def through_grpc(
    address: str, clips: list[bytes], concurrency: int, transcribe: bool = False
) -> dict[str, float]:
    async with grpc.aio.insecure_channel(address, options=grpc_options(64 * 1024 * 1024)) as channel:
        stub = audio_pb2_grpc.AudioServiceStub(channel)
        await stub.AnalyzeAudio(audio_pb2.AnalyzeAudioRequest(audio=clips[0], transcribe=transcribe), timeout=120)
        queue = list(clips)
        latencies: list[float] = []

        async def worker() -> None:
            while queue:
                data = queue.pop()
                t = time.perf_counter()
                await stub.AnalyzeAudio(audio_pb2.AnalyzeAudioRequest(audio=data, transcribe=transcribe), timeout=120)
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        total = time.perf_counter() - start
    return {
        "clips_per_s": len(clips) / total,
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--asr", action="store_true", help="also measure AnalyzeAudio with transcription")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args(argv)
    results: dict[str, object] = {"clips": args.clips}
    with tempfile.TemporaryDirectory() as work:
        clips = make_clips(Path(work), args.clips)
        results["in_process"] = local = in_process(clips)
        print(
            f"in-process (decode+VAD+log-Mel+onnxruntime, 1 thread): {local['clips_per_s']:.1f} clips/s; "
            f"model only {local['model_only_clips_per_s']:.1f} clips/s ({local['model_ms_per_window']:.2f} ms/window)",
            flush=True,
        )
        with Stack(StackConfig.ephemeral(Path(work) / "stack", services=("audio",))) as stack:
            address = stack.config.address("audio")
            for concurrency in sorted({1, args.concurrency}):
                row = asyncio.run(through_grpc(address, clips, concurrency))
                results[f"grpc_triton_c{concurrency}"] = row
                print(
                    f"gRPC + Triton, {concurrency} concurrent: {row['clips_per_s']:.1f} clips/s "
                    f"(p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms)",
                    flush=True,
                )
            if args.asr:
                row = asyncio.run(through_grpc(address, clips[: max(4, args.clips // 4)], 1, transcribe=True))
                results["grpc_triton_with_asr_c1"] = row
                print(f"gRPC + Triton + Whisper, 1 concurrent: {row['clips_per_s']:.2f} clips/s", flush=True)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
