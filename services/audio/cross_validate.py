"""Leave-speakers-out cross-validation of the speech-emotion model options (services/audio/folds.py).

    OMP_NUM_THREADS=1 python -m services.audio.cross_validate --model acrnn \\
        --data DATA/ravdess --data DATA/emodb_2s --data DATA/casia --out runs/audio_cv/acrnn
    python -m services.audio.cross_validate --model whisper-base \\
        --data DATA/ravdess --data DATA/emodb_2s --data DATA/casia --out runs/audio_cv/whisper-base

Each fold trains on the other folds' speakers, picks its epoch on inner validation speakers drawn from
those (never on the fold), and scores the fold's speakers clip by clip exactly as the service does (the
clip's analysis windows, mean of the window probabilities). Every clip is scored once, by the one model
that never heard its speaker.

Writes <out>/report.json (per corpus: accuracy and macro-F1 per fold, mean and sd; the pooled confusion
matrix) and <out>/predictions.npz (the out-of-fold clip probabilities)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from emomesh.labels import LABELS
from services.audio.evaluate import format_confusion, scores
from services.audio.folds import N_FOLDS, FitPredict, inner_validation_speakers, speaker_fold


def acrnn_fit_predict(args: argparse.Namespace) -> tuple[list[str], FitPredict]:
    from services.audio import train
    from services.audio.dataset import load_features
    from services.audio.evaluate import clip_probabilities, onnx_predictor

    features = load_features(args.data, args.cache_dir)

    def fit_predict(speakers: np.ndarray, test_fold: int, val_speakers: list[str]) -> np.ndarray:
        test = sorted({s for s in speakers if speaker_fold(s) == test_fold})
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "model.onnx"
            train_args = train.parse_args(
                [
                    *[f"--data={d}" for d in args.data],
                    f"--val-speakers={','.join(val_speakers)}",
                    f"--exclude-speakers={','.join(test)}",
                    f"--cache-dir={args.cache_dir}",
                    f"--out={out}",
                    f"--checkpoint={Path(tmp) / 'acrnn.pt'}",
                    f"--width={args.width}",
                    f"--max-minutes={args.max_minutes}",
                    f"--threads={args.threads}",
                ]
            )
            train.train(train_args)
            predict = onnx_predictor(out, threads=args.threads)
            return clip_probabilities(predict, features.eval_x, features.eval_clip, len(features.clips))

    return [c.speaker for c in features.clips], fit_predict


def corpus_report(
    labels: np.ndarray, predicted: np.ndarray, folds: np.ndarray, corpora: np.ndarray
) -> dict[str, object]:
    report: dict[str, object] = {}
    for corpus in sorted(set(corpora.tolist())):
        in_corpus = corpora == corpus
        per_fold = []
        for fold in range(N_FOLDS):
            mask = in_corpus & (folds == fold)
            if mask.any():
                result = scores(labels[mask], predicted[mask])
                per_fold.append(
                    {
                        "fold": fold,
                        "clips": result["clips"],
                        "accuracy": result["accuracy"],
                        "macro_f1": result["macro_f1"],
                    }
                )
        pooled = scores(labels[in_corpus], predicted[in_corpus])
        confusion = np.array(pooled["confusion"])
        recall = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
        accuracies = np.array([f["accuracy"] for f in per_fold])
        f1s = np.array([f["macro_f1"] for f in per_fold])
        report[corpus] = {
            "folds": per_fold,
            "accuracy_mean": float(accuracies.mean()),
            "accuracy_sd": float(accuracies.std(ddof=1)) if len(accuracies) > 1 else 0.0,
            "macro_f1_mean": float(f1s.mean()),
            "macro_f1_sd": float(f1s.std(ddof=1)) if len(f1s) > 1 else 0.0,
            "pooled": pooled,
            "recall": {label: float(r) for label, r in zip(LABELS, recall, strict=True)},
        }
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["acrnn", "whisper-base", "whisper-tiny"], required=True)
    parser.add_argument("--data", type=Path, action="append", required=True, help="corpus folder with labels.csv")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--folds", default=",".join(str(f) for f in range(N_FOLDS)), help="folds to run")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/emomesh-audio-cache"))
    parser.add_argument("--width", type=float, default=0.125, help="ACRNN width")
    parser.add_argument("--max-minutes", type=float, default=8.0, help="ACRNN training budget per fold")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    from services.audio.train_whisper_head import add_recipe_arguments, recipe

    add_recipe_arguments(parser)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    if args.model == "acrnn":
        speaker_list, fit_predict = acrnn_fit_predict(args)
    else:
        from services.audio.train_whisper_head import whisper_fit_predict

        speaker_list, fit_predict = whisper_fit_predict(args)
    from services.audio.dataset import read_corpus

    clips = [clip for folder in args.data for clip in read_corpus(folder)]
    speakers = np.array(speaker_list)
    labels = np.array([c.label for c in clips])
    corpora = np.array([c.corpus for c in clips])
    folds = np.array([speaker_fold(s) for s in speakers])
    probabilities = np.full((len(clips), len(LABELS)), np.nan)
    timings = {}
    for fold in (int(f) for f in args.folds.split(",")):
        val = inner_validation_speakers(speakers[folds != fold], fold)
        start = time.monotonic()
        print(f"fold {fold}: test {int((folds == fold).sum())} clips, inner validation {val}", flush=True)
        fold_probabilities = fit_predict(speakers, fold, val)
        probabilities[folds == fold] = fold_probabilities[folds == fold]
        timings[fold] = (time.monotonic() - start) / 60
        fold_result = scores(labels[folds == fold], fold_probabilities[folds == fold].argmax(axis=1))
        print(f"fold {fold}: accuracy {fold_result['accuracy']:.3f} ({timings[fold]:.1f} min)", flush=True)
    done = ~np.isnan(probabilities[:, 0])
    predicted = probabilities.argmax(axis=1)
    report = {
        "model": args.model,
        "recipe": recipe(args),
        "folds_run": args.folds,
        "minutes_per_fold": timings,
        "corpora": corpus_report(labels[done], predicted[done], folds[done], corpora[done]),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    np.savez(
        args.out / "predictions.npz",
        probabilities=probabilities,
        labels=labels,
        folds=folds,
        speakers=speakers,
        corpora=corpora,
    )
    for corpus, result in report["corpora"].items():
        print(
            f"{corpus}: accuracy {result['accuracy_mean']:.3f} ± {result['accuracy_sd']:.3f}, "
            f"macro-F1 {result['macro_f1_mean']:.3f} ± {result['macro_f1_sd']:.3f}, "
            f"sad recall {result['recall']['sad']:.2f}"
        )
        print(format_confusion(result["pooled"]["confusion"]))


if __name__ == "__main__":
    main()
