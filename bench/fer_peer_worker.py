"""Runs the `fer` package (justinshenk/fer: Haar + mini-Xception on TensorFlow) for bench/bench_fer_peer.py,
inside the peer virtualenv that bench creates; it imports nothing from Emomesh.

Protocol: one JSON command per stdin line, one JSON reply per stdout line.
- {"op": "photo", "path": P}: one `FER().detect_emotions(P)` call (read + detect + classify);
  replies {"ms": wall time, "faces": [{"box": [x, y, w, h], "label": top emotion}]}.
- {"op": "crops", "paths": [...]}: each image as one face crop, through the public API
  `detect_emotions(image, face_rectangles=[(0, 0, w, h)])` (its Haar finds no face in 48x48 crops);
  replies {"labels": [top emotion or null], "seconds": total wall time}."""

from __future__ import annotations

import json
import os
import sys
import time

# TensorFlow's start-up notices would interleave with nothing here (replies go to stdout), but keep
# stderr readable in the bench's log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def top(emotions: dict[str, float]) -> str:
    return max(emotions, key=lambda name: emotions[name])


def main() -> int:
    import cv2
    from fer.fer import FER

    detector = FER()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "photo":
            start = time.perf_counter()
            found = detector.detect_emotions(command["path"])
            ms = (time.perf_counter() - start) * 1000
            faces = [{"box": [int(v) for v in face["box"]], "label": top(face["emotions"])} for face in found]
            print(json.dumps({"ms": ms, "faces": faces}), flush=True)
        elif command["op"] == "crops":
            labels: list[str | None] = []
            start = time.perf_counter()
            for path in command["paths"]:
                image = cv2.imread(path)
                height, width = image.shape[:2]
                found = detector.detect_emotions(image, face_rectangles=[(0, 0, width, height)])
                labels.append(top(found[0]["emotions"]) if found else None)
            print(json.dumps({"labels": labels, "seconds": time.perf_counter() - start}), flush=True)
        else:
            print(json.dumps({"error": f"unknown op {command['op']!r}"}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
