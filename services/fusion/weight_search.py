"""Grid search of the late-fusion weights on cached per-modality predictions.

    python -m services.fusion.weight_search --cache preds.jsonl --out services/fusion/weights.json \
        --plot docs/figures/fusion_weights.png --step 0.02 --note "what the cache was built on"

The predictions are computed once (services/fusion/build_cache.py, or any other producer) and cached;
the search then only re-weights them, so ~1,300 weightings take seconds. Fusion uses the service's
own arithmetic (fuse.fuse_matrix: missing modalities drop out and the weights are renormalised).

Cache formats (any labelled set, any subset of modalities per sample):
- JSONL: one object per sample, {"label": "happy", "vision": [7 probs] | null, "audio": ..., "text": ...}
  (probabilities in emomesh.labels.LABELS order); optional "reliability": {"text": 0.62, ...}, each
  modality's reliability as the service fused it (absent: 1), so that a modality under the service's
  EMOMESH_FUSION_MIN_RELIABILITY drops out here too; optional "set": the group a sample belongs to
  (`emomesh eval --mode speech-transcript` writes both, services/fusion/pair_search.py holds sets out);
  other keys (sources, transcripts) are ignored;
- NPZ: `labels` [N] int (LABELS index) and one [N, 7] float array per modality, NaN rows where missing.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from emomesh.evaluation.metrics import confusion_matrix, weighted_f1
from emomesh.labels import LABELS, MODALITY_BY_NAME, NUM_LABELS, label_index
from services.fusion.fuse import FusionConfig, fuse_matrix

# Order of the weight vectors in the grid and in the ternary plot's corners.
GRID_MODALITIES: tuple[str, str, str] = ("audio", "text", "vision")


# The service's default: a modality whose reliability is under it does not take part.
DEFAULT_MIN_RELIABILITY = FusionConfig().min_reliability


@dataclass(frozen=True)
class PredictionCache:
    labels: np.ndarray  # [N] int
    probs: dict[str, np.ndarray]  # modality -> [N, 7], NaN rows where missing
    # modality -> [N] reliability as fused (1 where the cache does not say); one entry per modality in probs.
    reliability: dict[str, np.ndarray] = field(default_factory=dict)
    # [N] group of each sample (the "set" key: the dataset a real pair came from); "" when not given.
    groups: np.ndarray = field(default_factory=lambda: np.asarray([], dtype=str))

    def __len__(self) -> int:
        return len(self.labels)

    def participating(self, min_reliability: float = DEFAULT_MIN_RELIABILITY) -> dict[str, np.ndarray]:
        """probs with NaN rows where a modality's reliability is under min_reliability: those the
        service leaves out of the fusion (fuse.participants)."""
        out = {}
        for m, arr in self.probs.items():
            reliability = self.reliability.get(m)
            out[m] = arr if reliability is None else np.where((reliability < min_reliability)[:, None], np.nan, arr)
        return out

    def subset(self, mask: np.ndarray) -> PredictionCache:
        return PredictionCache(
            self.labels[mask],
            {m: a[mask] for m, a in self.probs.items()},
            {m: r[mask] for m, r in self.reliability.items()},
            self.groups[mask] if len(self.groups) else self.groups,
        )


def _reliability_of(row: dict, modality: str) -> float:
    value = (row.get("reliability") or {}).get(modality)
    # 0 is "not reported" and counts as 1, as in fuse.participants.
    return float(value) if value else 1.0


def load_cache(path: Path) -> PredictionCache:
    reliability: dict[str, np.ndarray] = {}
    groups = np.asarray([], dtype=str)
    if path.suffix == ".npz":
        with np.load(path) as data:
            labels = np.asarray(data["labels"], dtype=np.int64)
            probs = {m: np.asarray(data[m], dtype=np.float64) for m in MODALITY_BY_NAME if m in data}
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        labels = np.asarray([label_index(row["label"]) for row in rows], dtype=np.int64)
        probs = {}
        for m in MODALITY_BY_NAME:
            if not any(row.get(m) is not None for row in rows):
                continue
            probs[m] = np.asarray(
                [row[m] if row.get(m) is not None else [np.nan] * NUM_LABELS for row in rows], dtype=np.float64
            )
            if any(row.get("reliability") for row in rows):
                reliability[m] = np.asarray([_reliability_of(row, m) for row in rows], dtype=np.float64)
        if any("set" in row for row in rows):
            groups = np.asarray([str(row.get("set", "")) for row in rows])
    if not len(labels):
        raise ValueError(f"{path}: no samples")
    for m, arr in probs.items():
        if arr.shape != (len(labels), NUM_LABELS):
            raise ValueError(f"{path}: {m} has shape {arr.shape}, expected ({len(labels)}, {NUM_LABELS})")
    if not probs:
        raise ValueError(f"{path}: no modality predictions")
    return PredictionCache(labels, probs, reliability, groups)


def load_caches(paths: list[Path]) -> PredictionCache:
    """Several caches as one (a modality missing from a cache is NaN there); a sample's group is its
    "set", else its cache's file name (its parent folder's, for emomesh eval's pairs.jsonl)."""
    caches = [load_cache(p) for p in paths]
    if len(caches) == 1 and len(caches[0].groups):
        return caches[0]
    modalities = [m for m in MODALITY_BY_NAME if any(m in c.probs for c in caches)]
    groups = []
    for path, cache in zip(paths, caches, strict=True):
        name = path.parent.name if path.name == "pairs.jsonl" else path.stem
        groups.append(cache.groups if len(cache.groups) else np.full(len(cache), name))
    return PredictionCache(
        np.concatenate([c.labels for c in caches]),
        {
            m: np.concatenate([c.probs.get(m, np.full((len(c), NUM_LABELS), np.nan)) for c in caches])
            for m in modalities
        },
        {
            m: np.concatenate([c.reliability.get(m, np.ones(len(c))) for c in caches])
            for m in modalities
            if any(m in c.reliability for c in caches)
        },
        np.concatenate(groups),
    )


def save_cache_npz(cache: PredictionCache, path: Path) -> None:
    np.savez_compressed(path, labels=cache.labels, **cache.probs)


def simplex_grid(step: float) -> np.ndarray:
    """All (w_audio, w_text, w_vision) on the simplex with the given step: (n+1)(n+2)/2 rows, n = 1/step."""
    n = round(1 / step)
    if n < 1 or abs(n * step - 1) > 1e-9:
        raise ValueError(f"step must divide 1, got {step}")
    rows = [(i / n, j / n, (n - i - j) / n) for i in range(n + 1) for j in range(n + 1 - i)]
    return np.asarray(rows, dtype=np.float64)


@dataclass(frozen=True)
class SearchResult:
    grid: np.ndarray  # [K, 3] in GRID_MODALITIES order
    scores: np.ndarray  # [K] weighted F1
    best: dict[str, float]
    best_score: float
    single_modality: dict[str, float]  # weighted F1 of each modality alone, on the samples that have it
    equal_weights_score: float


def score(
    cache: PredictionCache,
    weights: Mapping[str, float],
    neutral_discount: Mapping[str, float] | None = None,
    min_reliability: float = DEFAULT_MIN_RELIABILITY,
    entropy_discount: Mapping[str, float] | None = None,
) -> float:
    fused = fuse_matrix(cache.participating(min_reliability), weights, neutral_discount, entropy_discount)
    return weighted_f1(confusion_matrix(cache.labels, fused.argmax(axis=1)))


def search(cache: PredictionCache, step: float = 0.02) -> SearchResult:
    grid = simplex_grid(step)
    scores = np.asarray([score(cache, dict(zip(GRID_MODALITIES, row, strict=True))) for row in grid])
    # Ties (common: F1 is a step function of the weights) go to the weighting closest to equal
    # weights, the least committal choice among equally good ones.
    best_value = scores.max()
    candidates = np.flatnonzero(scores >= best_value - 1e-12)
    distance = np.abs(grid[candidates] - 1 / 3).sum(axis=1)
    best_row = grid[candidates[int(np.argmin(distance))]]
    single = {}
    for m, arr in cache.probs.items():
        present = ~np.isnan(arr).any(axis=1)
        single[m] = weighted_f1(confusion_matrix(cache.labels[present], arr[present].argmax(axis=1)))
    return SearchResult(
        grid=grid,
        scores=scores,
        best={m: round(float(w), 6) for m, w in zip(GRID_MODALITIES, best_row, strict=True)},
        best_score=float(best_value),
        single_modality=single,
        equal_weights_score=score(cache, dict.fromkeys(GRID_MODALITIES, 1 / 3)),
    )


def write_weights(path: Path, result: SearchResult, cache_path: Path, samples: int, step: float, note: str) -> None:
    document = {
        "weights": result.best,
        "weighted_f1": round(result.best_score, 4),
        "equal_weights_f1": round(result.equal_weights_score, 4),
        "single_modality_f1": {m: round(v, 4) for m, v in result.single_modality.items()},
        "searched_on": {
            "cache": cache_path.name,
            "samples": samples,
            "step": step,
            "combinations": len(result.grid),
            "note": note,
        },
        "searched_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def plot_ternary(result: SearchResult, path: Path, title: str = "") -> None:
    """Heat map of weighted F1 over the weight simplex; corners are single-modality fusion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.tri import Triangulation

    # Barycentric (audio, text, vision) -> plane: audio bottom-left, text bottom-right, vision top.
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    xy = result.grid @ corners
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    mesh = ax.tripcolor(Triangulation(xy[:, 0], xy[:, 1]), result.scores, shading="gouraud", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="weighted F1")
    best_xy = np.array([result.best[m] for m in GRID_MODALITIES]) @ corners
    ax.plot(*best_xy, marker="*", color="red", markersize=16, markeredgecolor="white")
    ax.annotate(
        f"best {result.best_score:.3f}\n" + ", ".join(f"{m[0]}={result.best[m]:.2f}" for m in GRID_MODALITIES),
        best_xy,
        xytext=(10, -30),
        textcoords="offset points",
        color="red",
    )
    label_offsets = ((-0.06, -0.05), (0.02, -0.05), (-0.04, 0.03))
    for (x, y), name, offset in zip(corners, GRID_MODALITIES, label_offsets, strict=True):
        ax.text(x + offset[0], y + offset[1], f"{name} = 1", fontsize=11)
    ax.plot(*np.vstack([corners, corners[:1]]).T, color="black", linewidth=1)
    ax.set_xlim(-0.15, 1.15)
    ax.set_ylim(-0.1, 0.95)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or "Late-fusion weights\nweighted F1 over w_audio + w_text + w_vision = 1")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True, help="prediction cache (.jsonl or .npz)")
    parser.add_argument("--out", type=Path, required=True, help="weights file to write (the service loads it)")
    parser.add_argument("--plot", type=Path, help="ternary heat map PNG to write")
    parser.add_argument("--step", type=float, default=0.02)
    parser.add_argument("--note", default="", help="what the cache was built on, kept in the weights file")
    args = parser.parse_args(argv)
    cache = load_cache(args.cache)
    result = search(cache, args.step)
    write_weights(args.out, result, args.cache, len(cache), args.step, args.note)
    if args.plot:
        plot_ternary(result, args.plot)
    counts = np.bincount(cache.labels, minlength=NUM_LABELS)
    print(f"{len(cache)} samples ({', '.join(f'{n} {c}' for n, c in zip(LABELS, counts, strict=True))})")
    print(f"{len(result.grid)} weightings searched, step {args.step}")
    for m, f1 in sorted(result.single_modality.items()):
        print(f"  {m:<6} alone: weighted F1 {f1:.4f}")
    print(f"  equal weights: weighted F1 {result.equal_weights_score:.4f}")
    print(f"  best {result.best}: weighted F1 {result.best_score:.4f} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
