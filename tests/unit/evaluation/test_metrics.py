import numpy as np
import pytest

from emomesh.evaluation.metrics import classification_metrics


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
