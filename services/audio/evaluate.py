"""Clip-level evaluation of the speech-emotion model on held-out speakers, scored exactly as the
service scores a clip (its analysis windows, mean of the window probabilities).

    python -m services.audio.evaluate --data /work/shared/data/ravdess \\
        --speakers ravdess_actor17,ravdess_actor18,ravdess_actor19,ravdess_actor20

Prints accuracy, macro-F1 and the confusion matrix (rows: true label, columns: predicted)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from emomesh.evaluation.metrics import confusion_matrix, macro_f1
from emomesh.labels import LABELS, NUM_LABELS
from services.audio.config import ACRNN_MODEL_FILE


def clip_probabilities(
    predict: Callable[[np.ndarray], np.ndarray],
    windows: np.ndarray,
    window_clip: np.ndarray,
    n_clips: int,
    batch: int = 64,
) -> np.ndarray:
    """Mean window probabilities per clip. windows: [K, 128, 130]; window_clip: clip index of each window."""
    probs = np.concatenate(
        [predict(windows[i : i + batch, None].astype(np.float32)) for i in range(0, len(windows), batch)]
    )
    sums = np.zeros((n_clips, NUM_LABELS))
    np.add.at(sums, window_clip, probs)
    counts = np.bincount(window_clip, minlength=n_clips)[:, None]
    return sums / np.maximum(counts, 1)


def scores(true: np.ndarray, predicted: np.ndarray) -> dict[str, object]:
    # Macro-F1 over the classes present in the split (EmoDB has no surprise).
    confusion = confusion_matrix(true, predicted)
    return {
        "clips": len(true),
        "accuracy": float((true == predicted).mean()) if len(true) else 0.0,
        "macro_f1": macro_f1(confusion),
        "confusion": confusion.tolist(),
        "labels": list(LABELS),
    }


def format_confusion(confusion: list[list[int]]) -> str:
    short = [label[:5] for label in LABELS]
    lines = ["true\\pred " + " ".join(f"{s:>6}" for s in short)]
    for label, row in zip(short, confusion, strict=True):
        lines.append(f"{label:<9} " + " ".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


def onnx_predictor(model: Path, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(["probabilities"], {"log_mel": x})[0]


def main(argv: list[str] | None = None) -> None:
    from services.audio.dataset import load_features

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", required=True, help="corpus folder with labels.csv")
    parser.add_argument("--speakers", required=True, help="comma-separated speaker ids to evaluate on")
    parser.add_argument("--model", type=Path, default=ACRNN_MODEL_FILE)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/emomesh-audio-cache"))
    parser.add_argument("--json", type=Path, default=None, help="also write the scores here")
    args = parser.parse_args(argv)
    features = load_features(args.data, args.cache_dir)
    speakers = set(args.speakers.split(","))
    probs = clip_probabilities(onnx_predictor(args.model), features.eval_x, features.eval_clip, len(features.clips))
    chosen = np.isin(features.speakers, sorted(speakers))
    if not chosen.any():
        raise SystemExit(f"no clips from speakers {sorted(speakers)}")
    result = scores(features.labels[chosen], probs[chosen].argmax(axis=1))
    print(f"{result['clips']} clips: accuracy {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f}")
    print(format_confusion(result["confusion"]))  # type: ignore[arg-type]
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
