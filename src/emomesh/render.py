"""Readable terminal output for results (used by the CLI)."""

from __future__ import annotations

from emomesh.labels import LABELS, probs_from_distribution
from emotion.common.v1 import common_pb2


def bar(p: float, width: int = 24) -> str:
    filled = round(p * width)
    return "█" * filled + "·" * (width - filled)


def distribution_lines(dist: common_pb2.EmotionDistribution, indent: str = "    ", top_k: int = 7) -> list[str]:
    probs = probs_from_distribution(dist)
    order = sorted(range(len(LABELS)), key=lambda i: -probs[i])[:top_k]
    return [f"{indent}{LABELS[i]:<9} {bar(float(probs[i]))} {probs[i] * 100:5.1f}%" for i in order]


def top_text(dist: common_pb2.EmotionDistribution) -> str:
    probs = probs_from_distribution(dist)
    i = int(probs.argmax())
    return f"{LABELS[i]} ({probs[i] * 100:.0f}%)"
