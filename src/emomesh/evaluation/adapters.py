"""Dataset adapters: turn a labelled dataset on disk into a list of Samples.

The image-folder adapter reads `<root>/labels.csv` with at least the columns `path` (relative to the
folder) and `label` (one of the project's labels); an optional `split` column selects a split. Audio
and text adapters (issue 9) produce the same Sample type."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from emomesh.labels import LABELS


@dataclass(frozen=True)
class Sample:
    # Stable identifier, the key of resumable results (the path relative to the dataset root).
    id: str
    label: str
    path: Path | None = None
    text: str | None = None


def image_folder(root: Path, split: str | None = None, labels_csv: str = "labels.csv") -> list[Sample]:
    """Samples of an image folder with a labels.csv (columns path,label[,split,...]), in file order."""
    csv_path = root / labels_csv
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} not found: an image folder needs a labels.csv with path,label columns")
    samples = []
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{csv_path} lacks the column(s) {', '.join(sorted(missing))}")
        if split is not None and "split" not in (reader.fieldnames or ()):
            raise ValueError(f"{csv_path} has no split column; leave the split out")
        for line, row in enumerate(reader, start=2):
            if split is not None and row["split"] != split:
                continue
            label = row["label"].strip().lower()
            if label not in LABELS:
                raise ValueError(f"{csv_path}:{line}: label {row['label']!r} is not one of {', '.join(LABELS)}")
            samples.append(Sample(id=row["path"], label=label, path=root / row["path"]))
    if not samples:
        raise ValueError(f"{csv_path} has no samples" + (f" in split {split!r}" if split else ""))
    return samples


def subsample(samples: list[Sample], max_samples: int | None, seed: int = 0) -> list[Sample]:
    """At most max_samples samples, drawn with a fixed seed (so a resumed or repeated run evaluates the
    same subset) and kept in their original order."""
    if max_samples is None or max_samples >= len(samples):
        return samples
    keep = set(random.Random(seed).sample(range(len(samples)), max_samples))
    return [s for i, s in enumerate(samples) if i in keep]
