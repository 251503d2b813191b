"""Classification metrics over the project's label set, in plain NumPy (no scikit-learn at run time).

A prediction may be missing (`None`): the service found no face, no speech... Such samples count as
wrong for accuracy and recall and appear in their own confusion-matrix column, so a model cannot look
better by abstaining."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emomesh.labels import LABELS

NO_PREDICTION = "(none)"


@dataclass(frozen=True)
class ClassificationMetrics:
    labels: tuple[str, ...]
    # Rows: true label (labels order); columns: predicted label, then NO_PREDICTION.
    confusion: np.ndarray
    accuracy: float
    # Macro-F1 over the labels that occur in the ground truth (a dataset without `neutral`, like
    # CK+48, is not marked down for a class it cannot test; predicting neutral there still costs
    # precision nowhere but recall of the true class).
    macro_f1: float
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
    recall, precision, f1, support = {}, {}, {}, {}
    for i, label in enumerate(labels):
        rec = float(correct[i] / support_arr[i]) if support_arr[i] else 0.0
        prec = float(correct[i] / predicted_count[i]) if predicted_count[i] else 0.0
        recall[label], precision[label] = rec, prec
        f1[label] = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        support[label] = int(support_arr[i])
    present = [label for label in labels if support[label] > 0]
    total = len(truth)
    return ClassificationMetrics(
        labels=tuple(labels),
        confusion=confusion,
        accuracy=float(correct.sum() / total) if total else 0.0,
        macro_f1=float(np.mean([f1[label] for label in present])) if present else 0.0,
        recall=recall,
        precision=precision,
        f1=f1,
        support=support,
        total=total,
        without_prediction=int(confusion[:, -1].sum()),
    )
