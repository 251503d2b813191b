"""Evaluation report: metrics.json, a Markdown summary with the confusion matrix as a table, and the
confusion matrix as a PNG (matplotlib, when installed); regression and sentiment reports; and a summary
table over several runs' metrics.json (`emomesh eval --summarize runs/eval`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emomesh.evaluation.metrics import NO_PREDICTION, ClassificationMetrics, RegressionMetrics, SentimentMetrics


def markdown(title: str, metrics: ClassificationMetrics, meta: dict[str, Any]) -> str:
    labels = metrics.evaluated_labels
    lines = [
        f"# Evaluation: {title}",
        "",
        f"- model: `{meta.get('model', 'unknown')}`",
        f"- samples scored: {metrics.total} (failed calls: {meta.get('failed', 0)})",
        f"- accuracy: **{metrics.accuracy:.4f}**; macro-F1 (over the {len(labels)} labels present): "
        f"**{metrics.macro_f1:.4f}**; weighted-F1: {metrics.weighted_f1:.4f}",
        f"- without a prediction (no face found, no speech detected), counted as wrong: {metrics.without_prediction}",
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


def regression_markdown(title: str, metrics: RegressionMetrics, meta: dict[str, Any]) -> str:
    lines = [
        f"# Evaluation: {title}",
        "",
        f"- model: `{meta.get('model', 'unknown')}`",
        f"- samples scored: {metrics.total} (failed calls: {meta.get('failed', 0)}); without a prediction "
        f"(left out of the scores): {metrics.without_prediction}",
        "- prediction: the expected valence/arousal of the 7-class distribution over fixed circumplex points "
        "(emomesh.evaluation.metrics.CIRCUMPLEX)",
        "",
        "| dimension | n | CCC | MAE | Pearson |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in metrics.dimensions.items():
        lines.append(f"| {name} | {int(row['n'])} | {row['ccc']:.4f} | {row['mae']:.4f} | {row['pearson']:.4f} |")
    return "\n".join(lines) + "\n"


def sentiment_markdown(title: str, metrics: SentimentMetrics, meta: dict[str, Any]) -> str:
    return (
        "\n".join(
            [
                f"# Evaluation: {title}",
                "",
                f"- model: `{meta.get('model', 'unknown')}`",
                f"- samples scored: {metrics.total} (failed calls: {meta.get('failed', 0)}); without a prediction "
                f"(scored as 0): {metrics.without_prediction}",
                "- prediction: 3 x (positive - negative probability mass) of the 7-class distribution",
                "",
                "| MAE | Pearson | Acc-2 (non-zero) | F1-2 (weighted) | Acc-7 | non-zero truths |",
                "|---:|---:|---:|---:|---:|---:|",
                f"| {metrics.mae:.4f} | {metrics.pearson:.4f} | {metrics.acc2:.4f} | {metrics.f1_2:.4f} | "
                f"{metrics.acc7:.4f} | {metrics.non_zero} |",
            ]
        )
        + "\n"
    )


def write_report(
    out_dir: Path,
    title: str,
    metrics: ClassificationMetrics | RegressionMetrics | SentimentMetrics,
    meta: dict[str, Any],
    preface: str = "",
) -> Path:
    """metrics.json (meta and metrics), report.md (`preface` first) and, for classification, confusion.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps({**meta, **metrics.as_dict()}, indent=2) + "\n")
    if isinstance(metrics, RegressionMetrics):
        text = regression_markdown(title, metrics, meta)
    elif isinstance(metrics, SentimentMetrics):
        text = sentiment_markdown(title, metrics, meta)
    else:
        text = markdown(title, metrics, meta)
        if confusion_png(out_dir / "confusion.png", title, metrics):
            text += "\n![confusion matrix](confusion.png)\n"
    report = out_dir / "report.md"
    report.write_text(preface + text)
    return report


def _fmt(value: object, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else ("-" if value is None else str(value))


def summary_markdown(runs: list[dict[str, Any]]) -> str:
    """Markdown tables over several runs' metrics.json contents: classification runs (accuracy,
    macro/weighted-F1, per-class recall), regression runs (CCC/MAE) and sentiment runs."""
    from emomesh.labels import LABELS

    out: list[str] = []
    classification = [r for r in runs if r.get("task", "classification") == "classification"]
    if classification:
        out += [
            "| dataset | adapter | samples | failed | no prediction | accuracy | macro-F1 | weighted-F1 | model |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in classification:
            out.append(
                f"| {r['dataset']} | {r.get('adapter', '-')} | {r['total']} | {r.get('failed', 0)} | "
                f"{r['without_prediction']} | {_fmt(r['accuracy'])} | {_fmt(r['macro_f1'])} | "
                f"{_fmt(r.get('weighted_f1'))} | `{r.get('model', '')}` |"
            )
        out += ["", "Per-class recall (- = label absent from the dataset):", ""]
        out.append("| dataset | " + " | ".join(LABELS) + " |")
        out.append("|---|" + "---:|" * len(LABELS))
        for r in classification:
            cells = [_fmt(r["recall"][label], 3) if r["support"].get(label) else "-" for label in LABELS]
            out.append(f"| {r['dataset']} | " + " | ".join(cells) + " |")
    paired = [r for r in runs if r.get("pairs")]
    if paired:
        out += ["", "Speech + own transcript through Analyze (`--mode speech-transcript`):", ""]
        out += [
            "| dataset | clips | audio acc | fused acc | fused − audio acc | audio macro-F1 | fused macro-F1 | "
            "fused − audio macro-F1 | text acc | text present | text fused | mean text reliability | "
            "transcript languages | text model(s) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in paired:
            p = r["pairs"]
            languages = ", ".join(f"{lang} {n}" for lang, n in p["transcript_languages"].items())
            out.append(
                f"| {r['dataset']} | {p['clips']} | {_fmt(p['audio']['accuracy'])} | {_fmt(p['fused']['accuracy'])} | "
                f"{p['fused_minus_audio']['accuracy']:+.4f} | {_fmt(p['audio']['macro_f1'])} | "
                f"{_fmt(p['fused']['macro_f1'])} | {p['fused_minus_audio']['macro_f1']:+.4f} | "
                f"{_fmt(p['text']['accuracy'])} | {p['text_present_share']:.1%} | {p['text_fused_share']:.1%} | "
                f"{_fmt(p['mean_text_reliability'], 3)} | {languages} | {', '.join(p['text_models']) or '-'} |"
            )
    regression = [r for r in runs if r.get("task") == "regression"]
    if regression:
        out += ["", "| dataset | dimension | n | CCC | MAE | Pearson |", "|---|---|---:|---:|---:|---:|"]
        for r in regression:
            for name, row in r["dimensions"].items():
                out.append(
                    f"| {r['dataset']} | {name} | {row['n']} | {_fmt(row['ccc'])} | {_fmt(row['mae'])} | "
                    f"{_fmt(row['pearson'])} |"
                )
    sentiment = [r for r in runs if r.get("task") == "sentiment"]
    if sentiment:
        out += [
            "",
            "| dataset | samples | MAE | Pearson | Acc-2 | F1-2 | Acc-7 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sentiment:
            out.append(
                f"| {r['dataset']} | {r['total']} | {_fmt(r['mae'])} | {_fmt(r['pearson'])} | {_fmt(r['acc2'])} | "
                f"{_fmt(r['f1_2'])} | {_fmt(r['acc7'])} |"
            )
    return "\n".join(out).lstrip("\n") + "\n"


def summarize(run_dirs: list[Path]) -> str:
    """summary_markdown over every metrics.json in run_dirs (each a run folder or a folder of runs)."""
    files: list[Path] = []
    for folder in run_dirs:
        files += (
            [folder / "metrics.json"] if (folder / "metrics.json").is_file() else sorted(folder.glob("*/metrics.json"))
        )
    if not files:
        raise FileNotFoundError(f"no metrics.json under {', '.join(map(str, run_dirs))}")
    return summary_markdown([json.loads(f.read_text()) for f in files])
