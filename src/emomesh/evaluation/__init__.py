"""Accuracy evaluation of the running services over labelled datasets: adapters (dataset on disk ->
samples, through a registry), predictors (sample -> a service's distribution over gRPC), a resumable
concurrent runner, metrics (classification, valence/arousal regression, MOSI-style sentiment) and a
report (Markdown + confusion-matrix PNG). `emomesh eval` is the command line (evaluation/cli.py)."""

from emomesh.evaluation.adapters import (
    ADAPTERS,
    Adapter,
    AdapterOptions,
    Sample,
    audio_folder,
    image_folder,
    register_adapter,
    subsample,
)
from emomesh.evaluation.metrics import (
    ClassificationMetrics,
    RegressionMetrics,
    SentimentMetrics,
    classification_metrics,
    regression_metrics,
    sentiment_metrics,
)
from emomesh.evaluation.runner import EvalResult, run_eval

__all__ = [
    "ADAPTERS",
    "Adapter",
    "AdapterOptions",
    "ClassificationMetrics",
    "EvalResult",
    "RegressionMetrics",
    "Sample",
    "SentimentMetrics",
    "audio_folder",
    "classification_metrics",
    "image_folder",
    "register_adapter",
    "regression_metrics",
    "run_eval",
    "sentiment_metrics",
    "subsample",
]
