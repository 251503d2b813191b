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
    load_caches,
    main,
    save_cache_npz,
    score,
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


def test_a_cache_with_reliabilities_drops_what_the_service_would_drop(tmp_path: Path) -> None:
    rows = [
        {"label": "angry", "audio": one_hot(np.array([0]))[0].tolist(), "text": one_hot(np.array([6]))[0].tolist()},
        {"label": "sad", "audio": one_hot(np.array([4]))[0].tolist(), "text": one_hot(np.array([6]))[0].tolist()},
    ]
    rows[0]["reliability"] = {"audio": 1.0, "text": 0.9}
    rows[1]["reliability"] = {"audio": 0, "text": 0.1}  # 0: not reported, read as 1
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = load_cache(path)
    assert cache.reliability["text"].tolist() == [0.9, 0.1] and cache.reliability["audio"].tolist() == [1.0, 1.0]
    text_heavy = {"audio": 0.2, "text": 0.8}
    # Row 1's doubtful text is out (0.1 < 0.3): audio answers sad there; row 0's neutral text wins.
    participating = cache.participating()
    assert np.isnan(participating["text"][1]).all() and not np.isnan(participating["text"][0]).any()
    assert score(cache, text_heavy) == pytest.approx(0.5)
    assert score(cache, text_heavy, min_reliability=0.0) == 0.0
    # A neutral discount of 1 takes the neutral text's weight away: audio is right on both.
    assert score(cache, text_heavy, {"text": 1.0}, min_reliability=0.0) == 1.0


def test_caches_load_together_grouped_by_set_or_file(tmp_path: Path) -> None:
    audio = one_hot(np.array([0]))[0].tolist()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "pairs.jsonl").write_text(json.dumps({"label": "angry", "audio": audio, "set": "ravdess"}) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"label": "angry", "audio": audio, "text": audio}) + "\n")
    cache = load_caches([tmp_path / "a" / "pairs.jsonl", tmp_path / "b.jsonl"])
    assert cache.groups.tolist() == ["ravdess", "b"]
    assert np.isnan(cache.probs["text"][0]).all() and not np.isnan(cache.probs["text"][1]).any()
