"""Faces found by each detector (BlazeFace short- and full-range, Haar) on labelled image folders, photos
and a sampled video, with the service's own settings and code (services/vision/faces.py,
blazeface.py, preprocess.py), the models run in-process (onnxruntime, 1 thread) so that only the
detectors differ. For folders with a labels.csv (path,label) it also scores the default expression
model on the crops each detector gives (a sample without a face counts as wrong, as in
emomesh.evaluation), BlazeFace both aligned by the eyes (the service) and cropped square around its box.

    OMP_NUM_THREADS=1 python -m bench.detector_counts --folder /work/shared/data/jaffe \\
        --folder /work/shared/data/ckplus48 --photo samples/astronaut.jpg --video synthetic \\
        --out runs/bench/detector_counts.json

`--video synthetic` is tests/video_media.py's clip (the astronaut moving over a plain background,
40 frames of 480x320, every 5th faceless), sampled every frame; a path samples that file's frames
uniformly (32). `--tiling off fallback always` compares BlazeFace's tilings
(EMOMESH_VISION_DETECT_TILING; blazeface.py). `--calibrate` prints where BlazeFace's eyes sit in
the Haar box crop with the default margin, to compare with the framing of the training crops that sets
preprocess.EYE_DISTANCE and EYE_Y (services/vision/calibrate_alignment.py)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bench.common import expression_input, ort_session
from emomesh.labels import LABELS
from emomesh.paths import model_file
from services.vision.blazeface import BlazeFaceDetector, LocalBlazeFace
from services.vision.config import TILINGS, VisionSettings
from services.vision.faces import FaceDetector, HaarFaceDetector
from services.vision.preprocess import DetectedFace, crop_faces, equalize_faces, square_with_margin, to_gray
from services.vision.video import ClipInfo, Sampling, VideoLimits, decode_video

SETTINGS = VisionSettings.from_env({})


@dataclass
class Tally:
    images: int = 0
    with_face: int = 0
    faces: int = 0
    correct: dict[str, int] = field(default_factory=dict)
    detect_s: float = 0.0

    def row(self) -> dict[str, float]:
        out: dict[str, float] = {
            "images": self.images,
            "images_with_a_face": self.with_face,
            "faces": self.faces,
            "detect_ms_per_image": round(1000 * self.detect_s / max(self.images, 1), 2),
        }
        for crop, correct in self.correct.items():
            out[f"accuracy_{crop}"] = round(correct / max(self.images, 1), 4)
        return out


def detectors(tilings: list[str]) -> dict[str, FaceDetector]:
    found: dict[str, FaceDetector] = {"haar": HaarFaceDetector(SETTINGS.min_face_px, SETTINGS.detect_max_side)}
    # The committed ONNX files (services/vision/export_blazeface.py writes them; it needs torch).
    for variant in ("short_range", "full_range"):
        model = LocalBlazeFace(model_file(f"blazeface_{variant}"))
        for tiling in tilings:
            found[f"blazeface_{variant}_{tiling}"] = BlazeFaceDetector(model, SETTINGS.min_face_px, tiling=tiling)
    return found


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def labelled(folder: Path) -> Iterator[tuple[Path, str | None]]:
    labels = folder / "labels.csv"
    if labels.exists():
        with labels.open(newline="") as handle:
            for row in csv.DictReader(handle):
                yield folder / row["path"], row["label"]
    else:
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"):
                yield path, None


def video_frames(source: str) -> list[np.ndarray]:
    limits = VideoLimits(SETTINGS.max_pixels, 256, SETTINGS.max_decoded_frames)
    if source == "synthetic":
        from tests.video_media import face_video

        data: bytes | Path = face_video(40, faceless=tuple(range(4, 40, 5)))
        sampling = Sampling("every_nth", 1)
    else:
        data, sampling = Path(source), Sampling.uniform(32)
    return [frame.image for frame in decode_video(data, sampling, limits, ClipInfo(), color=True)]


class Counter:
    def __init__(self, tilings: list[str]) -> None:
        self.detectors = detectors(tilings)
        self.classifier = ort_session(SETTINGS.model_name)
        self.size, self.equalizes = expression_input(SETTINGS.model_name)
        self.eyes: list[tuple[float, float, float]] = []

    def top_label(self, gray: np.ndarray, face: DetectedFace, aligned: bool) -> str:
        crop = crop_faces(gray, [face if aligned else face.box], self.size, SETTINGS.face_margin)
        crop = equalize_faces(crop) if self.equalizes else crop
        probs = self.classifier.run(None, {self.classifier.get_inputs()[0].name: crop})[0][0]
        return LABELS[int(np.argmax(probs))]

    def count(self, images: Iterator[tuple[np.ndarray, str | None]], calibrate: bool = False) -> dict[str, Tally]:
        tallies = {name: Tally() for name in self.detectors}
        for rgb, label in images:
            gray = to_gray(rgb)
            found: dict[str, list[DetectedFace]] = {}
            for name, detector in self.detectors.items():
                start = time.perf_counter()
                found[name] = asyncio.run(detector.detect([rgb if detector.color else gray]))[0]
                tally = tallies[name]
                tally.detect_s += time.perf_counter() - start
                tally.images += 1
                tally.faces += len(found[name])
                tally.with_face += bool(found[name])
                if label is None:
                    continue
                crops = ("box",) if name == "haar" else ("aligned", "box")
                for crop in crops:
                    hit = bool(found[name]) and self.top_label(gray, found[name][0], crop == "aligned") == label
                    tally.correct[crop] = tally.correct.get(crop, 0) + hit
            blaze = next((faces for name, faces in found.items() if name.startswith("blazeface_full_range")), [])
            if calibrate and found["haar"] and blaze:
                self.calibrate(found["haar"][0], blaze[0])
        return tallies

    def calibrate(self, haar: DetectedFace, blaze: DetectedFace) -> None:
        """Eye distance and eye-midpoint position in the Haar box crop, as fractions of its side."""
        assert blaze.right_eye is not None and blaze.left_eye is not None
        x, y, side = square_with_margin(haar.box, SETTINGS.face_margin)
        distance = float(np.hypot(blaze.left_eye.x - blaze.right_eye.x, blaze.left_eye.y - blaze.right_eye.y))
        mid_x = (blaze.left_eye.x + blaze.right_eye.x) / 2
        mid_y = (blaze.left_eye.y + blaze.right_eye.y) / 2
        self.eyes.append((distance / side, (mid_x - x) / side, (mid_y - y) / side))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, action="append", default=[], help="image folder (labels.csv)")
    parser.add_argument("--photo", type=Path, action="append", default=[])
    parser.add_argument("--video", action="append", default=[], help="a video file, or `synthetic`")
    parser.add_argument("--tiling", nargs="+", choices=TILINGS, default=["fallback"], help="BlazeFace tilings")
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    counter = Counter(args.tiling)
    results: dict[str, dict[str, dict[str, float]]] = {}
    sources: list[tuple[str, Iterator[tuple[np.ndarray, str | None]]]] = []
    for folder in args.folder:
        sources.append((folder.name, ((read_rgb(p), label) for p, label in labelled(folder))))
    for photo in args.photo:
        sources.append((photo.name, iter([(read_rgb(photo), None)])))
    for video in args.video:
        sources.append((f"video:{Path(video).name}", ((frame, None) for frame in video_frames(video))))
    for name, images in sources:
        tallies = counter.count(images, calibrate=args.calibrate)
        results[name] = {detector: tally.row() for detector, tally in tallies.items()}
        for detector, row in results[name].items():
            print(f"{name:24s} {detector:24s} {json.dumps(row)}")
    if args.calibrate and counter.eyes:
        distance, mid_x, mid_y = np.median(np.asarray(counter.eyes), axis=0)
        print(
            f"eyes in the Haar box crop, {len(counter.eyes)} faces: distance {distance:.3f}, midpoint x {mid_x:.3f}, "
            f"y {mid_y:.3f}"
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
