"""Loading the text emotion corpora into the project's 7 labels, as training examples (pure).

The corpora are read by the evaluation adapters (emomesh.evaluation.adapters), so training, the
exported model's scores and `emomesh eval` see the same rows with the same labels. GoEmotions (Reddit
comments, 28 labels, multi-label) is mapped to 7 classes through the dataset's own
`ekman_mapping.json` (anger->angry, joy->happy, sadness->sad, ...; `neutral` stays neutral). A row is
kept only when all of its labels map to ONE class: that is 39,555 of 43,410 train rows (91%) and 4,946
of 5,426 dev rows. Rows whose labels span several classes (e.g. joy + sadness) are dropped rather than
assigned to one of them arbitrarily; the classifier is trained as single-label softmax, which is what
the service returns. MELD (Friends utterances) is already in 7 classes (1:1 names); each utterance carries
the earlier turns of its dialogue as the model reads them (services/text/context.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from emomesh.evaluation.adapters import Sample, goemotions, meld
from emomesh.labels import label_index
from services.text.context import context_text


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # index into LABELS
    source: str
    # The conversation before the text, as services.text.context.context_text writes it; "" for none.
    context: str = ""
    # Examples of one conversation share a group (MELD: the dialogue), so hold-outs keep them together.
    group: str = ""


def _examples(samples: Iterable[Sample], source: str) -> list[Example]:
    examples = []
    for sample in samples:
        assert sample.text is not None, "the text adapters give every sample its text"
        context = context_text(sample.context, sample.speaker)
        # MELD ids are dia<D>_utt<U>: the group is the dialogue; any other id is its own group.
        group = sample.id.partition("_utt")[0]
        examples.append(Example(sample.text, label_index(sample.label), source, context, group))
    return examples


def load_goemotions(root: Path, split: str) -> list[Example]:
    """Single-class rows of GoEmotions `split` (train or dev), see the module docstring."""
    return _examples(goemotions(root, split), "goemotions")


def load_meld(root: Path, split: str) -> list[Example]:
    """MELD `split` (train or dev) utterances; the split file is <split>_sent_emo.csv."""
    return _examples(meld(root, split), "meld")
