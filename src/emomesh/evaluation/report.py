"""Evaluation report: metrics.json, a Markdown summary with the confusion matrix as a table, and the
confusion matrix as a PNG (matplotlib, when installed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emomesh.evaluation.metrics import NO_PREDICTION, ClassificationMetrics


def markdown(title: str, metrics: ClassificationMetrics, meta: dict[str, Any]) -> str:
    labels = metrics.evaluated_labels
    lines = [
        f"# Evaluation: {title}",
        "",
        f"- model: `{meta.get('model', 'unknown')}`",
        f"- samples scored: {metrics.total} (failed calls: {meta.get('failed', 0)})",
        f"- accuracy: **{metrics.accuracy:.4f}**; macro-F1 (over the {len(labels)} labels present): "
        f"**{metrics.macro_f1:.4f}**",
        f"- without a prediction (e.g. no face found), counted as wrong: {metrics.without_prediction}",
        "",
        "| label | support | recall | precision | F1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for label in labels:
        lines.append(
            f"| {label} | {metrics.support[label]} | {metrics.recall[label]:.3f} | "
            f"{metrics.precision[label]:.3f} | {metrics.f1[label]:.3f} |"
        )
    columns = [*metrics.labels, NO_PREDICTION]
    lines += ["", "Confusion matrix (rows: true label, columns: predicted):", ""]
    lines.append("| true \\ predicted | " + " | ".join(columns) + " |")
    lines.append("|---|" + "---:|" * len(columns))
    for i, label in enumerate(metrics.labels):
        if metrics.support[label]:
            lines.append(f"| {label} | " + " | ".join(str(v) for v in metrics.confusion[i]) + " |")
    return "\n".join(lines) + "\n"


def confusion_png(path: Path, title: str, metrics: ClassificationMetrics) -> bool:
    """Row-normalised confusion matrix with counts; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [i for i, label in enumerate(metrics.labels) if metrics.support[label]]
    counts = metrics.confusion[rows]
    shares = counts / counts.sum(axis=1, keepdims=True)
    columns = [*metrics.labels, "none"]
    fig, ax = plt.subplots(figsize=(8, 6.5))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [metrics.labels[i] for i in rows])
    for r in range(len(rows)):
        for c in range(len(columns)):
            color = "white" if shares[r, c] > 0.5 else "black"
            ax.text(c, r, str(counts[r, c]), ha="center", va="center", fontsize=8, color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: accuracy {metrics.accuracy:.3f}, macro-F1 {metrics.macro_f1:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(out_dir: Path, title: str, metrics: ClassificationMetrics, meta: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps({**meta, **metrics.as_dict()}, indent=2) + "\n")
    text = markdown(title, metrics, meta)
    if confusion_png(out_dir / "confusion.png", title, metrics):
        text += "\n![confusion matrix](confusion.png)\n"
    report = out_dir / "report.md"
    report.write_text(text)
    return report
