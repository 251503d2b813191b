"""Trains the ACRNN speech-emotion model and exports it to ONNX for Triton.

    OMP_NUM_THREADS=1 python -m services.audio.train \\
        --data /work/shared/data/ravdess --data /work/shared/data/emodb_2s --max-minutes 25

The defaults are the shipped model's settings (width 0.125, lr 1e-3, batch 16, patience 10). On a GPU
host, a wider model (--width 1.0) is the natural next step.

Data: corpus folders with labels.csv (path, label, speaker). Validation is speaker-disjoint: the
speakers in --val-speakers are held out of training (their clips select the best epoch and drive the
learning-rate schedule, so their scores are slightly optimistic; the corpora's official held-out
speakers are not in the shared data).

Recipe: AdamW, one random 3.1 s window per training clip per epoch (windows start every 0.5 s),
mixup (alpha 0.2), one frequency and one time mask (SpecAugment-style), cross-entropy with label
smoothing 0.1 and class-balanced weights, ReduceLROnPlateau on validation macro-F1, early stopping.

Output: the ONNX model (input `log_mel` [N,1,128,130] float32 dB, output `probabilities` [N,7]
softmax in LABELS order), a checkpoint and a JSON report with the validation scores."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emomesh.labels import NUM_LABELS
from emomesh.onnx_export import export_onnx
from services.audio.config import ACRNN_MODEL_FILE
from services.audio.dataset import Features, load_features
from services.audio.evaluate import clip_probabilities, format_confusion, scores
from services.audio.features import N_FRAMES, N_MELS
from services.audio.model_def import ACRNN, ACRNNConfig, ACRNNWithSoftmax

DEFAULT_VAL_SPEAKERS = "ravdess_actor17,ravdess_actor18,ravdess_actor19,ravdess_actor20,emodb_13,emodb_14"


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """Inverse class frequency, normalised to mean 1 over the classes present."""
    counts = np.bincount(labels, minlength=NUM_LABELS).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (NUM_LABELS * np.maximum(counts, 1)), 0.0)
    weights /= weights[counts > 0].mean()
    return torch.tensor(weights, dtype=torch.float32)


def spec_mask(x: torch.Tensor, rng: np.random.Generator, max_freq: int = 16, max_time: int = 20) -> torch.Tensor:
    """One frequency band and one time span per example, set to the example's mean."""
    x = x.clone()
    for i in range(len(x)):
        fill = x[i].mean()
        f, t = int(rng.integers(0, max_freq + 1)), int(rng.integers(0, max_time + 1))
        f0, t0 = int(rng.integers(0, N_MELS - f + 1)), int(rng.integers(0, N_FRAMES - t + 1))
        x[i, :, f0 : f0 + f, :] = fill
        x[i, :, :, t0 : t0 + t] = fill
    return x


def evaluate(model: ACRNN, features: Features, clip_mask: np.ndarray) -> dict[str, object]:
    model.eval()
    window_mask = clip_mask[features.eval_clip]

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(x)), dim=-1).numpy()

    probs = clip_probabilities(
        predict, features.eval_x[window_mask], features.eval_clip[window_mask], len(features.clips)
    )
    return scores(features.labels[clip_mask], probs[clip_mask].argmax(axis=1))


def export_model(model: ACRNN, out: Path) -> None:
    wrapped = ACRNNWithSoftmax(model)
    export_onnx(wrapped, (torch.zeros(1, 1, N_MELS, N_FRAMES),), out, ["log_mel"], ["probabilities"])


def train(args: argparse.Namespace) -> dict[str, object]:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(args.threads)
    features = load_features(args.data, args.cache_dir)
    val_speakers = set(args.val_speakers.split(","))
    is_val = np.isin(features.speakers, sorted(val_speakers))
    # Held out entirely (a cross-validation fold's test speakers): neither trained on nor validated on.
    excluded = sorted(filter(None, args.exclude_speakers.split(",")))
    is_excluded = np.isin(features.speakers, excluded)
    if (is_val & is_excluded).any():
        raise ValueError("a speaker is both in --val-speakers and in --exclude-speakers")
    train_clips = np.flatnonzero(~is_val & ~is_excluded)
    labels = features.labels
    windows_of: dict[int, np.ndarray] = {}
    for clip in train_clips:
        windows_of[int(clip)] = np.flatnonzero(features.train_clip == clip)
    print(f"{len(train_clips)} training clips, {int(is_val.sum())} validation clips", flush=True)

    model = ACRNN(ACRNNConfig(width=args.width))
    print(f"ACRNN width {args.width}: {sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=3)
    weights = class_weights(labels[train_clips])
    best_f1, best_state, best_epoch, stale = -1.0, None, 0, 0
    history = []
    start = time.monotonic()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = rng.permutation(train_clips)
        picks = np.array([rng.choice(windows_of[int(c)]) for c in order])
        total_loss = 0.0
        for i in range(0, len(order), args.batch):
            x = torch.from_numpy(features.train_x[picks[i : i + args.batch]].astype(np.float32)[:, None])
            y = torch.from_numpy(labels[order[i : i + args.batch]])
            x = spec_mask(x, rng)
            lam = float(rng.beta(args.mixup, args.mixup))
            perm = torch.randperm(len(x))
            logits = model(lam * x + (1 - lam) * x[perm])
            loss = lam * F.cross_entropy(logits, y, weight=weights, label_smoothing=args.label_smoothing) + (
                1 - lam
            ) * F.cross_entropy(logits, y[perm], weight=weights, label_smoothing=args.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            total_loss += loss.item() * len(x)
        result = evaluate(model, features, is_val)
        f1 = float(result["macro_f1"])  # type: ignore[arg-type]
        scheduler.step(f1)
        elapsed = (time.monotonic() - start) / 60
        history.append({"epoch": epoch, "loss": total_loss / len(order), "val": result, "minutes": elapsed})
        print(
            f"epoch {epoch}: loss {total_loss / len(order):.3f} val acc {result['accuracy']:.3f} "
            f"macro-F1 {f1:.3f} lr {optimizer.param_groups[0]['lr']:.1e} ({elapsed:.1f} min)",
            flush=True,
        )
        if f1 > best_f1:
            best_f1, best_epoch, stale = f1, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            torch.save({"config": model.config.to_dict(), "state": best_state}, args.checkpoint)
        else:
            stale += 1
        if stale >= args.patience:
            print(f"early stop: no improvement for {args.patience} epochs", flush=True)
            break
        if elapsed * (epoch + 1) / epoch > args.max_minutes:
            print(f"stop: the next epoch would pass the {args.max_minutes} min budget", flush=True)
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    export_model(model, args.out)
    report: dict[str, object] = {"best_epoch": best_epoch, "width": args.width, "history": history}
    for corpus in sorted({c.corpus for c in features.clips}):
        mask = is_val & np.array([c.corpus == corpus for c in features.clips])
        if mask.any():
            report[f"val_{corpus}"] = evaluate(model, features, mask)
    report["val_all"] = evaluate(model, features, is_val)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", required=True, help="corpus folder with labels.csv")
    parser.add_argument("--val-speakers", default=DEFAULT_VAL_SPEAKERS)
    parser.add_argument(
        "--exclude-speakers", default="", help="comma-separated speakers left out of training and validation"
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/emomesh-audio-cache"))
    parser.add_argument("--out", type=Path, default=ACRNN_MODEL_FILE)
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/emomesh-audio-cache/acrnn.pt"))
    parser.add_argument("--report", type=Path, default=Path("/tmp/emomesh-audio-cache/report.json"))
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--mixup", type=float, default=0.2)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--max-minutes", type=float, default=25.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    report = train(args)
    args.report.write_text(json.dumps(report, indent=2))
    for key, value in report.items():
        if key.startswith("val_") and isinstance(value, dict):
            print(f"{key}: {value['clips']} clips, accuracy {value['accuracy']:.3f}, macro-F1 {value['macro_f1']:.3f}")
            print(format_confusion(value["confusion"]))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) and {args.report}")


if __name__ == "__main__":
    main()
