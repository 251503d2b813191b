import numpy as np
import pytest

from emomesh.evaluation.metrics import (
    classification_metrics,
    concordance_correlation,
    confusion_matrix,
    f1_per_class,
    macro_f1,
    pearson,
    regression_metrics,
    sentiment_metrics,
    sentiment_of,
    valence_arousal_of,
    weighted_f1,
)
from emomesh.labels import LABELS


def test_metrics_against_hand_computed_values() -> None:
    truth = ["happy", "happy", "happy", "sad", "sad", "angry"]
    predicted = ["happy", "happy", "sad", "sad", None, "happy"]
    m = classification_metrics(truth, predicted)
    assert m.accuracy == pytest.approx(3 / 6)
    assert m.recall["happy"] == pytest.approx(2 / 3) and m.precision["happy"] == pytest.approx(2 / 3)
    assert m.recall["sad"] == pytest.approx(1 / 2) and m.precision["sad"] == pytest.approx(1 / 2)
    assert m.recall["angry"] == 0 and m.f1["angry"] == 0
    # Macro-F1 over the three labels that occur in the truth: (2/3 + 1/2 + 0) / 3.
    assert m.macro_f1 == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert m.without_prediction == 1 and m.total == 6
    assert m.evaluated_labels == ["angry", "happy", "sad"]
    happy_row = m.confusion[m.labels.index("happy")]
    assert happy_row.tolist() == [0, 0, 0, 2, 1, 0, 0, 0]
    assert m.confusion[m.labels.index("sad"), -1] == 1  # the abstention column
    assert m.confusion.sum() == 6


def test_metrics_match_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    rng = np.random.default_rng(3)
    labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    truth = [labels[i] for i in rng.integers(0, 7, 300)]
    predicted = [labels[i] if rng.random() > 0.4 else t for i, t in zip(rng.integers(0, 7, 300), truth, strict=True)]
    m = classification_metrics(truth, predicted)
    assert m.accuracy == pytest.approx(accuracy_score(truth, predicted))
    assert m.macro_f1 == pytest.approx(f1_score(truth, predicted, average="macro"))
    recalls = recall_score(truth, predicted, labels=labels, average=None)
    assert [m.recall[label] for label in labels] == pytest.approx(list(recalls))


def test_unknown_labels_and_length_mismatch_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown label 'contempt'"):
        classification_metrics(["contempt"], ["happy"])
    with pytest.raises(ValueError, match="1 labels but 2 predictions"):
        classification_metrics(["happy"], ["happy", "sad"])


def test_weighted_f1_matches_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(5)
    labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    truth = [labels[i] for i in rng.choice(7, 400, p=[0.1, 0.02, 0.05, 0.4, 0.1, 0.13, 0.2])]
    predicted = [labels[i] if rng.random() > 0.5 else t for i, t in zip(rng.integers(0, 7, 400), truth, strict=True)]
    m = classification_metrics(truth, predicted)
    assert m.weighted_f1 == pytest.approx(f1_score(truth, predicted, average="weighted"))
    assert m.as_dict()["weighted_f1"] == m.weighted_f1


def test_f1_on_class_indices_matches_hand_computation() -> None:
    confusion = confusion_matrix([0, 0, 1, 1], [0, 1, 1, 1], num_classes=3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    # class 0: p=1 r=.5 f1=2/3; class 1: p=2/3 r=1 f1=.8; class 2 neither true nor predicted: 0.
    assert f1_per_class(confusion) == pytest.approx([2 / 3, 0.8, 0.0])
    assert weighted_f1(confusion) == pytest.approx((2 / 3 + 0.8) / 2)
    # Macro over the classes present in the truth: class 2 does not count.
    assert macro_f1(confusion) == pytest.approx((2 / 3 + 0.8) / 2)
    assert weighted_f1(confusion_matrix([0, 1], [0, 1], num_classes=2)) == pytest.approx(1.0)
    assert macro_f1(confusion_matrix([], [], num_classes=2)) == weighted_f1(np.zeros((2, 2), np.int64)) == 0.0


def test_f1_on_class_indices_matches_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(7)
    truth = rng.integers(0, 7, 500)
    predicted = np.where(rng.random(500) < 0.5, truth, rng.integers(0, 7, 500))
    confusion = confusion_matrix(truth, predicted)
    assert f1_per_class(confusion) == pytest.approx(f1_score(truth, predicted, average=None, labels=range(7)))
    assert macro_f1(confusion) == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert weighted_f1(confusion) == pytest.approx(f1_score(truth, predicted, average="weighted"))


def test_concordance_correlation_against_the_formula() -> None:
    truth = np.array([0.1, -0.4, 0.8, 0.3, -0.9])
    assert concordance_correlation(truth, truth) == pytest.approx(1.0)
    centred = truth - truth.mean()
    assert concordance_correlation(centred, -centred) == pytest.approx(-1.0)
    # Mirrored around a non-zero mean, the means differ too: -2 var / (2 var + (2 mean)^2).
    var, mean = truth.var(), truth.mean()
    assert concordance_correlation(truth, -truth) == pytest.approx(-2 * var / (2 * var + 4 * mean**2))
    # A constant offset keeps Pearson at 1 but costs CCC: 2 var / (2 var + offset^2).
    assert concordance_correlation(truth, truth + 0.5) == pytest.approx(2 * var / (2 * var + 0.25))
    assert pearson(truth, truth + 0.5) == pytest.approx(1.0)
    assert concordance_correlation([0.2, 0.2], [0.2, 0.2]) == 0.0
    with pytest.raises(ValueError, match="same non-zero length"):
        concordance_correlation([1.0], [1.0, 2.0])


def test_regression_metrics_per_dimension_and_missing_predictions() -> None:
    truth = [{"valence": 0.5, "arousal": 0.1}, {"valence": -0.5}, {"valence": 0.0, "arousal": 0.3}]
    predicted = [{"valence": 0.3, "arousal": 0.2}, {"valence": -0.1, "arousal": 0.0}, None]
    m = regression_metrics(truth, predicted)
    assert m.total == 3 and m.without_prediction == 1
    assert m.dimensions["valence"]["n"] == 2 and m.dimensions["arousal"]["n"] == 1
    assert m.dimensions["valence"]["mae"] == pytest.approx((0.2 + 0.4) / 2)
    assert m.dimensions["valence"]["ccc"] == pytest.approx(concordance_correlation([0.5, -0.5], [0.3, -0.1]))
    assert m.dimensions["arousal"]["mae"] == pytest.approx(0.1)


def test_sentiment_metrics_follow_the_mosi_conventions() -> None:
    truth = [2.6, -1.4, 0.0, 1.0, -3.0]
    predicted = [1.8, 0.4, -0.2, 1.4, None]
    m = sentiment_metrics(truth, predicted)
    # The missing prediction is 0 for the MAE and wrong for Acc-2, F1 and Acc-7.
    assert m.mae == pytest.approx((0.8 + 1.8 + 0.2 + 0.4 + 3.0) / 5)
    # Acc-2 over the four non-zero truths: 2.6/1.8 and 1.0/1.4 right; -1.4/0.4 and -3/(missing) wrong.
    assert m.non_zero == 4 and m.acc2 == pytest.approx(2 / 4)
    # Acc-7 rounds both: 3 vs 2, -1 vs 0, 0 vs 0, 1 vs 1, -3 vs (missing).
    assert m.acc7 == pytest.approx(2 / 5)
    # F1 per class: positive tp=2 fp=2 fn=0 -> 2/3; negative tp=0 -> 0; weighted by support 2/2.
    assert m.f1_2 == pytest.approx(0.5 * 2 / 3)
    assert m.without_prediction == 1
    with pytest.raises(ValueError, match="no sentiment samples"):
        sentiment_metrics([], [])


def test_projections_of_a_distribution() -> None:
    def one_hot(label: str) -> list[float]:
        return [1.0 if name == label else 0.0 for name in LABELS]

    assert valence_arousal_of(one_hot("happy")) == pytest.approx({"valence": 0.8, "arousal": 0.5})
    assert valence_arousal_of(one_hot("neutral")) == {"valence": 0.0, "arousal": 0.0}
    half = [0.5 * (a + b) for a, b in zip(one_hot("happy"), one_hot("sad"), strict=True)]
    assert valence_arousal_of(half)["valence"] == pytest.approx(0.05)
    assert sentiment_of(one_hot("happy")) == 3.0 and sentiment_of(one_hot("fear")) == -3.0
    assert sentiment_of(one_hot("surprise")) == 0.0 and sentiment_of(half) == pytest.approx(0.0)
