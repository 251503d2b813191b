"""Loading the text emotion corpora into the project's 7 labels (pure; used by training and evaluation).

GoEmotions (Reddit comments, 28 labels, multi-label) is mapped to 7 classes through the dataset's own
`ekman_mapping.json` (anger->angry, joy->happy, sadness->sad, ...; `neutral` stays neutral). A row is
kept only when all of its labels map to ONE class: that is 39,555 of 43,410 train rows (91%) and 4,946
of 5,426 dev rows. Rows whose labels span several classes (e.g. joy + sadness) are dropped rather than
assigned to one of them arbitrarily; the classifier is trained as single-label softmax, which is what
the service returns. MELD (Friends utterances) is already in 7 classes (1:1 names)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from emomesh.labels import LABELS

# Ekman group name in ekman_mapping.json -> project label.
EKMAN_TO_LABEL = {
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "joy": "happy",
    "sadness": "sad",
    "surprise": "surprise",
}
MELD_TO_LABEL = {
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "joy": "happy",
    "neutral": "neutral",
    "sadness": "sad",
    "surprise": "surprise",
}


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # index into LABELS
    source: str


def goemotions_label_map(root: Path) -> list[int | None]:
    """For each GoEmotions label id (line of emotions.txt): its LABELS index."""
    names = (root / "emotions.txt").read_text(encoding="utf-8").split()
    groups = json.loads((root / "ekman_mapping.json").read_text(encoding="utf-8"))
    to_label = {"neutral": LABELS.index("neutral")}
    for group, members in groups.items():
        for member in members:
            to_label[member] = LABELS.index(EKMAN_TO_LABEL[group])
    return [to_label.get(name) for name in names]


def load_goemotions(root: Path, split: str) -> list[Example]:
    """Single-class rows of GoEmotions `split` (train or dev), see the module docstring."""
    label_map = goemotions_label_map(root)
    examples = []
    with (root / f"{split}.tsv").open(encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2 or not parts[1]:
                continue
            mapped = {label_map[int(i)] for i in parts[1].split(",")}
            mapped.discard(None)
            if len(mapped) == 1:
                (label,) = mapped
                assert label is not None
                examples.append(Example(parts[0], label, "goemotions"))
    return examples


def load_meld(root: Path, split: str) -> list[Example]:
    """MELD `split` (train or dev) utterances; the split file is <split>_sent_emo.csv."""
    examples = []
    with (root / f"{split}_sent_emo.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            # MELD's transcripts encode some apostrophes as mojibake; normalise the common one.
            text = row["Utterance"].replace("\x92", "'").replace("’", "'")
            examples.append(Example(text, LABELS.index(MELD_TO_LABEL[row["Emotion"]]), "meld"))
    return examples
