"""Evaluation metrics in plain NumPy (no scikit-learn at run time): classification over the project's
label set, regression (valence/arousal: CCC, MAE, Pearson) and MOSI-style sentiment (MAE, correlation,
binary and 7-class accuracy), and the projections that turn a 7-class distribution into a valence,
arousal or sentiment estimate (the services answer only distributions). The F1 functions on class
indices (`confusion_matrix`, `f1_per_class`, `macro_f1`, `weighted_f1`) are the project's one F1:
the training, export and weight-search scripts score with them too.

A prediction may be missing (`None`): the service found no face, no speech... Such samples count as
wrong for accuracy and recall and appear in their own confusion-matrix column, so a model cannot look
better by abstaining."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from emomesh.labels import LABELS, NUM_LABELS, POLARITY_OF_LABEL
from emotion.common.v1 import common_pb2

NO_PREDICTION = "(none)"


def confusion_matrix(
    truth: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray, num_classes: int = NUM_LABELS
) -> np.ndarray:
    """Counts of (true class, predicted class) over class indices: rows truth, columns prediction."""
    t = np.asarray(truth, dtype=np.int64)
    p = np.asarray(predicted, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"{len(t)} labels but {len(p)} predictions")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def f1_per_class(confusion: np.ndarray) -> np.ndarray:
    """F1 of each class of a confusion matrix (rows: true class; columns: predicted class, and columns
    past the last class, such as "no prediction", count against recall only): 2 TP / (support +
    predicted), the harmonic mean of precision and recall; 0 for a class never true nor predicted."""
    classes = confusion.shape[0]
    true_positives = np.diag(confusion[:, :classes]).astype(np.float64)
    denominator = (confusion.sum(axis=1) + confusion[:, :classes].sum(axis=0)).astype(np.float64)
    return np.divide(2 * true_positives, denominator, out=np.zeros(classes), where=denominator > 0)


def macro_f1(confusion: np.ndarray) -> float:
    """Mean F1 over the classes that occur in the truth: a dataset without a class (CK+48 has no
    neutral, EmoDB no surprise) is not marked down for a class it cannot test; predicting that class
    still costs the true class its recall."""
    present = confusion.sum(axis=1) > 0
    return float(f1_per_class(confusion)[present].mean()) if present.any() else 0.0


def weighted_f1(confusion: np.ndarray) -> float:
    """F1 averaged with the support of each class as its weight (scikit-learn's average="weighted")."""
    support = confusion.sum(axis=1)
    total = int(support.sum())
    return float(f1_per_class(confusion) @ support / total) if total else 0.0


@dataclass(frozen=True)
class ClassificationMetrics:
    labels: tuple[str, ...]
    # Rows: true label (labels order); columns: predicted label, then NO_PREDICTION.
    confusion: np.ndarray
    accuracy: float
    # Macro-F1 over the labels that occur in the ground truth (see `macro_f1`).
    macro_f1: float
    # F1 averaged with the support of each label as its weight (scikit-learn's average="weighted").
    weighted_f1: float
    recall: dict[str, float]
    precision: dict[str, float]
    f1: dict[str, float]
    support: dict[str, int]
    total: int
    without_prediction: int

    @property
    def evaluated_labels(self) -> list[str]:
        return [label for label in self.labels if self.support[label] > 0]

    def as_dict(self) -> dict[str, object]:
        return {
            "total": self.total,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "weighted_f1": self.weighted_f1,
            "without_prediction": self.without_prediction,
            "recall": self.recall,
            "precision": self.precision,
            "f1": self.f1,
            "support": self.support,
            "labels": list(self.labels),
            "confusion_columns": [*self.labels, NO_PREDICTION],
            "confusion": self.confusion.tolist(),
        }


def classification_metrics(
    truth: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str] = LABELS
) -> ClassificationMetrics:
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    index = {label: i for i, label in enumerate(labels)}
    for label in truth:
        if label not in index:
            raise ValueError(f"unknown label {label!r}; expected one of {', '.join(labels)}")
    confusion = np.zeros((len(labels), len(labels) + 1), dtype=np.int64)
    for t, p in zip(truth, predicted, strict=True):
        confusion[index[t], len(labels) if p is None else index[p]] += 1
    support_arr = confusion.sum(axis=1)
    correct = np.diag(confusion[:, : len(labels)])
    predicted_count = confusion[:, : len(labels)].sum(axis=0)
    f1_arr = f1_per_class(confusion)
    recall, precision, f1, support = {}, {}, {}, {}
    for i, label in enumerate(labels):
        recall[label] = float(correct[i] / support_arr[i]) if support_arr[i] else 0.0
        precision[label] = float(correct[i] / predicted_count[i]) if predicted_count[i] else 0.0
        f1[label] = float(f1_arr[i])
        support[label] = int(support_arr[i])
    total = len(truth)
    return ClassificationMetrics(
        labels=tuple(labels),
        confusion=confusion,
        accuracy=float(correct.sum() / total) if total else 0.0,
        macro_f1=macro_f1(confusion),
        weighted_f1=weighted_f1(confusion),
        recall=recall,
        precision=precision,
        f1=f1,
        support=support,
        total=total,
        without_prediction=int(confusion[:, -1].sum()),
    )


# Where each label sits on the valence/arousal circumplex, both in [-1, 1]: hand-placed after Russell's
# (1980) circumplex of affect (happy: pleasant and fairly activated; sad: unpleasant and deactivated;
# neutral at the origin). A distribution's estimate is its expectation over these points, a projection
# for comparing against regression datasets, not a trained regression head.
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "angry": (-0.6, 0.7),
    "disgust": (-0.6, 0.35),
    "fear": (-0.6, 0.6),
    "happy": (0.8, 0.5),
    "sad": (-0.7, -0.4),
    "surprise": (0.2, 0.8),
    "neutral": (0.0, 0.0),
}
# Sentiment sign of each label: its polarity (emomesh.labels.POLARITY_OF_LABEL, the one fusion uses;
# surprise counts as neutral).
SENTIMENT_SIGN: dict[str, float] = {
    label: {common_pb2.POLARITY_POSITIVE: 1.0, common_pb2.POLARITY_NEGATIVE: -1.0}.get(polarity, 0.0)
    for label, polarity in POLARITY_OF_LABEL.items()
}
SENTIMENT_SCALE = 3.0


def valence_arousal_of(probs: Sequence[float]) -> dict[str, float]:
    """Expected valence and arousal of a distribution in LABELS order (see CIRCUMPLEX)."""
    p = np.asarray(probs, dtype=np.float64)
    points = np.asarray([CIRCUMPLEX[label] for label in LABELS])
    valence, arousal = p @ points
    return {"valence": float(valence), "arousal": float(arousal)}


def sentiment_of(probs: Sequence[float]) -> float:
    """MOSI-scale sentiment in [-3, 3]: 3 x (positive mass - negative mass)."""
    p = np.asarray(probs, dtype=np.float64)
    return float(SENTIMENT_SCALE * (p @ np.asarray([SENTIMENT_SIGN[label] for label in LABELS])))


def concordance_correlation(truth: Sequence[float] | np.ndarray, predicted: Sequence[float] | np.ndarray) -> float:
    """Lin's concordance correlation coefficient: 2 cov / (var_t + var_p + (mean_t - mean_p)^2), with
    population (biased) moments, as in the AVEC challenges. 0 when both series are constant."""
    t = np.asarray(truth, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if len(t) != len(p) or len(t) == 0:
        raise ValueError(f"CCC needs two series of the same non-zero length, got {len(t)} and {len(p)}")
    covariance = float(np.mean((t - t.mean()) * (p - p.mean())))
    denominator = float(t.var() + p.var() + (t.mean() - p.mean()) ** 2)
    return 2 * covariance / denominator if denominator > 0 else 0.0


def pearson(truth: Sequence[float] | np.ndarray, predicted: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation; 0 when either series is constant (undefined)."""
    t = np.asarray(truth, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if t.std() == 0 or p.std() == 0:
        return 0.0
    return float(np.corrcoef(t, p)[0, 1])


@dataclass(frozen=True)
class RegressionMetrics:
    # Per dimension (valence, arousal): ccc, mae, pearson, n.
    dimensions: dict[str, dict[str, float]]
    total: int
    without_prediction: int

    def as_dict(self) -> dict[str, object]:
        return {"total": self.total, "without_prediction": self.without_prediction, "dimensions": self.dimensions}


def regression_metrics(
    truth: Sequence[Mapping[str, float]], predicted: Sequence[Mapping[str, float] | None]
) -> RegressionMetrics:
    """CCC, MAE and Pearson per target dimension over the samples that have a prediction and that
    dimension (a dataset may label only valence)."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} targets but {len(predicted)} predictions")
    names = sorted({name for targets in truth for name in targets})
    dimensions: dict[str, dict[str, float]] = {}
    for name in names:
        pairs = [(t[name], p[name]) for t, p in zip(truth, predicted, strict=True) if p is not None and name in t]
        if not pairs:
            continue
        t_values, p_values = (np.asarray(v) for v in zip(*pairs, strict=True))
        dimensions[name] = {
            "ccc": concordance_correlation(t_values, p_values),
            "mae": float(np.mean(np.abs(t_values - p_values))),
            "pearson": pearson(t_values, p_values),
            "n": len(pairs),
        }
    return RegressionMetrics(dimensions, len(truth), sum(p is None for p in predicted))


@dataclass(frozen=True)
class SentimentMetrics:
    mae: float
    pearson: float
    # Binary accuracy and weighted F1 over the non-neutral truths (score != 0): positive vs negative.
    acc2: float
    f1_2: float
    # Accuracy of the score rounded to the nearest integer in [-3, 3].
    acc7: float
    total: int
    non_zero: int
    without_prediction: int

    def as_dict(self) -> dict[str, object]:
        return {
            "total": self.total,
            "without_prediction": self.without_prediction,
            "mae": self.mae,
            "pearson": self.pearson,
            "acc2": self.acc2,
            "f1_2": self.f1_2,
            "acc7": self.acc7,
            "non_zero": self.non_zero,
        }


def sentiment_metrics(truth: Sequence[float], predicted: Sequence[float | None]) -> SentimentMetrics:
    """The CMU-MOSI metrics (as reported by MMSA): MAE, Pearson, Acc-2/F1 on non-zero truths (a score
    of 0 or below counts as negative), Acc-7 on scores rounded into [-3, 3]. A missing prediction is 0
    for MAE and Pearson, and wrong for Acc-2, F1 and Acc-7 (abstaining must not look right)."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} scores but {len(predicted)} predictions")
    if not truth:
        raise ValueError("no sentiment samples")
    t = np.asarray(truth, dtype=np.float64)
    missing = np.asarray([v is None for v in predicted])
    p = np.asarray([0.0 if v is None else v for v in predicted], dtype=np.float64)
    non_zero = t != 0
    truth_positive = t[non_zero] > 0
    # A missing prediction takes the sign opposite to the truth: wrong whichever way.
    predicted_positive = np.where(missing[non_zero], ~truth_positive, p[non_zero] > 0)
    return SentimentMetrics(
        mae=float(np.mean(np.abs(t - p))),
        pearson=pearson(t, p),
        acc2=float(np.mean(truth_positive == predicted_positive)) if non_zero.any() else 0.0,
        f1_2=weighted_f1(confusion_matrix(truth_positive, predicted_positive, num_classes=2)),
        acc7=float(np.mean((_seven_class(t) == _seven_class(p)) & ~missing)),
        total=len(t),
        non_zero=int(non_zero.sum()),
        without_prediction=sum(v is None for v in predicted),
    )


def _seven_class(scores: np.ndarray) -> np.ndarray:
    return np.round(np.clip(scores, -3, 3))
