"""Measures where the eyes sit in the expression model's training faces: the constants of the eye
alignment (preprocess.EYE_DISTANCE, EYE_Y) that make an aligned crop from a photo frame the face as
the training crops frame it.

    OMP_NUM_THREADS=1 python -m services.vision.calibrate_alignment --data /work/shared/data/fer2013 \\
        --split train --max-images 6000

Runs BlazeFace short range in-process (the detector for faces that fill the frame; the same ONNX file
Triton serves) on the training crops, each letterboxed whole as the service would, and prints the
medians over the faces found of the eye distance and of the eyes' midpoint, as fractions of the crop's
side. Training faces only: the evaluation sets (FER2013 val, CK+48, JAFFE) choose nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import cv2
import numpy as np

from emomesh.evaluation.adapters import image_folder
from emomesh.paths import model_file
from services.vision.blazeface import BlazeFaceDetector, LocalBlazeFace

DETECTOR_MODEL = "blazeface_short_range"


def eye_positions(paths: list[Path], detector: BlazeFaceDetector) -> np.ndarray:
    """[M, 3] (eye distance, midpoint x, midpoint y) as fractions of each image's side, for the images
    where a face with eyes was found."""
    found = []
    for path in paths:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        faces = asyncio.run(detector.detect([cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)]))[0]
        if not faces or faces[0].right_eye is None or faces[0].left_eye is None:
            continue
        right, left = faces[0].right_eye, faces[0].left_eye
        side = max(gray.shape)
        distance = float(np.hypot(left.x - right.x, left.y - right.y))
        found.append((distance / side, (left.x + right.x) / 2 / side, (left.y + right.y) / 2 / side))
    return np.asarray(found, dtype=np.float64).reshape(-1, 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="face-crop folder with labels.csv")
    parser.add_argument("--split", default="train")
    parser.add_argument("--max-images", type=int, default=6000, help="a seeded sample of this many crops")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = [sample.path for sample in image_folder(args.data, args.split) if sample.path is not None]
    rng = np.random.default_rng(args.seed)
    sample = [paths[i] for i in sorted(rng.choice(len(paths), min(args.max_images, len(paths)), replace=False))]
    # Tiny crops: accept faces down to a fifth of a 48-pixel crop; no tiles (the face fills the crop).
    detector = BlazeFaceDetector(LocalBlazeFace(model_file(DETECTOR_MODEL)), min_face_px=10, tiling="off")
    eyes = eye_positions(sample, detector)
    medians = np.median(eyes, axis=0) if len(eyes) else np.full(3, np.nan)
    quartiles = np.percentile(eyes, [25, 75], axis=0) if len(eyes) else np.full((2, 3), np.nan)
    print(
        json.dumps(
            {
                "images": len(sample),
                "with_eyes": len(eyes),
                "eye_distance": {"median": medians[0], "iqr": quartiles[:, 0].tolist()},
                "eye_x": {"median": medians[1], "iqr": quartiles[:, 1].tolist()},
                "eye_y": {"median": medians[2], "iqr": quartiles[:, 2].tolist()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
