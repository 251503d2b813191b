"""Emomesh's vision service against the `fer` package (justinshenk/fer: OpenCV Haar + the FER2013
mini-Xception on TensorFlow/Keras), side by side in one run: per-photo time and faces on the 512x512
astronaut photo, and accuracy and per-image time on a folder of labelled face crops (FER2013 val).

    python -m bench.bench_fer_peer --fer2013 /work/shared/data/fer2013 --calls 100 \\
        --out runs/bench/fer_peer.json

`fer` is not an Emomesh dependency: the bench creates a virtualenv of its own at .bench/fer-peer
(PEER_REQUIREMENTS, pinned; `fer` itself without its dependencies, since it lists facenet-pytorch,
moviepy and others that `detect_emotions` with its default Haar detector never imports) and runs
bench/fer_peer_worker.py there. The first run downloads TensorFlow from the package index (~250 MB).

Both sides do the same work per photo (read the file, detect, classify), in turn, call for call, so
both see the same machine load: Emomesh is timed at the client (AnalyzeImage over gRPC through the
vision service and Triton, the defaults of an ephemeral stack), `fer` inside its own process (no
transport). `fer` 25.10 runs its model on TensorFlow Lite (XNNPACK) with the environment the bench
was started with; the local Triton runs each model on one onnxruntime thread. Crops go one at a time
on both sides: `fer` through its public API with the whole crop as the face rectangle (its Haar
detector finds no face in 48x48 crops), Emomesh through `emomesh eval`'s runner with
`whole_image_is_face`, concurrency 1."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.common import write_results
from emomesh.evaluation.adapters import image_folder, subsample
from emomesh.evaluation.metrics import classification_metrics
from emomesh.evaluation.runner import run_eval
from emomesh.labels import LABELS
from emomesh.paths import PROJECT_ROOT
from emomesh.server import grpc_options
from emomesh.stack import Stack, StackConfig
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc

PEER_VENV = PROJECT_ROOT / ".bench" / "fer-peer"
PEER_PACKAGE = "fer==25.10.3"
PEER_REQUIREMENTS = (
    "tensorflow-cpu==2.20.0",
    "opencv-python-headless==4.12.0.88",
    "pandas==3.1.1",
    "requests==2.34.2",
    "pillow==13.0.0",
    "tqdm==4.70.1",
    # fer imports pkg_resources, which setuptools 81 removes.
    "setuptools==65.5.0",
)
WORKER = Path(__file__).with_name("fer_peer_worker.py")
PHOTO = PROJECT_ROOT / "samples" / "astronaut.jpg"


def peer_python(path: Path = PEER_VENV) -> Path:
    """The peer virtualenv's interpreter, creating or updating the virtualenv when its pins changed."""
    stamp = path / ".requirements"
    wanted = hashlib.sha256("\n".join((PEER_PACKAGE, *PEER_REQUIREMENTS)).encode()).hexdigest()
    python = path / "bin" / "python"
    if stamp.exists() and stamp.read_text() == wanted and python.exists():
        return python
    print(f"creating the peer virtualenv {path} (fer + TensorFlow; downloads ~250 MB once)", flush=True)
    venv.create(path, with_pip=True, clear=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", PEER_PACKAGE], check=True)
    subprocess.run([*pip, *PEER_REQUIREMENTS], check=True)
    stamp.write_text(wanted)
    return python


class PeerWorker:
    """bench/fer_peer_worker.py in the peer virtualenv, one JSON command and reply per line."""

    def __init__(self, python: Path) -> None:
        env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
        self.process = subprocess.Popen(
            [str(python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self._reply()  # {"ready": true} once TensorFlow and the model are loaded

    def _reply(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fer peer worker exited with {self.process.wait()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def call(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.median(values)), "p99_ms": float(np.percentile(values, 99)), "n": len(values)}


async def photo_side_by_side(address: str, peer: PeerWorker, calls: int) -> dict[str, Any]:
    """AnalyzeImage and fer's detect_emotions on the same photo file, call for call in turn."""
    image = PHOTO.read_bytes()
    emomesh_ms, peer_ms = [], []
    emomesh_faces, peer_faces = [], []
    async with grpc.aio.insecure_channel(address, options=grpc_options(64 << 20)) as channel:
        stub = vision_pb2_grpc.VisionServiceStub(channel)
        for call in range(calls + 5):
            start = time.perf_counter()
            # Read the file as fer reads it, so both sides time the same work.
            request = vision_pb2.AnalyzeImageRequest(image=PHOTO.read_bytes())
            response = await stub.AnalyzeImage(request, timeout=60)
            elapsed = (time.perf_counter() - start) * 1000
            reply = peer.call({"op": "photo", "path": str(PHOTO)})
            if call >= 5:  # the first calls warm both sides up
                emomesh_ms.append(elapsed)
                peer_ms.append(float(reply["ms"]))
            emomesh_faces = [LABELS[int(np.argmax(face.distribution.probabilities))] for face in response.faces]
            peer_faces = [face["label"] for face in reply["faces"]]
    return {
        "photo": str(PHOTO.relative_to(PROJECT_ROOT)),
        "bytes": len(image),
        "emomesh": percentiles(emomesh_ms) | {"faces": emomesh_faces},
        "fer": percentiles(peer_ms) | {"faces": peer_faces},
    }


def val_crops(root: Path, split: str, limit: int | None) -> list[tuple[Path, str]]:
    """The crops `run_eval` scores for the same arguments (the same adapter and seeded subset), so
    both sides classify the same faces."""
    return [(s.path, s.label) for s in subsample(image_folder(root, split), limit) if s.path is not None]


def crops_side_by_side(
    address: str, peer: PeerWorker, root: Path, split: str, limit: int | None, work: Path
) -> dict[str, Any]:
    crops = val_crops(root, split, limit)
    truth = [label for _, label in crops]
    reply = peer.call({"op": "crops", "paths": [str(path) for path, _ in crops]})
    fer_metrics = classification_metrics(truth, reply["labels"])
    result = run_eval(
        root,
        work / "eval",
        address=address,
        adapter="image-folder",
        split=split,
        max_samples=limit,
        concurrency=1,
        face_crops=True,
        resume=False,
        progress=lambda done, total: None,
    )
    ours = result.metrics
    assert hasattr(ours, "accuracy") and hasattr(ours, "macro_f1")
    return {
        "dataset": f"{root.name} ({split})",
        "samples": len(crops),
        "emomesh": {
            "model": result.model,
            "accuracy": ours.accuracy,
            "macro_f1": ours.macro_f1,
            "ms_per_image": result.seconds * 1000 / len(crops),
        },
        "fer": {
            "accuracy": fer_metrics.accuracy,
            "macro_f1": fer_metrics.macro_f1,
            "ms_per_image": float(reply["seconds"]) * 1000 / len(crops),
        },
    }


def print_table(results: dict[str, Any]) -> None:
    photo = results["photo"]
    print("| | Emomesh | fer |")
    print("|---|---:|---:|")
    print(
        f"| photo p50 / p99 ms | {photo['emomesh']['p50_ms']:.1f} / {photo['emomesh']['p99_ms']:.1f} "
        f"| {photo['fer']['p50_ms']:.1f} / {photo['fer']['p99_ms']:.1f} |"
    )
    print(f"| photo faces | {', '.join(photo['emomesh']['faces'])} | {', '.join(photo['fer']['faces'])} |")
    crops = results.get("crops")
    if crops:
        ours, theirs = crops["emomesh"], crops["fer"]
        print(
            f"| {crops['dataset']} accuracy / macro-F1 | {ours['accuracy']:.4f} / {ours['macro_f1']:.4f} "
            f"| {theirs['accuracy']:.4f} / {theirs['macro_f1']:.4f} |"
        )
        print(f"| {crops['dataset']} ms per image | {ours['ms_per_image']:.1f} | {theirs['ms_per_image']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fer2013", type=Path, help="FER2013 folder (labels.csv); without it, the photo only")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-crops", type=int, help="the first N crops of the split (default: all)")
    parser.add_argument("--calls", type=int, default=100, help="photo calls per side")
    parser.add_argument("--venv", type=Path, default=PEER_VENV, help="the peer virtualenv (created if missing)")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args(argv)
    python = peer_python(args.venv)
    results: dict[str, Any] = {"peer": PEER_PACKAGE, "peer_requirements": list(PEER_REQUIREMENTS)}
    with (
        tempfile.TemporaryDirectory() as work,
        Stack(StackConfig.ephemeral(Path(work) / "stack", services=("vision",))) as stack,
    ):
        address = stack.config.address("vision")
        peer = PeerWorker(python)
        try:
            results["photo"] = asyncio.run(photo_side_by_side(address, peer, args.calls))
            if args.fer2013:
                results["crops"] = crops_side_by_side(
                    address, peer, args.fer2013, args.split, args.max_crops, Path(work)
                )
        finally:
            peer.close()
    print_table(results)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
