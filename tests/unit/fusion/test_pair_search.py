"""The audio/text weights searched on real-pair caches: leave-one-set-out, the fused >= audio
requirement, the vision weight from the synthetic cache, the weights file the service loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emomesh.labels import LABELS, NUM_LABELS
from services.fusion.config import FusionSettings
from services.fusion.pair_search import Candidate, candidates, choose, main, set_scores, split_by_set
from services.fusion.weight_search import PredictionCache

NEUTRAL = LABELS.index("neutral")


def one_hot(indices: np.ndarray, strength: float) -> np.ndarray:
    probs = np.full((len(indices), NUM_LABELS), (1 - strength) / (NUM_LABELS - 1))
    probs[np.arange(len(indices)), indices] = strength
    return probs


def neutral_sentences(n: int, seed: int) -> PredictionCache:
    """A RAVDESS-like set: the voice is right 70% of the time (confidence 0.5), the fixed sentence
    always reads neutral (0.9), whatever the emotion."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % NUM_LABELS
    heard = np.where(rng.random(n) < 0.7, labels, (labels + 1) % NUM_LABELS)
    return PredictionCache(
        labels, {"audio": one_hot(heard, 0.5), "text": one_hot(np.full(n, NEUTRAL), 0.9)}, {}, np.full(n, f"s{seed}")
    )


def test_neutral_words_cost_accuracy_unless_discounted() -> None:
    pairs = neutral_sentences(70, 0)
    audio_only = set_scores(pairs, Candidate(0.0, 0.0), 0.3)
    assert audio_only.gain == 0.0 and audio_only.audio_accuracy == pytest.approx(audio_only.fused_accuracy)
    assert set_scores(pairs, Candidate(0.5, 0.0), 0.3).gain < -0.3
    assert set_scores(pairs, Candidate(0.5, 1.0), 0.3).gain == 0.0


def test_choice_keeps_every_set_at_least_at_audio_and_lets_the_synthetic_cache_decide() -> None:
    sets = {f"s{seed}": neutral_sentences(70, seed) for seed in range(3)}
    grid = candidates(0.1, (0.0, 1.0))
    # Synthetic F1 that rewards text (its words carry emotion there): the largest admissible share
    # wins. Even discounted, neutral text at 0.9 of the weight outweighs the voice: 0.8 is the most.
    synthetic = {c: (0.2, c.text_share) for c in grid}
    choice = choose(sets, grid, synthetic, margin=0.0, min_reliability=0.3)
    assert choice.admissible and choice.candidate == Candidate(0.8, 1.0) and choice.vision == 0.2
    assert all(set_scores(p, choice.candidate, 0.3).gain >= 0 for p in sets.values())
    # Without a synthetic cache the pairs' mean fused accuracy decides; ties go to the smaller change.
    plain = choose(sets, grid, None, margin=0.0, min_reliability=0.3)
    assert plain.candidate == Candidate(0.0, 0.0)


def test_main_validates_leave_one_set_out_and_writes_a_weights_file_the_service_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for seed in range(3):
        cache = neutral_sentences(35, seed)
        path = tmp_path / f"set{seed}" / "pairs.jsonl"
        path.parent.mkdir()
        rows = [
            {"label": LABELS[y], "audio": a.tolist(), "text": t.tolist(), "vision": None, "set": f"set{seed}"}
            for y, a, t in zip(cache.labels, cache.probs["audio"], cache.probs["text"], strict=True)
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(path)
    # The synthetic pairing: words that carry the emotion (always right), a voice always wrong, a
    # face right half the time. Text needs a large share there, which the pairs allow only discounted.
    labels = np.arange(70) % NUM_LABELS
    face = np.where(np.random.default_rng(5).random(70) < 0.5, labels, (labels + 2) % NUM_LABELS)
    synthetic = tmp_path / "synthetic.jsonl"
    synthetic.write_text(
        "".join(
            json.dumps({"label": LABELS[y], "audio": a.tolist(), "text": t.tolist(), "vision": v.tolist()}) + "\n"
            for y, a, t, v in zip(
                labels,
                one_hot((labels + 1) % NUM_LABELS, 0.5),
                one_hot(labels, 0.6),
                one_hot(face, 0.6),
                strict=True,
            )
        )
    )
    out, table = tmp_path / "weights.json", tmp_path / "table.md"
    argv = ["--pairs", *map(str, paths), "--synthetic", str(synthetic), "--out", str(out), "--table", str(table)]
    assert main([*argv, "--step", "0.1"]) == 0
    printed = capsys.readouterr().out
    assert "105 clips in 3 sets" in printed and "| set0 | 35 |" in table.read_text()
    document = json.loads(out.read_text())
    assert document["neutral_discount"] == {"text": 1.0}
    assert set(document["pairs_held_out"]) == {"set0", "set1", "set2"}
    for scores in document["pairs"].values():
        assert scores["fused_accuracy"] >= scores["audio_accuracy"]
    settings = FusionSettings.from_env({"EMOMESH_FUSION_WEIGHTS_FILE": str(out)})
    assert settings.fusion.neutral_discount == {"text": 1.0}
    assert sum(settings.fusion.weights.values()) == pytest.approx(1.0)


def test_split_by_set_needs_audio() -> None:
    cache = neutral_sentences(7, 0)
    assert list(split_by_set(cache)) == ["s0"]
    with pytest.raises(ValueError, match="no audio"):
        split_by_set(PredictionCache(cache.labels, {"text": cache.probs["text"]}, {}, cache.groups))
