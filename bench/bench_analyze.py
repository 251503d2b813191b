"""FusionService.Analyze latency per modality subset, against the sum of the in-process model times
of the same work, in one run.

    OMP_NUM_THREADS=1 python -m bench.bench_analyze --requests 40 --out runs/bench/analyze.json

Starts an ephemeral embedded stack (tritonserver + the registered modality services + fusion). For
every non-empty subset of {image, audio, text} whose services are registered, sends `--requests`
sequential Analyze calls (after warm-up) and reports client-side p50/p99. The "in-process" column is
what the same emotion models cost when called directly with onnxruntime (1 thread) on inputs of the
same size as the services' (one 64x64 face; as many log-Mel windows as the audio service scored; as
many tokens as the text service read), summed over the subset's modalities: the floor that decoding,
detection, feature extraction, gRPC hops and Triton add to. Transcription is off (transcript_as_text
= false) except in the extra "audio->text" row, which includes the ASR and the sequential text call.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import grpc
import numpy as np

from bench.bench_audio import AudioPipeline
from bench.bench_text import TextPipeline
from bench.bench_vision import MODEL as VISION_MODEL
from bench.bench_vision import ImagePipeline
from bench.common import CPU_PROVIDERS, ort_session, write_results
from emomesh.labels import modality_name, status_name
from emomesh.paths import model_file
from emomesh.server import grpc_options
from emomesh.stack import SERVICES, Stack, StackConfig
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from services.audio.config import DEFAULT_MODEL as AUDIO_MODEL
from services.fusion.config import DEFAULT_WEIGHTS_FILE
from services.fusion.fuse import fuse_matrix, load_weights_file
from services.text.config import DEFAULT_MODEL as TEXT_MODEL

MODELS = {"image": VISION_MODEL, "audio": AUDIO_MODEL, "text": TEXT_MODEL}
SERVICE_OF = {"image": "vision", "audio": "audio", "text": "text"}
SPOKEN = "I am so happy to see you again, this is wonderful news."
TEXT = "Thank you so much, I love it!"


def inputs(work: Path) -> dict[str, bytes | str]:
    from skimage import data

    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    wav = work / "speech.wav"
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is needed for the speech input")
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), SPOKEN], check=True, capture_output=True)
    return {"image": jpeg.tobytes(), "audio": wav.read_bytes(), "text": TEXT}


def request_for(subset: tuple[str, ...], media: dict[str, bytes | str], transcript: bool) -> fusion_pb2.AnalyzeRequest:
    image, audio, text = media["image"], media["audio"], media["text"]
    assert isinstance(image, bytes) and isinstance(audio, bytes) and isinstance(text, str)
    request = fusion_pb2.AnalyzeRequest(transcript_as_text=transcript)
    if "image" in subset:
        request.image = image
    if "audio" in subset:
        request.audio = audio
    if "text" in subset:
        request.text = text
    return request


class AnalyzePipeline:
    """Analyze's work in-process, one modality after the other (the fusion service calls them in
    parallel over gRPC): the image, audio (no transcription) and text pipelines, then the weighted
    fusion of the first face, the clip and the text with the service's default weights."""

    def __init__(self, providers: Sequence[str] = CPU_PROVIDERS) -> None:
        self.image = ImagePipeline(providers)
        self.audio = AudioPipeline(providers)
        self.text = TextPipeline(providers)
        self.weights = load_weights_file(DEFAULT_WEIGHTS_FILE)

    def __call__(self, media: Mapping[str, bytes | str]) -> np.ndarray:
        probs: dict[str, np.ndarray] = {}
        image, audio, text = media.get("image"), media.get("audio"), media.get("text")
        if isinstance(image, bytes):
            faces = self.image(image)
            probs["vision"] = faces[:1] if len(faces) else np.full((1, 7), np.nan, np.float32)
        if isinstance(audio, bytes):
            probs["audio"] = self.audio(audio)[None]
        if isinstance(text, str):
            probs["text"] = self.text(text)[None]
        return fuse_matrix(probs, self.weights)[0]


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, q))


class InProcessModels:
    """The emotion models straight from the repository, onnxruntime on CPU with one thread."""

    def __init__(self) -> None:
        self.sessions = {m: ort_session(name) for m, name in MODELS.items() if model_file(name).exists()}

    def feeds(self, modality: str, response: fusion_pb2.AnalyzeResponse) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        if modality == "image":
            return {"face_gray": rng.uniform(0, 255, (max(1, len(response.image.faces)), 1, 64, 64)).astype(np.float32)}
        if modality == "audio":
            # The served audio model's own input and feature shape (log-Mel 128x130, or Whisper's 80x310).
            windows = max(1, len(response.audio.windows))
            tensor = self.sessions["audio"].get_inputs()[0]
            return {tensor.name: rng.normal(0, 1, (windows, *tensor.shape[1:])).astype(np.float32)}
        tokens = max(2, response.text.tokens)
        return {
            "input_ids": rng.integers(1000, 2000, (1, tokens)).astype(np.int64),
            "attention_mask": np.ones((1, tokens), np.int64),
        }

    def median_ms(self, modality: str, response: fusion_pb2.AnalyzeResponse, repeats: int = 30) -> float:
        session = self.sessions[modality]
        feeds = self.feeds(modality, response)
        session.run(None, feeds)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - start)
        return float(np.median(times) * 1000)


def run(address: str, available: list[str], media: dict[str, bytes | str], requests: int, warmup: int) -> list[dict]:
    """Benchmarks a running fusion service at address for every subset of the available modalities."""
    subsets: list[tuple[tuple[str, ...], bool]] = [
        (subset, False) for n in range(1, len(available) + 1) for subset in itertools.combinations(available, n)
    ]
    if "audio" in available and "text" in available:
        subsets.append((("audio",), True))  # audio -> transcript -> text
    models = InProcessModels()
    rows: list[dict] = []
    with grpc.insecure_channel(address, options=grpc_options(64 * 1024 * 1024)) as channel:
        fusion = fusion_pb2_grpc.FusionServiceStub(channel)
        for subset, transcript in subsets:
            request = request_for(subset, media, transcript)
            for _ in range(warmup):
                response = fusion.Analyze(request, timeout=120)
            latencies, modality_ms = [], []
            for _ in range(requests):
                start = time.perf_counter()
                response = fusion.Analyze(request, timeout=120)
                latencies.append(time.perf_counter() - start)
                modality_ms.append({r.modality: r.latency_ms for r in response.modalities})
            statuses = {
                modality_name(r.modality): status_name(r.status)
                for r in response.modalities
                if r.status != common_pb2.MODALITY_STATUS_MISSING
            }
            involved = [*subset, "text"] if transcript else list(subset)
            in_process = {m: models.median_ms(m, response) for m in involved if m in models.sessions}
            name = "audio->text" if transcript else "+".join(subset)
            sum_calls = float(np.median([sum(ms.values()) for ms in modality_ms]))
            row = {
                "subset": name,
                "p50_ms": percentile_ms(latencies, 50),
                "p99_ms": percentile_ms(latencies, 99),
                "sum_of_modality_calls_p50_ms": sum_calls,
                "in_process_models_ms": in_process,
                "in_process_sum_ms": sum(in_process.values()),
                "statuses": statuses,
            }
            rows.append(row)
            print(
                f"{name:<18} p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
                f"sum of modality calls {sum_calls:7.1f} ms  in-process models {row['in_process_sum_ms']:6.2f} ms  "
                f"{statuses}",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args(argv)
    registered = {s.name for s in SERVICES}
    available = [m for m in ("image", "audio", "text") if SERVICE_OF[m] in registered]
    wanted = tuple(s for s in ("vision", "audio", "text", "fusion") if s in registered)
    with tempfile.TemporaryDirectory() as work, Stack(StackConfig.ephemeral(Path(work), services=wanted)) as stack:
        rows = run(stack.config.address("fusion"), available, inputs(Path(work)), args.requests, args.warmup)
    write_results(args.out, {"requests": args.requests, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
