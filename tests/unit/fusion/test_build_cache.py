"""Synthetic pairing of single-modality validation sets (on a tiny made-up data folder)."""

from __future__ import annotations

import json
from pathlib import Path

from services.fusion.build_cache import Item, goemotions_dev, pair


def test_goemotions_keeps_single_group_sentences_mapped_to_seven_classes(tmp_path: Path) -> None:
    folder = tmp_path / "goemotions"
    folder.mkdir()
    (folder / "emotions.txt").write_text("anger\nannoyance\njoy\nneutral\n")
    (folder / "ekman_mapping.json").write_text(json.dumps({"anger": ["anger", "annoyance"], "joy": ["joy"]}))
    (folder / "dev.tsv").write_text("so mad\t0,1\tid1\nmixed\t0,2\tid2\nfine\t3\tid3\nyay\t2\tid4\n")
    pools = goemotions_dev(tmp_path)
    assert [i.payload for i in pools["angry"]] == ["so mad"]  # anger + annoyance: one group
    assert [i.payload for i in pools["happy"]] == ["yay"]
    assert [i.payload for i in pools["neutral"]] == ["fine"]
    assert all(i.payload != "mixed" for items in pools.values() for i in items)


def test_pairing_matches_labels_and_stops_at_the_smallest_pool() -> None:
    def pool(prefix: str, n: int) -> dict[str, list[Item]]:
        return {"happy": [Item(f"{prefix}{i}", f"{prefix}{i}") for i in range(n)], "sad": []}

    samples = pair({"vision": pool("v", 5), "text": pool("t", 3)}, per_label=10, seed=0)
    assert len(samples) == 3
    assert all(label == "happy" for label, _ in samples)
    assert len({items["vision"].source for _, items in samples}) == 3  # no item used twice
