"""Fusion weights from REAL speech + transcript pairs, validated speaker-disjointly, with the vision
weight left to the synthetic pairing.

    python -m services.fusion.pair_search \\
        --pairs runs/eval/ravdess-17-20-speech-transcript/pairs.jsonl \\
                runs/eval/emodb_2s-13-14-speech-transcript/pairs.jsonl \\
                runs/eval/casia-speech-transcript/pairs.jsonl \\
        --synthetic runs/fusion/val_cache_ft.jsonl --out services/fusion/weights.json --note "..."

The real pairs (`emomesh eval --mode speech-transcript`: each clip's voice and its own transcript's
text, as the service fused them) decide how audio and text are weighed against each other: the text
share r = w_text / (w_audio + w_text) and the text's neutral and entropy discounts d and e (fuse.py:
text keeps (1 - d x P(neutral)) x (1 - e x normalised entropy) of its weight). The requirement
(issue 15) is that fusing the transcript never costs accuracy: fused accuracy >= audio-only accuracy
on EVERY set. RAVDESS, EmoDB and CASIA read fixed, emotionally neutral sentences, so there the words
can only hurt; where words do carry emotion (GoEmotions in the synthetic pairing) text should keep
its weight.

Candidates (r, d, e) are admissible on a group of sets when fused - audio accuracy >= --margin on each of
them. Among the admissible ones the synthetic pairing (services/fusion/build_cache.py: faces, voices
and GoEmotions sentences of the same label) picks the one, together with the vision weight v, that
maximises its weighted F1 (weights: vision v, audio (1 - v)(1 - r), text (1 - v) r); without a
synthetic cache, the mean fused accuracy of the pairs decides. If no candidate is admissible, the one
with the best worst-set gain is taken (and reported as such).

Validation (the weights must not be chosen on the clips they are scored on): leave-one-set-out. For
each set, the candidate is chosen on the OTHER sets' pairs (and the synthetic cache, which shares no
speaker with them: RAVDESS 17-20 clips are in both, see docs/fusion.md) and scored on the held-out
set; the table reports those held-out scores. The weights written are then chosen on all sets."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from emomesh.evaluation.metrics import confusion_matrix, macro_f1
from emomesh.labels import NUM_LABELS
from services.fusion.fuse import fuse_matrix
from services.fusion.weight_search import DEFAULT_MIN_RELIABILITY, PredictionCache, load_caches, score

DEFAULT_DISCOUNTS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Candidate:
    text_share: float  # r = w_text / (w_audio + w_text)
    neutral_discount: float  # text's d
    entropy_discount: float = 0.0  # text's e

    def discounts(self) -> tuple[dict[str, float], dict[str, float]]:
        return {"text": self.neutral_discount}, {"text": self.entropy_discount}

    def pair_weights(self) -> dict[str, float]:
        return {"audio": 1.0 - self.text_share, "text": self.text_share}

    def weights(self, vision: float) -> dict[str, float]:
        return {
            "audio": round((1.0 - vision) * (1.0 - self.text_share), 6),
            "text": round((1.0 - vision) * self.text_share, 6),
            "vision": round(vision, 6),
        }


@dataclass(frozen=True)
class SetScores:
    """One set's pairs under one candidate."""

    clips: int
    audio_accuracy: float
    fused_accuracy: float
    audio_macro_f1: float
    fused_macro_f1: float

    @property
    def gain(self) -> float:
        return self.fused_accuracy - self.audio_accuracy


def set_scores(pairs: PredictionCache, candidate: Candidate, min_reliability: float) -> SetScores:
    """Audio alone (its own argmax; a clip without audio counts wrong) and fused, as the service would."""
    audio = pairs.probs["audio"]
    has_audio = ~np.isnan(audio).any(axis=1)
    audio_predicted = np.where(has_audio, np.nan_to_num(audio).argmax(axis=1), -1)
    fused = fuse_matrix(
        {m: p for m, p in pairs.participating(min_reliability).items() if m in ("audio", "text")},
        candidate.pair_weights(),
        *candidate.discounts(),
    )
    audio_acc = float(np.mean(pairs.labels == audio_predicted))
    # A clip without audio has no audio prediction: its own column, wrong (as in emomesh eval).
    audio_f1 = macro_f1(_with_none(pairs.labels, audio_predicted))
    fused_predicted = fused.argmax(axis=1)
    fused_acc = float(np.mean(pairs.labels == fused_predicted))
    fused_f1 = macro_f1(confusion_matrix(pairs.labels, fused_predicted))
    return SetScores(len(pairs), audio_acc, fused_acc, audio_f1, fused_f1)


def _with_none(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Confusion matrix with a last "no prediction" column for predictions of -1."""
    confusion = np.zeros((NUM_LABELS, NUM_LABELS + 1), dtype=np.int64)
    np.add.at(confusion, (labels, np.where(predicted < 0, NUM_LABELS, predicted)), 1)
    return confusion


def candidates(step: float, discounts: Sequence[float], entropy_discounts: Sequence[float] = (0.0,)) -> list[Candidate]:
    n = round(1 / step)
    return [Candidate(round(i / n, 6), d, e) for e in entropy_discounts for d in discounts for i in range(n + 1)]


@dataclass(frozen=True)
class Choice:
    candidate: Candidate
    vision: float
    admissible: bool  # every selection set gained at least the margin
    synthetic_f1: float | None


def synthetic_best_vision(
    synthetic: PredictionCache, candidate: Candidate, step: float, min_reliability: float
) -> tuple[float, float]:
    """The vision weight that maximises the synthetic pairing's weighted F1 for this audio/text
    candidate, and that F1 (ties: the smaller vision weight, the one the pairs back more)."""
    best_v, best_f1 = 0.0, -1.0
    for v in np.arange(0.0, 1.0, step):
        neutral, entropy = candidate.discounts()
        f1 = score(synthetic, candidate.weights(float(v)), neutral, min_reliability, entropy)
        if f1 > best_f1 + 1e-12:
            best_v, best_f1 = float(v), f1
    return round(best_v, 6), best_f1


def choose(
    pairs_by_set: dict[str, PredictionCache],
    grid: list[Candidate],
    synthetic_f1: dict[Candidate, tuple[float, float]] | None,
    margin: float,
    min_reliability: float,
) -> Choice:
    """The candidate for these sets: admissible (gain >= margin on each), then the best synthetic F1
    (or mean fused accuracy); ties go to the smaller text share and discounts (the humbler change)."""
    gains = {c: [set_scores(p, c, min_reliability) for p in pairs_by_set.values()] for c in grid}
    admissible = [c for c in grid if min(s.gain for s in gains[c]) >= margin - 1e-12]
    pool = admissible or [max(grid, key=lambda c: min(s.gain for s in gains[c]))]

    def objective(c: Candidate) -> tuple[float, float]:
        mean_fused = float(np.mean([s.fused_accuracy for s in gains[c]]))
        if synthetic_f1 is not None:
            return (synthetic_f1[c][1], mean_fused)
        return (mean_fused, 0.0)

    best_value = max(objective(c) for c in pool)
    best = min(
        (c for c in pool if objective(c) >= (best_value[0] - 1e-12, best_value[1] - 1e-12)),
        key=lambda c: (c.text_share, c.neutral_discount, c.entropy_discount),
    )
    vision, f1 = synthetic_f1[best] if synthetic_f1 is not None else (0.0, None)
    return Choice(best, vision, bool(admissible), f1)


@dataclass(frozen=True)
class HeldOut:
    held_out: str
    choice: Choice
    scores: SetScores


def leave_one_set_out(
    pairs_by_set: dict[str, PredictionCache],
    grid: list[Candidate],
    synthetic_f1: dict[Candidate, tuple[float, float]] | None,
    margin: float,
    min_reliability: float,
) -> list[HeldOut]:
    results: list[HeldOut] = []
    if len(pairs_by_set) < 2:
        return results  # nothing to choose on
    for name, held in pairs_by_set.items():
        others = {n: p for n, p in pairs_by_set.items() if n != name}
        choice = choose(others, grid, synthetic_f1, margin, min_reliability)
        results.append(HeldOut(name, choice, set_scores(held, choice.candidate, min_reliability)))
    return results


def split_by_set(pairs: PredictionCache) -> dict[str, PredictionCache]:
    if "audio" not in pairs.probs:
        raise ValueError("the pairs cache has no audio predictions")
    return {str(g): pairs.subset(pairs.groups == g) for g in dict.fromkeys(pairs.groups.tolist())}


def markdown_table(held_out: list[HeldOut], final: dict[str, SetScores]) -> str:
    lines = [
        "| held-out set | clips | chosen on the other sets: text share, neutral / entropy discount | audio acc | "
        "fused acc | "
        "fused − audio | audio macro-F1 | fused macro-F1 | with the final weights: fused − audio |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for h in held_out:
        s, c = h.scores, h.choice.candidate
        note = "" if h.choice.admissible else " (none admissible)"
        lines.append(
            f"| {h.held_out} | {s.clips} | {c.text_share:.2f}, {c.neutral_discount:.2f} / "
            f"{c.entropy_discount:.2f}{note} | "
            f"{s.audio_accuracy:.4f} | {s.fused_accuracy:.4f} | {s.gain:+.4f} | {s.audio_macro_f1:.4f} | "
            f"{s.fused_macro_f1:.4f} | {final[h.held_out].gain:+.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, nargs="+", required=True, help="pairs.jsonl of speech-transcript runs")
    parser.add_argument("--synthetic", type=Path, help="the synthetic tri-modal cache (decides the vision weight)")
    parser.add_argument("--out", type=Path, help="weights file to write (the service loads it)")
    parser.add_argument("--step", type=float, default=0.02, help="grid step of the text share and vision weight")
    parser.add_argument(
        "--neutral-discounts",
        dest="discounts",
        type=float,
        nargs="+",
        default=list(DEFAULT_DISCOUNTS),
        help="text neutral discounts to try",
    )
    parser.add_argument(
        "--entropy-discounts",
        type=float,
        nargs="+",
        default=list(DEFAULT_DISCOUNTS),
        help="text entropy discounts to try",
    )
    parser.add_argument("--margin", type=float, default=0.0, help="fused - audio accuracy each set must reach")
    parser.add_argument("--min-reliability", type=float, default=DEFAULT_MIN_RELIABILITY)
    parser.add_argument("--note", default="", help="what the caches were built on, kept in the weights file")
    parser.add_argument("--table", type=Path, help="write the held-out table (Markdown) here too")
    args = parser.parse_args(argv)
    pairs_by_set = split_by_set(load_caches(args.pairs))
    grid = candidates(args.step, args.discounts, args.entropy_discounts)
    synthetic = load_caches([args.synthetic]) if args.synthetic else None
    synthetic_f1 = (
        {c: synthetic_best_vision(synthetic, c, args.step, args.min_reliability) for c in grid}
        if synthetic is not None
        else None
    )
    held_out = leave_one_set_out(pairs_by_set, grid, synthetic_f1, args.margin, args.min_reliability)
    final = choose(pairs_by_set, grid, synthetic_f1, args.margin, args.min_reliability)
    final_scores = {n: set_scores(p, final.candidate, args.min_reliability) for n, p in pairs_by_set.items()}
    table = markdown_table(held_out, final_scores)
    print(f"{sum(len(p) for p in pairs_by_set.values())} clips in {len(pairs_by_set)} sets; {len(grid)} candidates")
    print(table if held_out else "one set only: no held-out validation (give --pairs of several sets)\n", end="")
    weights = final.candidate.weights(final.vision) if synthetic is not None else final.candidate.pair_weights()
    print(
        f"final (all sets{', admissible' if final.admissible else ', NONE admissible'}): weights {weights}, "
        f"text neutral discount {final.candidate.neutral_discount}, entropy discount "
        f"{final.candidate.entropy_discount}"
        + (f", synthetic weighted F1 {final.synthetic_f1:.4f}" if final.synthetic_f1 is not None else "")
    )
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(table)
    if args.out:
        if synthetic is None:
            parser.error("--out needs --synthetic: the pairs have no faces, so they cannot set the vision weight")
        document = {
            "weights": weights,
            "neutral_discount": {"text": final.candidate.neutral_discount},
            "entropy_discount": {"text": final.candidate.entropy_discount},
            "synthetic_weighted_f1": None if final.synthetic_f1 is None else round(final.synthetic_f1, 4),
            "pairs": {
                name: {
                    "clips": s.clips,
                    "audio_accuracy": round(s.audio_accuracy, 4),
                    "fused_accuracy": round(s.fused_accuracy, 4),
                }
                for name, s in final_scores.items()
            },
            "pairs_held_out": {
                h.held_out: {
                    "text_share": h.choice.candidate.text_share,
                    "neutral_discount": h.choice.candidate.neutral_discount,
                    "entropy_discount": h.choice.candidate.entropy_discount,
                    "audio_accuracy": round(h.scores.audio_accuracy, 4),
                    "fused_accuracy": round(h.scores.fused_accuracy, 4),
                }
                for h in held_out
            },
            "searched_on": {
                "pairs": [str(p) for p in args.pairs],
                "synthetic": args.synthetic.name,
                "step": args.step,
                "neutral_discounts": args.discounts,
                "entropy_discounts": args.entropy_discounts,
                "margin": args.margin,
                "min_reliability": args.min_reliability,
                "note": args.note,
            },
            "searched_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
