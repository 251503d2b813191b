"""Vision throughput and latency: faces/s with 1, 8 and 32 faces per request through gRPC + the vision
service + Triton, against the same model run in-process with onnxruntime, in one run; and AnalyzeImage
p50 (decode + face detection + crop + model) against the in-process model time and the in-process
pipeline.

    OMP_NUM_THREADS=1 python -m bench.bench_vision --requests 60 --calls 200 --out runs/bench/vision.json

Starts an ephemeral embedded stack with only the vision service (tritonserver + `services.vision.server`).
Faces per request are sent as AnalyzeImages of N 64x64 face crops with whole_image_is_face, so the
figures measure transport, decode and the model rather than the detector; AnalyzeImage uses skimage's
512x512 astronaut photo (one face, detected)."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import grpc
import numpy as np
import onnxruntime as ort

from bench.common import CPU_PROVIDERS, ort_session
from emomesh.server import grpc_options
from emomesh.stack import Stack, StackConfig
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.vision.config import VisionSettings
from services.vision.faces import HaarFaceDetector
from services.vision.preprocess import crop_faces, decode_image

# The model the vision service serves by default (EMOMESH_VISION_MODEL unset): baselines run the same file.
MODEL = VisionSettings.from_env({}).model_name
FACES_PER_REQUEST = (1, 8, 32)


def astronaut_jpeg() -> bytes:
    from skimage import data

    return cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))[1].tobytes()


def face_crops(count: int) -> list[bytes]:
    """Distinct 64x64 gray face crops (the astronaut's face, shifted a pixel or two each)."""
    from skimage import data

    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    crops = []
    for i in range(count):
        dx, dy = i % 5, (i // 5) % 5
        crop = cv2.resize(gray[40 + dy : 200 + dy, 160 + dx : 310 + dx], (64, 64), interpolation=cv2.INTER_AREA)
        crops.append(cv2.imencode(".png", crop)[1].tobytes())
    return crops


def session(providers: Sequence[str] = CPU_PROVIDERS) -> ort.InferenceSession:
    return ort_session(MODEL, providers)


class ImagePipeline:
    """AnalyzeImage's work in-process: decode, Haar face detection (at most 10 faces), 64x64 crops and
    the model on all faces in one batch, as services/vision does it."""

    def __init__(self, providers: Sequence[str] = CPU_PROVIDERS) -> None:
        self.model = session(providers)
        self.detector = HaarFaceDetector(40, 1280)

    def model_only(self, faces: np.ndarray) -> np.ndarray:
        return self.model.run(["probabilities"], {"face_gray": faces})[0]

    def faces(self, image: bytes) -> np.ndarray:
        gray = decode_image(image, 20 << 20, 40_000_000)
        return crop_faces(gray, self.detector.detect_one(gray)[:10], (64, 64), 0.1)

    def __call__(self, image: bytes) -> np.ndarray:
        faces = self.faces(image)
        return self.model_only(faces) if len(faces) else np.zeros((0, 7), np.float32)


def in_process_faces(crops: list[bytes], faces: int, requests: int) -> dict[str, float]:
    """faces/s of the model alone, and of PNG decode + model, on batches of `faces` crops."""
    model = session()
    batch = np.stack([decode_image(c, 1 << 20, 1 << 20) for c in crops[:faces]])[:, None].astype(np.float32)
    model.run(None, {"face_gray": batch})
    start = time.perf_counter()
    for _ in range(requests):
        model.run(["probabilities"], {"face_gray": batch})
    model_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(requests):
        decoded = np.stack([decode_image(c, 1 << 20, 1 << 20) for c in crops[:faces]])[:, None].astype(np.float32)
        model.run(["probabilities"], {"face_gray": decoded})
    pipeline_s = time.perf_counter() - start
    return {"model_faces_per_s": faces * requests / model_s, "decode_model_faces_per_s": faces * requests / pipeline_s}


def in_process_image(jpeg: bytes, calls: int) -> dict[str, float]:
    """p50 of the model alone on one face, and of decode + detect + crop + model on the photo."""
    pipeline = ImagePipeline()
    face = pipeline.faces(jpeg)[:1]
    pipeline.model_only(face)
    model_ms, pipeline_ms = [], []
    for _ in range(calls):
        t = time.perf_counter()
        pipeline.model_only(face)
        model_ms.append((time.perf_counter() - t) * 1000)
    for _ in range(calls):
        t = time.perf_counter()
        pipeline(jpeg)
        pipeline_ms.append((time.perf_counter() - t) * 1000)
    return {"model_p50_ms": float(np.median(model_ms)), "pipeline_p50_ms": float(np.median(pipeline_ms))}


async def grpc_faces(address: str, crops: list[bytes], faces: int, requests: int, concurrency: int) -> dict[str, float]:
    request = vision_pb2.AnalyzeImagesRequest(
        images=[vision_pb2.AnalyzeImageRequest(image=c, whole_image_is_face=True) for c in crops[:faces]]
    )
    async with grpc.aio.insecure_channel(address, options=grpc_options(64 << 20)) as channel:
        stub = vision_pb2_grpc.VisionServiceStub(channel)
        for _ in range(3):  # warm-up: connection, Triton instance, thread pool
            await stub.AnalyzeImages(request, timeout=60)
        remaining = requests
        latencies: list[float] = []

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                response = await stub.AnalyzeImages(request, timeout=60)
                latencies.append(time.perf_counter() - t)
                assert sum(len(r.faces) for r in response.results) == faces

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        total = time.perf_counter() - start
    return {"faces_per_s": faces * requests / total, "p50_ms": float(np.median(latencies) * 1000)}


async def grpc_image(address: str, jpeg: bytes, calls: int) -> dict[str, float]:
    async with grpc.aio.insecure_channel(address, options=grpc_options(64 << 20)) as channel:
        stub = vision_pb2_grpc.VisionServiceStub(channel)
        request = vision_pb2.AnalyzeImageRequest(image=jpeg)
        for _ in range(5):
            await stub.AnalyzeImage(request, timeout=60)
        latencies = []
        for _ in range(calls):
            t = time.perf_counter()
            response = await stub.AnalyzeImage(request, timeout=60)
            latencies.append((time.perf_counter() - t) * 1000)
            assert len(response.faces) == 1
    return {"p50_ms": float(np.median(latencies)), "p99_ms": float(np.percentile(latencies, 99))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=60, help="requests per faces-per-request setting")
    parser.add_argument("--calls", type=int, default=200, help="AnalyzeImage calls for the latency row")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args(argv)
    crops, jpeg = face_crops(max(FACES_PER_REQUEST)), astronaut_jpeg()
    results: dict[str, object] = {"model": MODEL, "requests": args.requests, "calls": args.calls}
    with (
        tempfile.TemporaryDirectory() as work,
        Stack(StackConfig.ephemeral(Path(work) / "stack", services=("vision",))) as stack,
    ):
        address = stack.config.address("vision")
        for faces in FACES_PER_REQUEST:
            local = in_process_faces(crops, faces, args.requests)
            row: dict[str, object] = {"in_process": local}
            for concurrency in sorted({1, args.concurrency}):
                remote = asyncio.run(grpc_faces(address, crops, faces, args.requests, concurrency))
                row[f"grpc_triton_c{concurrency}"] = remote
            results[f"faces_{faces}"] = row
            c1 = row["grpc_triton_c1"]
            cn = row[f"grpc_triton_c{args.concurrency}"]
            assert isinstance(c1, dict) and isinstance(cn, dict)
            print(
                f"{faces:>2} faces/request: in-process model {local['model_faces_per_s']:.0f} faces/s, "
                f"decode+model {local['decode_model_faces_per_s']:.0f}; gRPC+Triton {c1['faces_per_s']:.0f} "
                f"(1 client, p50 {c1['p50_ms']:.1f} ms), {cn['faces_per_s']:.0f} ({args.concurrency} clients); "
                f"in-process/gRPC ratio {local['model_faces_per_s'] / c1['faces_per_s']:.1f}x",
                flush=True,
            )
        local_image = in_process_image(jpeg, args.calls)
        remote_image = asyncio.run(grpc_image(address, jpeg, args.calls))
        results["analyze_image"] = {"in_process": local_image, "grpc_triton": remote_image}
        print(
            f"AnalyzeImage (512x512 photo, 1 face) p50 {remote_image['p50_ms']:.2f} ms over {args.calls} calls; "
            f"in-process model {local_image['model_p50_ms']:.2f} ms "
            f"(ratio {remote_image['p50_ms'] / local_image['model_p50_ms']:.1f}x), "
            f"in-process pipeline {local_image['pipeline_p50_ms']:.2f} ms "
            f"(ratio {remote_image['p50_ms'] / local_image['pipeline_p50_ms']:.2f}x)",
            flush=True,
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
