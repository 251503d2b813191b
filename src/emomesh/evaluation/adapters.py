"""Dataset adapters: turn a labelled dataset on disk into a list of Samples, through a registry.

Each adapter is registered under a name (`emomesh eval --adapter NAME`, `emomesh eval --list-adapters`)
with the task it evaluates:

- classification: 7-class labels (accuracy, macro/weighted-F1, per-class recall, confusion matrix)
  - `image-folder`: `<root>/labels.csv` with `path` (relative to root), `label`, optional `split`
  - `audio-folder`: the same layout for audio (RAVDESS, EmoDB); optional `speaker` column for `--speakers`
  - `goemotions`: GoEmotions TSV (`text<TAB>label ids<TAB>comment id`), rows whose labels all map to ONE
    of the 7 classes through the dataset's `ekman_mapping.json`
  - `meld`: MELD `<split>_sent_emo.csv` (Utterance, Emotion), each utterance with its speaker and the
    previous turns of its dialogue (`Sample.context`; `emomesh eval --text-context off` leaves them out)
  - `text-csv`: a plain CSV (or a folder with labels.csv) with `text` and `label`, optional `split` and `id`
    (SMP2020-EWECT's labels.csv as it is)
- regression (`valence-arousal`): CSV with `path` or `text`, and `valence` and/or `arousal` (CCC, MAE)
- sentiment (`mosi`): CMU-MOSI/MOSEI-style CSV with `text` and a sentiment score in [-3, 3] (MAE,
  binary and 7-class accuracy)

New datasets register with `register_adapter(Adapter(...))`; the loader returns Samples."""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from emomesh.labels import EKMAN_TO_LABEL, LABELS

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus", ".webm"})
TASKS = ("classification", "regression", "sentiment")


@dataclass(frozen=True)
class ConversationTurn:
    """One earlier turn of a conversation: who said it (any name; only equality matters) and what."""

    speaker: str
    text: str


# Earlier turns kept per MELD utterance: more than any model's context budget reads (the model's
# tokenizer cuts the oldest), few enough that a 10,000-row corpus stays small in memory.
MAX_CONTEXT_TURNS = 8


@dataclass(frozen=True)
class Sample:
    # Stable identifier, the key of resumable results (the path relative to the dataset root).
    id: str
    # 7-class label; empty for regression and sentiment samples.
    label: str
    path: Path | None = None
    text: str | None = None
    # Continuous targets: valence/arousal in [-1, 1], sentiment in [-3, 3].
    targets: Mapping[str, float] = field(default_factory=dict)
    # Conversations (MELD): who says `text`, and the turns before it, oldest first.
    speaker: str = ""
    context: tuple[ConversationTurn, ...] = ()

    @property
    def modality(self) -> str:
        if self.text is not None:
            return "text"
        if self.path is not None and self.path.suffix.lower() in AUDIO_SUFFIXES:
            return "audio"
        return "image"


@dataclass(frozen=True)
class AdapterOptions:
    split: str | None = None
    # Speaker filter (see speaker_filter): "17-20", "emodb_13,emodb_14", ...
    speakers: str | None = None
    labels_csv: str = "labels.csv"
    # Range of the regression dataset's valence/arousal values, rescaled to [-1, 1].
    value_range: tuple[float, float] = (-1.0, 1.0)


@dataclass(frozen=True)
class Adapter:
    name: str
    task: str
    load: Callable[[Path, AdapterOptions], list[Sample]]
    description: str

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"adapter {self.name}: task {self.task!r} is not one of {', '.join(TASKS)}")


ADAPTERS: dict[str, Adapter] = {}


def register_adapter(adapter: Adapter) -> Adapter:
    if adapter.name in ADAPTERS:
        raise ValueError(f"an adapter named {adapter.name!r} is already registered")
    ADAPTERS[adapter.name] = adapter
    return adapter


def get_adapter(name: str) -> Adapter:
    try:
        return ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown adapter {name!r}; available: {', '.join(sorted(ADAPTERS))}") from None


def speaker_filter(spec: str | None) -> Callable[[str], bool]:
    """Predicate over speaker ids from a comma-separated spec: exact ids (`emodb_13`), numbers (`13`) or
    number ranges (`17-20`), which match ids ending in that number (`ravdess_actor17`)."""
    if not spec:
        return lambda _speaker: True
    exact: set[str] = set()
    numbers: set[int] = set()
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if match := re.fullmatch(r"(\d+)-(\d+)", token):
            low, high = int(match[1]), int(match[2])
            if low > high:
                raise ValueError(f"speaker range {token!r} runs backwards")
            numbers.update(range(low, high + 1))
        elif token.isdigit():
            numbers.add(int(token))
        else:
            exact.add(token)

    def accepts(speaker: str) -> bool:
        if speaker in exact:
            return True
        trailing = re.search(r"(\d+)$", speaker)
        return trailing is not None and int(trailing[1]) in numbers

    return accepts


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or ()), list(reader)


def _require_columns(path: Path, columns: list[str], required: set[str]) -> None:
    missing = required - set(columns)
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(sorted(missing))}")


def _label(path: Path, line: int, raw: str) -> str:
    label = raw.strip().lower()
    if label not in LABELS:
        raise ValueError(f"{path}:{line}: label {raw!r} is not one of {', '.join(LABELS)}")
    return label


def labelled_folder(
    root: Path,
    split: str | None = None,
    labels_csv: str = "labels.csv",
    speakers: str | None = None,
    suffixes: frozenset[str] | None = None,
) -> list[Sample]:
    """Samples of a media folder with a labels.csv (columns path,label[,split,speaker,...]), in file order."""
    csv_path = root / labels_csv
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} not found: a dataset folder needs a labels.csv with path,label columns")
    columns, rows = _read_csv(csv_path)
    _require_columns(csv_path, columns, {"path", "label"})
    if split is not None and "split" not in columns:
        raise ValueError(f"{csv_path} has no split column; leave the split out")
    if speakers and "speaker" not in columns:
        raise ValueError(f"{csv_path} has no speaker column; leave the speaker filter out")
    wanted_speaker = speaker_filter(speakers)
    samples = []
    for line, row in enumerate(rows, start=2):
        if split is not None and row["split"] != split:
            continue
        if speakers and not wanted_speaker(row["speaker"]):
            continue
        path = root / row["path"]
        if suffixes is not None and path.suffix.lower() not in suffixes:
            raise ValueError(f"{csv_path}:{line}: {row['path']} is not a {'/'.join(sorted(suffixes))} file")
        samples.append(Sample(id=row["path"], label=_label(csv_path, line, row["label"]), path=path))
    if not samples:
        selection = [f"split {split!r}"] * (split is not None) + [f"speakers {speakers!r}"] * bool(speakers)
        raise ValueError(f"{csv_path} has no samples" + (f" for {' and '.join(selection)}" if selection else ""))
    return samples


def image_folder(root: Path, split: str | None = None, labels_csv: str = "labels.csv") -> list[Sample]:
    """Samples of an image folder with a labels.csv (columns path,label[,split,...]), in file order."""
    return labelled_folder(root, split, labels_csv, suffixes=IMAGE_SUFFIXES)


def audio_folder(
    root: Path, split: str | None = None, speakers: str | None = None, labels_csv: str = "labels.csv"
) -> list[Sample]:
    """Samples of an audio folder with a labels.csv (RAVDESS/EmoDB layout: path,label,orig_label,speaker,...)."""
    return labelled_folder(root, split, labels_csv, speakers, suffixes=AUDIO_SUFFIXES)


def _split_file(path: Path, split: str | None, pattern: str) -> Path:
    """`path` itself when it is a file, else `path / pattern.format(split)` (split defaults to dev)."""
    if path.is_file():
        return path
    return path / pattern.format(split=split or "dev")


def goemotions(path: Path, split: str | None = None) -> list[Sample]:
    """Single-class rows of a GoEmotions TSV: `path` is the TSV, or the folder holding `<split>.tsv`
    (default dev), `emotions.txt` and `ekman_mapping.json`. Rows whose labels map to several of the 7
    classes are skipped (the services answer one distribution per text)."""
    tsv = _split_file(path, split, "{split}.tsv")
    folder = tsv.parent
    names = (folder / "emotions.txt").read_text(encoding="utf-8").split()
    groups = json.loads((folder / "ekman_mapping.json").read_text(encoding="utf-8"))
    to_label = {"neutral": EKMAN_TO_LABEL["neutral"]}
    for group, members in groups.items():
        for member in members:
            to_label[member] = EKMAN_TO_LABEL[group]
    samples = []
    with tsv.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2 or not parts[1]:
                continue
            try:
                mapped = {to_label.get(names[int(i)]) for i in parts[1].split(",")}
            except (ValueError, IndexError):
                raise ValueError(f"{tsv}:{line_no}: label ids {parts[1]!r} are not indices into emotions.txt") from None
            mapped.discard(None)
            if len(mapped) != 1:
                continue
            (label,) = mapped
            assert label is not None
            row_id = parts[2] if len(parts) > 2 and parts[2] else f"line{line_no}"
            samples.append(Sample(id=row_id, label=label, text=parts[0]))
    if not samples:
        raise ValueError(f"{tsv} has no single-class rows")
    return samples


def meld(path: Path, split: str | None = None) -> list[Sample]:
    """MELD utterances: `path` is a `*_sent_emo.csv` or the folder holding `<split>_sent_emo.csv` (default dev).
    Each carries its speaker and up to MAX_CONTEXT_TURNS earlier utterances of its dialogue (by
    Utterance_ID) as context; a file without Dialogue_ID/Utterance_ID/Speaker columns gives none."""
    csv_path = _split_file(path, split, "{split}_sent_emo.csv")
    columns, rows = _read_csv(csv_path)
    _require_columns(csv_path, columns, {"Utterance", "Emotion"})
    conversational = {"Dialogue_ID", "Utterance_ID", "Speaker"} <= set(columns)
    parsed = []
    for line, row in enumerate(rows, start=2):
        emotion = row["Emotion"].strip().lower()
        if emotion not in EKMAN_TO_LABEL:
            raise ValueError(f"{csv_path}:{line}: emotion {row['Emotion']!r} is not a MELD emotion")
        # MELD's transcripts encode some apostrophes as cp1252 bytes or typographic quotes.
        text = row["Utterance"].replace("\x92", "'").replace("\u2019", "'")
        parsed.append((line, row, EKMAN_TO_LABEL[emotion], text))
    if not conversational:
        return [Sample(id=f"line{line}", label=label, text=text) for line, _, label, text in parsed]
    dialogues: dict[str, list[tuple[int, int, str, str, str]]] = {}
    for line, row, label, text in parsed:
        try:
            utterance = int(row["Utterance_ID"])
        except ValueError:
            raise ValueError(f"{csv_path}:{line}: Utterance_ID {row['Utterance_ID']!r} is not a number") from None
        dialogues.setdefault(row["Dialogue_ID"], []).append((utterance, line, row["Speaker"].strip(), label, text))
    samples = []
    for dialogue, utterances in dialogues.items():
        turns: list[ConversationTurn] = []
        for utterance, _, speaker, label, text in sorted(utterances):
            samples.append(
                Sample(
                    id=f"dia{dialogue}_utt{utterance}",
                    label=label,
                    text=text,
                    speaker=speaker,
                    context=tuple(turns[-MAX_CONTEXT_TURNS:]),
                )
            )
            turns.append(ConversationTurn(speaker, text))
    return samples


def _class_name(raw: str) -> str:
    """A label as written, lower-cased, with Ekman's names (joy, anger, sadness...) mapped to the 7 labels."""
    name = raw.strip().lower()
    return EKMAN_TO_LABEL.get(name, name)


def text_csv(path: Path, split: str | None = None) -> list[Sample]:
    """Labelled texts from a CSV with `text` and `label` columns: `path` is the CSV or a folder holding
    labels.csv. Labels are the 7 names (or Ekman's: joy, anger, sadness...); a `split` column, when there
    is one, is what --split selects; ids come from an `id` column (prefixed with the split when there is
    one, so a file holding several splits with their own numbering still has unique ids) or the line."""
    csv_path = path / "labels.csv" if path.is_dir() else path
    columns, rows = _read_csv(csv_path)
    _require_columns(csv_path, columns, {"text", "label"})
    if split is not None and "split" not in columns:
        raise ValueError(f"{csv_path} has no split column; leave the split out")
    samples = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        if split is not None and row["split"] != split:
            continue
        if not (row["text"] or "").strip():
            raise ValueError(f"{csv_path}:{line}: the text is empty")
        label = _label(csv_path, line, _class_name(row["label"] or ""))
        row_id = row.get("id") or f"line{line}"
        if "split" in columns:
            row_id = f"{row['split']}/{row_id}"
        if row_id in seen:
            raise ValueError(f"{csv_path}:{line}: id {row_id!r} is already on line {seen[row_id]}")
        seen[row_id] = line
        samples.append(Sample(id=row_id, label=label, text=row["text"]))
    if not samples:
        raise ValueError(f"{csv_path} has no samples" + (f" for split {split!r}" if split is not None else ""))
    return samples


def _media_or_text(csv_path: Path, row: dict[str, str], line: int) -> tuple[Path | None, str | None]:
    if row.get("text"):
        return None, row["text"]
    if row.get("path"):
        return csv_path.parent / row["path"], None
    raise ValueError(f"{csv_path}:{line}: a row needs a text or a path")


def _rows_of_split(csv_path: Path, columns: list[str], rows: list[dict[str, str]], split: str | None) -> list[dict]:
    if split is None:
        return rows
    # CMU-MOSI/MOSEI exports (MMSA) name the split column `mode` (train/valid/test).
    column = next((c for c in ("split", "mode") if c in columns), None)
    if column is None:
        raise ValueError(f"{csv_path} has no split (or mode) column; leave the split out")
    return [row for row in rows if row[column] == split]


def valence_arousal(
    path: Path, split: str | None = None, value_range: tuple[float, float] = (-1.0, 1.0)
) -> list[Sample]:
    """Continuous valence/arousal: `path` is a CSV (or a folder with labels.csv) with `path` (media,
    relative to the CSV) or `text`, and `valence` and/or `arousal` in `value_range` (rescaled to [-1, 1])."""
    csv_path = path / "labels.csv" if path.is_dir() else path
    columns, rows = _read_csv(csv_path)
    # EmoBank's own column names (V, A) are read as they are.
    column_of = {d: d if d in columns else alias for d, alias in (("valence", "V"), ("arousal", "A"))}
    dimensions = [d for d in ("valence", "arousal") if column_of[d] in columns]
    if not dimensions:
        raise ValueError(f"{csv_path} needs a valence and/or an arousal column (or EmoBank's V and A)")
    if not {"path", "text"} & set(columns):
        raise ValueError(f"{csv_path} needs a path or a text column")
    low, high = value_range
    if not high > low:
        raise ValueError(f"value range {value_range} is empty")
    samples = []
    for line, row in enumerate(_rows_of_split(csv_path, columns, rows, split), start=2):
        media, text = _media_or_text(csv_path, row, line)
        targets: dict[str, float] = {}
        for dimension in dimensions:
            value = float(row[column_of[dimension]])
            if not low <= value <= high:
                raise ValueError(f"{csv_path}:{line}: {dimension} {value} is outside {low}..{high}")
            targets[dimension] = 2 * (value - low) / (high - low) - 1
        row_id = row.get("id") or row.get("path") or f"line{line}"
        samples.append(Sample(id=row_id, label="", path=media, text=text, targets=targets))
    if not samples:
        raise ValueError(f"{csv_path} has no samples" + (f" in split {split!r}" if split else ""))
    return samples


def mosi(path: Path, split: str | None = None) -> list[Sample]:
    """CMU-MOSI/MOSEI-style sentiment: a CSV with `text` (or `path`) and a score in [-3, 3] in `label`
    (MMSA's export) or `sentiment`; ids from `video_id`+`clip_id` when present; split column `mode`/`split`."""
    columns, rows = _read_csv(path)
    score_column = next((c for c in ("sentiment", "label") if c in columns), None)
    if score_column is None:
        raise ValueError(f"{path} needs a sentiment (or label) column with scores in [-3, 3]")
    samples = []
    for line, row in enumerate(_rows_of_split(path, columns, rows, split), start=2):
        media, text = _media_or_text(path, row, line)
        score = float(row[score_column])
        if not -3 <= score <= 3:
            raise ValueError(f"{path}:{line}: sentiment {score} is outside -3..3")
        if row.get("video_id") and row.get("clip_id"):
            row_id = f"{row['video_id']}_{row['clip_id']}"
        else:
            row_id = row.get("id") or f"line{line}"
        samples.append(Sample(id=row_id, label="", path=media, text=text, targets={"sentiment": score}))
    if not samples:
        raise ValueError(f"{path} has no samples" + (f" in split {split!r}" if split else ""))
    return samples


register_adapter(
    Adapter(
        "image-folder",
        "classification",
        lambda p, o: labelled_folder(p, o.split, o.labels_csv, o.speakers, IMAGE_SUFFIXES),
        "image folder + labels.csv (path,label[,split,speaker]): FER2013, CK+48, JAFFE",
    )
)
register_adapter(
    Adapter(
        "audio-folder",
        "classification",
        lambda p, o: labelled_folder(p, o.split, o.labels_csv, o.speakers, AUDIO_SUFFIXES),
        "audio folder + labels.csv (path,label[,split,speaker]): RAVDESS, EmoDB; --speakers 17-20",
    )
)
register_adapter(
    Adapter(
        "goemotions",
        "classification",
        lambda p, o: goemotions(p, o.split),
        "GoEmotions TSV (folder or file; split default dev), single-class rows via ekman_mapping.json",
    )
)
register_adapter(
    Adapter(
        "meld",
        "classification",
        lambda p, o: meld(p, o.split),
        "MELD <split>_sent_emo.csv (folder or file; split default dev), Utterance + Emotion",
    )
)
register_adapter(
    Adapter(
        "text-csv",
        "classification",
        lambda p, o: text_csv(p, o.split),
        "CSV (or folder with labels.csv) with text,label[,split,id]: SMP2020-EWECT labels.csv; --split",
    )
)
register_adapter(
    Adapter(
        "valence-arousal",
        "regression",
        lambda p, o: valence_arousal(p, o.split, o.value_range),
        "CSV with path or text and valence/arousal (--value-range LOW,HIGH rescaled to -1..1): CCC, MAE",
    )
)
register_adapter(
    Adapter(
        "mosi",
        "sentiment",
        lambda p, o: mosi(p, o.split),
        "CMU-MOSI-style CSV with text and a sentiment score in -3..3: MAE, binary and 7-class accuracy",
    )
)


def detect_adapter(path: Path) -> str:
    """The adapter for a dataset path, from its layout; raises ValueError when nothing fits."""
    if path.is_dir():
        if (path / "emotions.txt").is_file():
            return "goemotions"
        if any(path.glob("*_sent_emo.csv")):
            return "meld"
        labels = path / "labels.csv"
        if labels.is_file():
            columns, rows = _read_csv(labels)
            if {"valence", "arousal"} & set(columns):
                return "valence-arousal"
            if {"text", "label"} <= set(columns) and "path" not in columns:
                return "text-csv"
            first = next((r["path"] for r in rows if r.get("path")), "")
            return "audio-folder" if Path(first).suffix.lower() in AUDIO_SUFFIXES else "image-folder"
    elif path.suffix == ".tsv":
        return "goemotions"
    elif path.name.endswith("_sent_emo.csv"):
        return "meld"
    elif path.suffix == ".csv" and path.is_file() and _is_labelled_text(path):
        return "text-csv"
    raise ValueError(f"cannot tell which adapter reads {path}; pass --adapter ({', '.join(sorted(ADAPTERS))})")


def _is_labelled_text(path: Path) -> bool:
    """A CSV with text and label columns whose first label names a class (MOSI's label is a score)."""
    columns, rows = _read_csv(path)
    if not {"text", "label"} <= set(columns) or "path" in columns or not rows:
        return False
    return _class_name(rows[0]["label"] or "") in LABELS


def subsample(samples: list[Sample], max_samples: int | None, seed: int = 0) -> list[Sample]:
    """At most max_samples samples, drawn with a fixed seed (so a resumed or repeated run evaluates the
    same subset) and kept in their original order."""
    if max_samples is None or max_samples >= len(samples):
        return samples
    keep = set(random.Random(seed).sample(range(len(samples)), max_samples))
    return [s for i, s in enumerate(samples) if i in keep]
