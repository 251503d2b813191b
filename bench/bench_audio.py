"""Audio emotion cost per clip, for each speech-emotion model, in one run: the work in-process (PyAV
decode, voice activity, the model's features, onnxruntime with one thread) against AnalyzeAudio through
gRPC + the audio service + Triton, with the served path's overhead taken apart.

    OMP_NUM_THREADS=1 python -m bench.bench_audio --clips 40 --concurrency 4 --out runs/bench/audio.json

For each model of --models (default: the ACRNN and the Whisper-encoder model, those whose ONNX file is
there), starts an ephemeral embedded stack with only the audio service (tritonserver +
`services.audio.server`, EMOMESH_AUDIO_MODEL=<model>) and, clip by clip, runs three paths in turn (the
order rotating), so that all three see the same machine load:
- in-process: decode + VAD + features, then the model;
- Triton direct: the clip's windows sent straight to Triton's gRPC endpoint (tritonclient);
- served: AnalyzeAudio at concurrency 1 as the client sees it, and as the service reports it (`latency_ms`).
The overhead is read from the per-clip differences (medians of the pairs): served - in-process in all;
the gRPC hop (client time - `latency_ms`); Triton (Triton direct - the model in-process); the rest is the
service's own (its thread hand-off, the response). The service's stage histograms give its decode, VAD
and features times. Then clips/s at --concurrency.
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
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np

from bench.common import CPU_PROVIDERS, ort_session, write_results
from emomesh.paths import model_file
from emomesh.server import grpc_options
from emomesh.stack import Stack, StackConfig
from emomesh.triton_repo import load_specs
from emotion.audio.v1 import audio_pb2, audio_pb2_grpc
from services.audio.config import DEFAULT_MODEL
from services.audio.features import (
    FEATURE_SHAPES,
    analysis_windows,
    decode_audio,
    speech_activity,
)
from services.audio.model import model_features

SPEECH_MODELS = ("audio_acrnn", "audio_whisper_emotion")

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
    activity, the model's analysis windows, the model on all windows in one batch, mean of the windows."""

    def __init__(self, providers: Sequence[str] = CPU_PROVIDERS, model: str = DEFAULT_MODEL) -> None:
        self.model = ort_session(model, providers)
        self.kind = model_features(model, load_specs()[model].get("parameters", {}))
        self.input = self.model.get_inputs()[0].name
        self.model.run(None, {self.input: np.zeros((1, *FEATURE_SHAPES[self.kind]), np.float32)})

    def features(self, clip: bytes) -> np.ndarray:
        audio = decode_audio(clip)
        speech_activity(audio.samples)
        return analysis_windows(audio.samples, self.kind).log_mel

    def model_only(self, windows: np.ndarray) -> np.ndarray:
        return self.model.run(["probabilities"], {self.input: windows})[0]

    def __call__(self, clip: bytes) -> np.ndarray:
        return self.model_only(self.features(clip)).mean(axis=0)


def stage_sums(metrics_url: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of the audio service's per-stage and per-Triton-call histograms, by stage."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    sums: dict[str, tuple[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("emomesh_audio_stage_duration_seconds", "emomesh_triton_request_duration_seconds"):
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage") or "triton " + sample.labels.get("model", "")
            total, count = sums.get(stage, (0.0, 0.0))
            if sample.name.endswith("_sum"):
                sums[stage] = (total + sample.value, count)
            elif sample.name.endswith("_count"):
                sums[stage] = (total, count + sample.value)
    return sums


def stage_means_ms(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean milliseconds per call of each stage between two scrapes."""
    means = {}
    for stage, (total, count) in after.items():
        total0, count0 = before.get(stage, (0.0, 0.0))
        if count > count0:
            means[stage] = (total - total0) / (count - count0) * 1000
    return means


def p50_ms(seconds: Sequence[float] | np.ndarray) -> float:
    return float(np.percentile(seconds, 50) * 1000)


async def side_by_side(
    address: str, triton_url: str, model: str, clips: list[bytes], metrics_url: str
) -> dict[str, object]:
    """Per clip, in turn (the order rotating): the in-process pipeline, the clip's windows straight to
    Triton, and AnalyzeAudio through the service; one warm-up call of each first."""
    import tritonclient.grpc as triton

    pipeline = AudioPipeline(model=model)
    client = triton.InferenceServerClient(triton_url)
    input_name = client.get_model_metadata(model).inputs[0].name
    times: dict[str, list[float]] = {k: [] for k in ("in_process", "model", "triton", "served", "service")}
    windows = 0
    # The Triton-direct path sends each clip's windows; computed once here, outside any timing.
    clip_windows = [pipeline.features(data) for data in clips]

    async with grpc.aio.insecure_channel(address, options=grpc_options(64 * 1024 * 1024)) as channel:
        stub = audio_pb2_grpc.AudioServiceStub(channel)

        async def in_process(index: int) -> None:
            nonlocal windows
            start = time.perf_counter()
            features = pipeline.features(clips[index])
            model_start = time.perf_counter()
            pipeline.model_only(features).mean(axis=0)
            times["model"].append(time.perf_counter() - model_start)
            times["in_process"].append(time.perf_counter() - start)
            windows += len(features)

        async def triton_direct(index: int) -> None:
            features = clip_windows[index]
            request = triton.InferInput(input_name, list(features.shape), "FP32")
            request.set_data_from_numpy(features)
            start = time.perf_counter()
            client.infer(model, [request], outputs=[triton.InferRequestedOutput("probabilities")])
            times["triton"].append(time.perf_counter() - start)

        async def served(index: int) -> None:
            start = time.perf_counter()
            response = await stub.AnalyzeAudio(audio_pb2.AnalyzeAudioRequest(audio=clips[index]), timeout=120)
            times["served"].append(time.perf_counter() - start)
            times["service"].append(response.latency_ms / 1000)

        paths = [in_process, triton_direct, served]
        for path in paths:
            await path(0)
        for key in times:
            times[key].clear()
        windows = 0
        before = stage_sums(metrics_url)
        for i in range(len(clips)):
            for path in paths[i % 3 :] + paths[: i % 3]:
                await path(i)
        stages = stage_means_ms(before, stage_sums(metrics_url))
    client.close()
    served_s, local_s = np.array(times["served"]), np.array(times["in_process"])
    service_s, model_s, triton_s = np.array(times["service"]), np.array(times["model"]), np.array(times["triton"])
    # Each clip's own differences, so that load that comes and goes cancels out.
    overhead = {
        "served_minus_in_process": float(np.median(served_s - local_s) * 1000),
        "grpc_hop": float(np.median(served_s - service_s) * 1000),
        "triton_minus_model": float(np.median(triton_s - model_s) * 1000),
    }
    overhead["rest"] = overhead["served_minus_in_process"] - overhead["grpc_hop"] - overhead["triton_minus_model"]
    return {
        "in_process": {
            "p50_ms": p50_ms(local_s),
            "mean_ms": float(local_s.mean() * 1000),
            "model_ms_per_clip": float(model_s.mean() * 1000),
            "model_ms_per_window": float(model_s.sum() / windows * 1000),
            "windows": windows,
        },
        "triton_direct": {"p50_ms": p50_ms(triton_s), "mean_ms": float(triton_s.mean() * 1000)},
        "served_c1": {
            "p50_ms": p50_ms(served_s),
            "p99_ms": float(np.percentile(served_s, 99) * 1000),
            "mean_ms": float(served_s.mean() * 1000),
            "service_p50_ms": p50_ms(service_s),
            "service_stages_ms": stages,
        },
        "overhead_ms_median_of_pairs": overhead,
    }


async def through_grpc(
    address: str, clips: list[bytes], concurrency: int, transcribe: bool = False
) -> dict[str, float]:
    async with grpc.aio.insecure_channel(address, options=grpc_options(64 * 1024 * 1024)) as channel:
        stub = audio_pb2_grpc.AudioServiceStub(channel)
        await stub.AnalyzeAudio(audio_pb2.AnalyzeAudioRequest(audio=clips[0], transcribe=transcribe), timeout=120)
        queue = list(clips)
        latencies: list[float] = []
        service_ms: list[float] = []

        async def worker() -> None:
            while queue:
                data = queue.pop()
                t = time.perf_counter()
                response = await stub.AnalyzeAudio(
                    audio_pb2.AnalyzeAudioRequest(audio=data, transcribe=transcribe), timeout=120
                )
                latencies.append(time.perf_counter() - t)
                service_ms.append(response.latency_ms)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        total = time.perf_counter() - start
    return {
        "clips_per_s": len(clips) / total,
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
        "mean_ms": float(np.mean(latencies) * 1000),
        "service_p50_ms": float(np.percentile(service_ms, 50)),
        "service_mean_ms": float(np.mean(service_ms)),
    }


def print_side_by_side(model: str, row: dict[str, object]) -> None:
    local, direct, served = row["in_process"], row["triton_direct"], row["served_c1"]
    overhead = row["overhead_ms_median_of_pairs"]
    assert isinstance(local, dict) and isinstance(direct, dict) and isinstance(served, dict)
    assert isinstance(overhead, dict)
    print(
        f"{model} per clip, in turn: in-process p50 {local['p50_ms']:.1f} ms (model "
        f"{local['model_ms_per_clip']:.1f} ms, {local['model_ms_per_window']:.2f} ms/window); Triton direct p50 "
        f"{direct['p50_ms']:.1f} ms; served p50 {served['p50_ms']:.1f} ms (the service's own "
        f"{served['service_p50_ms']:.1f} ms)",
        flush=True,
    )
    print(
        f"{model} served - in-process {overhead['served_minus_in_process']:+.1f} ms = gRPC hop "
        f"{overhead['grpc_hop']:.1f} + Triton - model {overhead['triton_minus_model']:+.1f} + the rest "
        f"{overhead['rest']:+.1f} (medians of the per-clip differences); service stages "
        f"{ {k: round(v, 1) for k, v in served['service_stages_ms'].items()} }",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--models", default=",".join(SPEECH_MODELS), help="Triton models to compare")
    parser.add_argument("--asr", action="store_true", help="also measure AnalyzeAudio with transcription")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args(argv)
    results: dict[str, object] = {"clips": args.clips}
    models = [m for m in args.models.split(",") if model_file(m).exists()]
    if not models:
        raise SystemExit(f"none of {args.models} has its ONNX file (run `bash scripts/setup.sh`)")
    with tempfile.TemporaryDirectory() as work:
        clips = make_clips(Path(work), args.clips)
        seconds = [decode_audio(c).duration_s for c in clips]
        results["clip_seconds_mean"] = float(np.mean(seconds))
        for model in models:
            row: dict[str, object] = {"onnx_mb": model_file(model).stat().st_size / 1e6}
            results[model] = row
            config = replace(
                StackConfig.ephemeral(Path(work) / f"stack-{model}", services=("audio",)),
                extra_env={"EMOMESH_AUDIO_MODEL": model},
            )
            with Stack(config) as stack:
                address = stack.config.address("audio")
                metrics_url = f"http://127.0.0.1:{stack.config.metrics_port('audio')}/metrics"
                row.update(asyncio.run(side_by_side(address, stack.triton.grpc_url, model, clips, metrics_url)))
                print_side_by_side(model, row)
                served = asyncio.run(through_grpc(address, clips, args.concurrency))
                row[f"grpc_triton_c{args.concurrency}"] = served
                print(
                    f"{model} gRPC + Triton, {args.concurrency} concurrent: {served['clips_per_s']:.1f} clips/s "
                    f"(p50 {served['p50_ms']:.1f} ms, p99 {served['p99_ms']:.1f} ms)",
                    flush=True,
                )
                if args.asr:
                    served = asyncio.run(through_grpc(address, clips[: max(4, args.clips // 4)], 1, transcribe=True))
                    row["grpc_triton_with_asr_c1"] = served
                    print(f"{model} gRPC + Triton + Whisper, 1 concurrent: {served['clips_per_s']:.2f} clips/s")
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
