"""Audio emotion cost per clip, for each speech-emotion model, in one run: the work in-process (PyAV
decode, voice activity, the model's features, onnxruntime with one thread) against AnalyzeAudio through
gRPC + the audio service + Triton, with the served path's overhead taken apart.

    OMP_NUM_THREADS=1 python -m bench.bench_audio --clips 40 --concurrency 4 --out runs/bench/audio.json

For each model of --models (default: the ACRNN and the Whisper-encoder model, those whose ONNX file is
there), starts an ephemeral embedded stack with only the audio service (tritonserver +
`services.audio.server`, EMOMESH_AUDIO_MODEL=<model>) and measures, on the same clips:
- in-process: per-clip latency (p50) and the model's share of it;
- Triton direct: the same windows sent straight to Triton's gRPC endpoint (tritonclient), p50;
- served: AnalyzeAudio p50 at concurrency 1 as the client sees it, and as the service itself reports
  it (`latency_ms`); clips/s at --concurrency.
served - in-process = the serving overhead; (Triton direct - model in-process) is Triton's share of it,
(client p50 - service latency_ms) the gRPC hop's, the rest the service's own.
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
    DEFAULT_FEATURES,
    FEATURE_SHAPES,
    analysis_windows,
    decode_audio,
    speech_activity,
)
from services.audio.model import FEATURES_PARAMETER

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


def model_features(model: str) -> str:
    """The features a model reads, from its models.yaml parameters (as the service reads its config)."""
    parameters = load_specs()[model].get("parameters", {})
    return str(parameters.get(FEATURES_PARAMETER, DEFAULT_FEATURES))


class AudioPipeline:
    """AnalyzeAudio's emotion work in-process (no transcription): PyAV decode to 16 kHz mono, voice
    activity, the model's analysis windows, the model on all windows in one batch, mean of the windows."""

    def __init__(self, providers: Sequence[str] = CPU_PROVIDERS, model: str = DEFAULT_MODEL) -> None:
        self.model = ort_session(model, providers)
        self.kind = model_features(model)
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


def in_process(clips: list[bytes], model: str = DEFAULT_MODEL) -> dict[str, float]:
    pipeline = AudioPipeline(model=model)
    pipeline(clips[0])
    model_s, start = 0.0, time.perf_counter()
    windows, per_clip = 0, []
    for data in clips:
        t0 = time.perf_counter()
        features = pipeline.features(data)
        windows += len(features)
        t = time.perf_counter()
        pipeline.model_only(features).mean(axis=0)
        model_s += time.perf_counter() - t
        per_clip.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return {
        "clips_per_s": len(clips) / total,
        "p50_ms": float(np.percentile(per_clip, 50) * 1000),
        "mean_ms": float(np.mean(per_clip) * 1000),
        "model_only_clips_per_s": len(clips) / model_s,
        "model_ms_per_window": model_s / windows * 1000,
        "model_ms_per_clip": model_s / len(clips) * 1000,
        "windows": windows,
    }


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


def triton_direct(url: str, model: str, clips: list[bytes]) -> dict[str, float]:
    """The clips' windows sent straight to Triton (no audio service): Triton's own cost per clip."""
    import tritonclient.grpc as triton

    pipeline_kind = model_features(model)
    client = triton.InferenceServerClient(url)
    name = client.get_model_metadata(model).inputs[0].name
    batches = []
    for data in clips:
        audio = decode_audio(data)
        batches.append(analysis_windows(audio.samples, pipeline_kind).log_mel)
    latencies = []
    for windows in [batches[0], *batches]:
        request = triton.InferInput(name, list(windows.shape), "FP32")
        request.set_data_from_numpy(windows)
        t = time.perf_counter()
        client.infer(model, [request], outputs=[triton.InferRequestedOutput("probabilities")])
        latencies.append(time.perf_counter() - t)
    client.close()
    return {"p50_ms": float(np.percentile(latencies[1:], 50) * 1000)}


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
            row["in_process"] = local = in_process(clips, model)
            print(
                f"{model} in-process (decode+VAD+features+onnxruntime, 1 thread): p50 {local['p50_ms']:.1f} ms, "
                f"mean {local['mean_ms']:.1f} ms per clip, model {local['model_ms_per_clip']:.1f} ms "
                f"({local['model_ms_per_window']:.2f} ms/window)",
                flush=True,
            )
            config = replace(
                StackConfig.ephemeral(Path(work) / f"stack-{model}", services=("audio",)),
                extra_env={"EMOMESH_AUDIO_MODEL": model},
            )
            with Stack(config) as stack:
                address = stack.config.address("audio")
                row["triton_direct"] = direct = triton_direct(stack.triton.grpc_url, model, clips)
                print(f"{model} Triton direct (windows only): p50 {direct['p50_ms']:.1f} ms per clip", flush=True)
                metrics_url = f"http://127.0.0.1:{stack.config.metrics_port('audio')}/metrics"
                for concurrency in sorted({1, args.concurrency}):
                    before = stage_sums(metrics_url)
                    served = asyncio.run(through_grpc(address, clips, concurrency))
                    if concurrency == 1:
                        # Inside the service, per clip: decode, voice activity, features, the Triton call.
                        stages = stage_means_ms(before, stage_sums(metrics_url))
                        served["service_stages_ms"] = stages  # type: ignore[assignment]
                        triton_ms = sum(v for k, v in stages.items() if k.startswith("triton"))
                        print(
                            f"{model} where the served time goes (means, c=1): served {served['mean_ms']:.1f} - "
                            f"in-process {local['mean_ms']:.1f} = {served['mean_ms'] - local['mean_ms']:+.1f} ms; "
                            f"gRPC hop (client - service) {served['mean_ms'] - served['service_mean_ms']:.1f} ms, "
                            f"Triton call - model in-process {triton_ms - local['model_ms_per_clip']:+.1f} ms; "
                            f"stages { ({k: round(v, 1) for k, v in stages.items()}) }",
                            flush=True,
                        )
                    row[f"grpc_triton_c{concurrency}"] = served
                    print(
                        f"{model} gRPC + Triton, {concurrency} concurrent: {served['clips_per_s']:.1f} clips/s "
                        f"(p50 {served['p50_ms']:.1f} ms, service's own {served['service_p50_ms']:.1f} ms, "
                        f"p99 {served['p99_ms']:.1f} ms)",
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
