"""Accuracy evaluation of the running services over labelled datasets: adapters (dataset on disk ->
samples), predictors (sample -> a service's distribution over gRPC), a resumable concurrent runner,
metrics and a report (Markdown + confusion-matrix PNG)."""

from emomesh.evaluation.adapters import Sample, image_folder, subsample
from emomesh.evaluation.metrics import ClassificationMetrics, classification_metrics
from emomesh.evaluation.runner import EvalResult, run_eval

__all__ = [
    "ClassificationMetrics",
    "EvalResult",
    "Sample",
    "classification_metrics",
    "image_folder",
    "run_eval",
    "subsample",
]
