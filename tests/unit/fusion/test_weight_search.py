"""Weight search on toy caches whose best weighting is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emomesh.labels import LABELS
from services.fusion.fuse import load_weights_file
from services.fusion.weight_search import (
    PredictionCache,
    load_cache,
    main,
    save_cache_npz,
    search,
    simplex_grid,
)


def one_hot(indices: np.ndarray, strength: float = 0.9) -> np.ndarray:
    probs = np.full((len(indices), len(LABELS)), (1 - strength) / (len(LABELS) - 1))
    probs[np.arange(len(indices)), indices] = strength
    return probs


def toy_cache(n: int = 140) -> PredictionCache:
    """Text is always right, audio right 60% of the time, vision always wrong."""
    rng = np.random.default_rng(1)
    labels = np.arange(n) % len(LABELS)
    wrong = (labels + 1) % len(LABELS)
    audio_pred = np.where(rng.random(n) < 0.6, labels, wrong)
    return PredictionCache(
        labels=labels, probs={"text": one_hot(labels, 0.6), "audio": one_hot(audio_pred), "vision": one_hot(wrong)}
    )


def test_grid_covers_the_simplex() -> None:
    grid = simplex_grid(0.02)
    assert len(grid) == 51 * 52 // 2 == 1326
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)
    assert grid.min() >= 0
    with pytest.raises(ValueError, match="divide 1"):
        simplex_grid(0.3)


def test_search_finds_the_informative_modality() -> None:
    result = search(toy_cache(), step=0.1)
    assert result.best_score == pytest.approx(1.0)
    assert result.best["text"] > result.best["vision"]
    assert result.single_modality["text"] == pytest.approx(1.0)
    assert result.single_modality["vision"] == pytest.approx(0.0)
    assert result.scores.max() == pytest.approx(result.best_score)


def test_samples_missing_a_modality_use_the_others() -> None:
    cache = toy_cache()
    cache.probs["text"][::2] = np.nan  # text missing on half the samples: audio must fill in there
    result = search(cache, step=0.1)
    assert result.best["audio"] > result.best["vision"]
    assert 0.5 < result.best_score < 1.0


def test_jsonl_and_npz_caches_load_the_same(tmp_path: Path) -> None:
    cache = toy_cache(14)
    cache.probs["audio"][3] = np.nan
    jsonl = tmp_path / "cache.jsonl"
    with jsonl.open("w") as f:
        for i, label in enumerate(cache.labels):
            row = {"label": LABELS[label], "source": "toy"}
            for m, arr in cache.probs.items():
                row[m] = None if np.isnan(arr[i]).any() else arr[i].tolist()
            f.write(json.dumps(row) + "\n")
    npz = tmp_path / "cache.npz"
    save_cache_npz(cache, npz)
    for path in (jsonl, npz):
        loaded = load_cache(path)
        np.testing.assert_array_equal(loaded.labels, cache.labels)
        for m in cache.probs:
            np.testing.assert_allclose(loaded.probs[m], cache.probs[m])


def test_cli_writes_a_weights_file_the_service_loads_and_a_plot(tmp_path: Path) -> None:
    cache_path = tmp_path / "cache.npz"
    save_cache_npz(toy_cache(), cache_path)
    out, plot = tmp_path / "weights.json", tmp_path / "heat.png"
    assert main(["--cache", str(cache_path), "--out", str(out), "--plot", str(plot), "--note", "toy"]) == 0
    weights = load_weights_file(out)
    assert weights["text"] > weights["vision"]
    document = json.loads(out.read_text())
    assert document["searched_on"]["combinations"] == 1326
    assert document["searched_on"]["note"] == "toy"
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_bad_cache_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"label": "happy", "text": [0.5, 0.5]}) + "\n")
    with pytest.raises(ValueError, match="shape"):
        load_cache(path)
