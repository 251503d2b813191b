import numpy as np
import pytest

from emomesh.labels import (
    EKMAN_TO_LABEL,
    LABELS,
    MODALITY_BY_NAME,
    MODALITY_NAMES,
    POLARITY_OF_LABEL,
    distribution_from_probs,
    modality_name,
    normalize_probs,
    polarity_mass,
    polarity_name,
    polarity_of,
    probs_from_distribution,
    status_name,
)
from emotion.common.v1 import common_pb2


def test_label_order_is_the_proto_enum_order() -> None:
    assert LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    for index, label in enumerate(LABELS):
        assert common_pb2.Emotion.Value(f"EMOTION_{label.upper()}") == index + 1


def test_distribution_message_round_trip() -> None:
    dist = distribution_from_probs([0, 0, 0, 3, 1, 0, 0])
    assert dist.top == common_pb2.EMOTION_HAPPY
    assert dist.confidence == pytest.approx(0.75)
    assert probs_from_distribution(dist).sum() == pytest.approx(1.0)


def test_normalize_rejects_wrong_length_and_fixes_empty_mass() -> None:
    with pytest.raises(ValueError, match="expected 7"):
        normalize_probs([1.0, 2.0])
    assert np.allclose(normalize_probs([0] * 7), 1 / 7)
    assert np.allclose(normalize_probs([np.nan, -1, 0, 0, 0, 0, 2]), [0, 0, 0, 0, 0, 0, 1])


@pytest.mark.parametrize(
    ("probs", "polarity"),
    [
        ([0, 0, 0, 1, 0, 0, 0], common_pb2.POLARITY_POSITIVE),
        ([0.3, 0.2, 0.2, 0.1, 0.2, 0, 0], common_pb2.POLARITY_NEGATIVE),
        ([0, 0, 0, 0.2, 0.1, 0.3, 0.4], common_pb2.POLARITY_NEUTRAL),
    ],
)
def test_polarity_follows_the_documented_mapping(probs: list[float], polarity: int) -> None:
    assert polarity_of(probs) == polarity


def test_modality_names_are_the_proto_enum_names() -> None:
    assert MODALITY_NAMES == {
        common_pb2.MODALITY_VISION: "vision",
        common_pb2.MODALITY_AUDIO: "audio",
        common_pb2.MODALITY_TEXT: "text",
    }
    assert {MODALITY_BY_NAME[name]: name for name in MODALITY_BY_NAME} == MODALITY_NAMES
    assert [modality_name(m) for m in MODALITY_NAMES] == list(MODALITY_NAMES.values())
    assert modality_name(common_pb2.MODALITY_UNSPECIFIED) == "unspecified"
    assert polarity_name(common_pb2.POLARITY_POSITIVE) == "positive"
    assert status_name(common_pb2.MODALITY_STATUS_TIMED_OUT) == "timed_out"


def test_polarity_mass_sums_each_class_of_the_polarity_table() -> None:
    mass = polarity_mass([0.1, 0.1, 0.1, 0.3, 0.1, 0.2, 0.1])
    assert mass[common_pb2.POLARITY_NEGATIVE] == pytest.approx(0.4)
    assert mass[common_pb2.POLARITY_POSITIVE] == pytest.approx(0.3)
    assert mass[common_pb2.POLARITY_NEUTRAL] == pytest.approx(0.3)
    assert set(POLARITY_OF_LABEL) == set(LABELS)


def test_the_ekman_names_cover_every_label_once() -> None:
    assert sorted(EKMAN_TO_LABEL.values()) == sorted(LABELS)
