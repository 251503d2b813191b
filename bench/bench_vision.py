"""Vision throughput and latency: faces/s with 1, 8 and 32 faces per request through gRPC + the vision
service + Triton, against the same model run in-process with onnxruntime, in one run; and AnalyzeImage
p50 (decode + face detection + crop + model) against the in-process model time and the in-process
pipeline.

    OMP_NUM_THREADS=1 python -m bench.bench_vision --requests 60 --calls 200 --out runs/bench/vision.json
    OMP_NUM_THREADS=1 python -m bench.bench_vision --only-detectors --calls 60 --requests 20

Starts an ephemeral embedded stack with only the vision service (tritonserver + `services.vision.server`).
The detector section starts two more vision services on the same Triton (BlazeFace short range, and
EMOMESH_VISION_DETECTOR=haar) and times the three side by side, call for call in turn (so all see the
same machine load):
AnalyzeImage on the photo at concurrency 1, and faces/s of AnalyzeVideo with 8 frames per request
(a FrameSequence of 8 shifted copies of the photo, every frame sampled: one detector call for all 8
with BlazeFace, 8 Haar passes in the service's CPU).
Faces per request are sent as AnalyzeImages of N face crops (the model's input size) with
whole_image_is_face, so the figures measure transport, decode and the model rather than the detector;
AnalyzeImage uses skimage's 512x512 astronaut photo (one face, detected)."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import cv2
import grpc
import numpy as np
import onnxruntime as ort

from bench.common import CPU_PROVIDERS, expression_input, ort_session, write_results
from emomesh.paths import MODEL_REPOSITORY, PROJECT_ROOT
from emomesh.procs import free_port, grpc_healthy, stop_process, wait_until
from emomesh.server import grpc_options
from emomesh.stack import SERVICES, Stack, StackConfig
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.vision.blazeface import BlazeFaceDetector, LocalBlazeFace
from services.vision.config import VisionSettings
from services.vision.preprocess import crop_faces, decode_image, equalize_faces, to_gray

# The vision service's defaults (EMOMESH_VISION_* unset): baselines run the same model files.
SETTINGS = VisionSettings.from_env({})
MODEL = SETTINGS.model_name
MODEL_SIZE, MODEL_EQUALIZES = expression_input(MODEL)
FACES_PER_REQUEST = (1, 8, 32)


def astronaut_jpeg() -> bytes:
    from skimage import data

    return cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))[1].tobytes()


def face_crops(count: int) -> list[bytes]:
    """Distinct gray face crops of the model's input size (the astronaut's face, shifted a pixel or two
    each)."""
    from skimage import data

    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    crops = []
    for i in range(count):
        dx, dy = i % 5, (i // 5) % 5
        face = gray[40 + dy : 200 + dy, 160 + dx : 310 + dx]
        crop = cv2.resize(face, (MODEL_SIZE[1], MODEL_SIZE[0]), interpolation=cv2.INTER_AREA)
        crops.append(cv2.imencode(".png", crop)[1].tobytes())
    return crops


def session(providers: Sequence[str] = CPU_PROVIDERS) -> ort.InferenceSession:
    return ort_session(MODEL, providers)


class ImagePipeline:
    """AnalyzeImage's work in-process: decode, face detection with the service's default detector
    (BlazeFace, its ONNX file run by onnxruntime; at most 10 faces), aligned crops (equalised when the
    model wants them so) and the model on all faces in one batch, as services/vision does it."""

    def __init__(self, providers: Sequence[str] = CPU_PROVIDERS) -> None:
        self.model = session(providers)
        self.detector = BlazeFaceDetector(
            LocalBlazeFace(MODEL_REPOSITORY / SETTINGS.detector_model / "1" / "model.onnx"),
            SETTINGS.min_face_px,
            SETTINGS.detect_min_score,
            SETTINGS.detect_tiling,
        )

    def model_only(self, faces: np.ndarray) -> np.ndarray:
        return self.model.run(["probabilities"], {"face_gray": faces})[0]

    def faces(self, image: bytes) -> np.ndarray:
        rgb = decode_image(image, 20 << 20, 40_000_000, color=True)
        (found,) = asyncio.run(self.detector.detect([rgb]))
        crops = crop_faces(to_gray(rgb), found[:10], MODEL_SIZE, SETTINGS.face_margin)
        return equalize_faces(crops) if MODEL_EQUALIZES else crops

    def __call__(self, image: bytes) -> np.ndarray:
        faces = self.faces(image)
        return self.model_only(faces) if len(faces) else np.zeros((0, 7), np.float32)


def in_process_faces(crops: list[bytes], faces: int, requests: int) -> dict[str, float]:
    """faces/s of the model alone, and of PNG decode (+ equalisation when the model wants it) + model,
    on batches of `faces` crops."""
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
        model.run(["probabilities"], {"face_gray": equalize_faces(decoded) if MODEL_EQUALIZES else decoded})
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


# The detector variants timed side by side: name -> the second vision service's settings (the
# stack's own vision service runs the defaults, BlazeFace full range, as `blazeface`).
DETECTOR_VARIANTS = {
    "blazeface_short": {"EMOMESH_VISION_DETECTOR_MODEL": "blazeface_short_range"},
    "haar": {"EMOMESH_VISION_DETECTOR": "haar"},
}


@contextmanager
def extra_vision(stack: Stack, name: str, overrides: dict[str, str]) -> Iterator[str]:
    """Another vision service on the stack's Triton with other settings; yields its address."""
    spec = next(s for s in SERVICES if s.name == "vision")
    address = f"127.0.0.1:{free_port()}"
    env = stack.service_env(spec) | {
        "EMOMESH_VISION_LISTEN": address,
        "EMOMESH_VISION_METRICS_PORT": "0",
        **overrides,
    }
    log_path = stack.config.state_dir / "logs" / f"vision-{name}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", spec.module],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=PROJECT_ROOT,
        )
    try:
        wait_until(lambda: grpc_healthy(address), 120, f"vision service ({name})", process, log_path)
        yield address
    finally:
        stop_process(process)


def video_frames(jpeg: bytes, count: int = 8) -> list[bytes]:
    """`count` frames: the photo shifted 8 px a frame (so every frame is a distinct image)."""
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return [cv2.imencode(".jpg", np.roll(bgr, 8 * i, axis=1))[1].tobytes() for i in range(count)]


async def alternating(
    calls: dict[str, Callable[[], Awaitable[int]]], rounds: int, concurrency: int = 1
) -> dict[str, dict[str, float]]:
    """Each round runs every call once (`concurrency` at a time), the calls in turn, so that the
    machine's load falls on all of them alike. A call returns the faces it found."""
    for call in calls.values():
        for _ in range(3):
            await call()
    latencies: dict[str, list[float]] = {name: [] for name in calls}
    busy: dict[str, float] = dict.fromkeys(calls, 0.0)
    faces: dict[str, int] = dict.fromkeys(calls, 0)
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            found = await asyncio.gather(*(call() for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
            latencies[name].append(elapsed)
            busy[name] += elapsed
            faces[name] += sum(found)
    return {
        name: {
            "p50_ms": float(np.median(latencies[name]) * 1000),
            "p99_ms": float(np.percentile(latencies[name], 99) * 1000),
            "faces_per_s": faces[name] / busy[name],
        }
        for name in calls
    }


async def detectors_side_by_side(
    addresses: dict[str, str], jpeg: bytes, calls: int, requests: int, concurrency: int
) -> dict[str, object]:
    frames = video_frames(jpeg)
    image_request = vision_pb2.AnalyzeImageRequest(image=jpeg)
    video_request = vision_pb2.AnalyzeVideoRequest(
        frames=vision_pb2.FrameSequence(images=frames, fps=8.0), every_nth_frame=1
    )
    channels = {name: grpc.aio.insecure_channel(a, options=grpc_options(64 << 20)) for name, a in addresses.items()}
    try:
        stubs = {name: vision_pb2_grpc.VisionServiceStub(channel) for name, channel in channels.items()}

        def image_call(stub: vision_pb2_grpc.VisionServiceStub) -> Callable[[], Awaitable[int]]:
            async def call() -> int:
                response = await stub.AnalyzeImage(image_request, timeout=60)
                return len(response.faces)

            return call

        def video_call(stub: vision_pb2_grpc.VisionServiceStub) -> Callable[[], Awaitable[int]]:
            async def call() -> int:
                response = await stub.AnalyzeVideo(video_request, timeout=60)
                return sum(len(f.faces) for f in response.frames)

            return call

        results: dict[str, object] = {
            "analyze_image_c1": await alternating({n: image_call(s) for n, s in stubs.items()}, calls),
            "video_8_frames_c1": await alternating({n: video_call(s) for n, s in stubs.items()}, requests),
        }
        if concurrency > 1:
            results[f"video_8_frames_c{concurrency}"] = await alternating(
                {n: video_call(s) for n, s in stubs.items()}, requests, concurrency
            )
        return results
    finally:
        for channel in channels.values():
            await channel.close()


def print_detectors(results: dict[str, object]) -> None:
    for key, rows in results.items():
        assert isinstance(rows, dict)
        cells = [
            f"{name} p50 {row['p50_ms']:.1f} ms, {row['faces_per_s']:.1f} faces/s "
            f"(Haar/{name} time {rows['haar']['p50_ms'] / row['p50_ms']:.2f}x)"
            for name, row in rows.items()
        ]
        print(f"{key}: " + "; ".join(cells), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=60, help="requests per faces-per-request setting")
    parser.add_argument("--calls", type=int, default=200, help="AnalyzeImage calls for the latency row")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, help="JSON results")
    parser.add_argument("--only-detectors", action="store_true", help="only the BlazeFace/Haar side-by-side rows")
    args = parser.parse_args(argv)
    crops, jpeg = face_crops(max(FACES_PER_REQUEST)), astronaut_jpeg()
    results: dict[str, object] = {"model": MODEL, "requests": args.requests, "calls": args.calls}
    with (
        tempfile.TemporaryDirectory() as work,
        Stack(StackConfig.ephemeral(Path(work) / "stack", services=("vision",))) as stack,
    ):
        address = stack.config.address("vision")
        with ExitStack() as services:
            addresses = {"blazeface": address}
            for name, overrides in DETECTOR_VARIANTS.items():
                addresses[name] = services.enter_context(extra_vision(stack, name, overrides))
            detectors = asyncio.run(
                detectors_side_by_side(addresses, jpeg, args.calls, args.requests, args.concurrency)
            )
        results["detectors"] = detectors
        print_detectors(detectors)
        for faces in () if args.only_detectors else FACES_PER_REQUEST:
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
        if args.only_detectors:
            write_results(args.out, results)
            return 0
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
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
