"""Report writing: the classification report's weighted-F1, and the summary table over several runs."""

import json
from pathlib import Path

import pytest

from emomesh.evaluation.metrics import (
    ClassificationMetrics,
    RegressionMetrics,
    SentimentMetrics,
    classification_metrics,
    regression_metrics,
    sentiment_metrics,
)
from emomesh.evaluation.report import summarize, summary_markdown, write_report


def run_folder(
    root: Path, name: str, metrics: ClassificationMetrics | RegressionMetrics | SentimentMetrics, **meta: object
) -> Path:
    write_report(root / name, name, metrics, {"dataset": name, "model": "m:1", **meta})
    return root / name


def test_classification_report_has_weighted_f1_and_the_png(tmp_path: Path) -> None:
    metrics = classification_metrics(["happy", "happy", "sad"], ["happy", "sad", "sad"])
    report = write_report(tmp_path, "toy", metrics, {"model": "m:1"})
    text = report.read_text()
    assert f"weighted-F1: {metrics.weighted_f1:.4f}" in text and "![confusion matrix](confusion.png)" in text
    assert json.loads((tmp_path / "metrics.json").read_text())["weighted_f1"] == pytest.approx(metrics.weighted_f1)


def test_summary_over_classification_regression_and_sentiment_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_folder(
        runs,
        "fer",
        classification_metrics(["happy", "sad", "sad", "angry"], ["happy", "sad", None, "happy"]),
        task="classification",
        adapter="image-folder",
        failed=1,
    )
    run_folder(
        runs,
        "va",
        regression_metrics([{"valence": 0.5}, {"valence": -0.5}], [{"valence": 0.4}, {"valence": -0.2}]),
        task="regression",
    )
    run_folder(runs, "mosi", sentiment_metrics([2.0, -1.0], [1.0, -1.0]), task="sentiment")
    table = summarize([runs])
    assert "| fer | image-folder | 4 | 1 | 1 | 0.5000 | " in table
    # Per-class recall: angry 0, happy 1, sad 0.5; labels absent from the dataset are '-'.
    assert "| fer | 0.000 | - | - | 1.000 | 0.500 | - | - |" in table
    assert "| va | valence | 2 | " in table and "| 0.2000 |" in table
    assert "| mosi | 2 | 0.5000 |" in table
    assert summarize([runs / "mosi"]) == summary_markdown([json.loads((runs / "mosi" / "metrics.json").read_text())])
    with pytest.raises(FileNotFoundError, match=r"no metrics\.json"):
        summarize([tmp_path / "empty"])
