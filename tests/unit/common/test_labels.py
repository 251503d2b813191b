import numpy as np
import pytest

from emomesh.labels import (
    LABELS,
    distribution_from_probs,
    normalize_probs,
    polarity_of,
    probs_from_distribution,
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
