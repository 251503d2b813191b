"""The 7-class label set and the other names of the contract's enums (modalities, polarities,
statuses), derived from the proto enums so there is exactly one source of truth; the label maps
(dataset names, polarity) that go with them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emotion.common.v1 import common_pb2

# ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"): the Emotion enum without
# UNSPECIFIED, in number order. Model outputs are exported in this order.
LABELS: tuple[str, ...] = tuple(
    name.removeprefix("EMOTION_").lower()
    for name, number in sorted(common_pb2.Emotion.items(), key=lambda item: item[1])
    if number != common_pb2.EMOTION_UNSPECIFIED
)
NUM_LABELS = len(LABELS)

# ("vision", "audio", "text") by Modality: the enum without UNSPECIFIED, in number order. The one name of
# each modality in weights files, caches, metric labels, logs, conflict details and LLM prompts.
MODALITY_NAMES: dict[common_pb2.Modality, str] = {
    common_pb2.Modality.Value(name): name.removeprefix("MODALITY_").lower()
    for name, number in sorted(common_pb2.Modality.items(), key=lambda item: item[1])
    if number != common_pb2.MODALITY_UNSPECIFIED
}
MODALITY_BY_NAME: dict[str, common_pb2.Modality] = {name: number for number, name in MODALITY_NAMES.items()}

# How the text corpora name the 7 classes: Ekman's six basic emotions plus neutral. MELD labels its
# utterances with these names; GoEmotions groups its 27 fine labels under the six in its
# ekman_mapping.json and has neutral as a label of its own.
EKMAN_TO_LABEL: dict[str, str] = {
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "joy": "happy",
    "sadness": "sad",
    "surprise": "surprise",
    "neutral": "neutral",
}

# Polarity of each label. Surprise is ambiguous in valence (it can be good or bad news), so it is
# counted as neutral, as is neutral itself; happy is the only positive basic emotion.
POLARITY_OF_LABEL: dict[str, common_pb2.Polarity] = {
    "angry": common_pb2.POLARITY_NEGATIVE,
    "disgust": common_pb2.POLARITY_NEGATIVE,
    "fear": common_pb2.POLARITY_NEGATIVE,
    "happy": common_pb2.POLARITY_POSITIVE,
    "sad": common_pb2.POLARITY_NEGATIVE,
    "surprise": common_pb2.POLARITY_NEUTRAL,
    "neutral": common_pb2.POLARITY_NEUTRAL,
}


def modality_name(modality: int) -> str:
    """The modality's name: vision, audio, text (MODALITY_NAMES), or unspecified."""
    return common_pb2.Modality.Name(modality).removeprefix("MODALITY_").lower()


def polarity_name(polarity: int) -> str:
    """The polarity as a word: negative, neutral, positive, or unspecified."""
    return common_pb2.Polarity.Name(polarity).removeprefix("POLARITY_").lower()


def status_name(status: int) -> str:
    """A ModalityStatus as words: "ok", "timed_out", "low_confidence"..."""
    return common_pb2.ModalityStatus.Name(status).removeprefix("MODALITY_STATUS_").lower()


def label_index(label: str) -> int:
    """Index of a label name in LABELS; raises ValueError for unknown names."""
    return LABELS.index(label.lower())


def normalize_probs(probs: Sequence[float] | np.ndarray) -> np.ndarray:
    """Returns a float32 copy of probs, clipped to >= 0 and scaled to sum to 1.

    A vector with no mass (all zeros, NaNs) becomes uniform rather than dividing by zero."""
    arr = np.nan_to_num(np.asarray(probs, dtype=np.float64).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
    if arr.shape != (NUM_LABELS,):
        raise ValueError(f"expected {NUM_LABELS} probabilities, got {arr.shape[0]}")
    arr = np.clip(arr, 0.0, None)
    total = arr.sum()
    if total <= 0:
        return np.full(NUM_LABELS, 1.0 / NUM_LABELS, dtype=np.float32)
    return (arr / total).astype(np.float32)


def distribution_from_probs(probs: Sequence[float] | np.ndarray) -> common_pb2.EmotionDistribution:
    """Builds an EmotionDistribution message from a 7-vector in LABELS order."""
    arr = normalize_probs(probs)
    top = int(np.argmax(arr))
    return common_pb2.EmotionDistribution(
        probabilities=arr.tolist(), top=common_pb2.Emotion.Name(top + 1), confidence=float(arr[top])
    )


def probs_from_distribution(dist: common_pb2.EmotionDistribution) -> np.ndarray:
    """The probabilities of a distribution message as a normalised float32 7-vector."""
    return normalize_probs(list(dist.probabilities))


def top_label(dist: common_pb2.EmotionDistribution) -> str:
    return LABELS[int(np.argmax(probs_from_distribution(dist)))]


def polarity_mass(probs: Sequence[float] | np.ndarray) -> dict[common_pb2.Polarity, float]:
    """Probability mass of each polarity class (POLARITY_OF_LABEL) in a distribution in LABELS order."""
    mass: dict[common_pb2.Polarity, float] = {
        common_pb2.POLARITY_NEGATIVE: 0.0,
        common_pb2.POLARITY_NEUTRAL: 0.0,
        common_pb2.POLARITY_POSITIVE: 0.0,
    }
    for label, p in zip(LABELS, np.asarray(probs).reshape(-1), strict=True):
        mass[POLARITY_OF_LABEL[label]] += float(p)
    return mass


def polarity_of(probs: Sequence[float] | np.ndarray) -> common_pb2.Polarity:
    """3-class polarity of a distribution: the polarity class with the most probability mass."""
    mass = polarity_mass(normalize_probs(probs))
    return max(mass, key=lambda k: mass[k])
