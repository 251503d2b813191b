"""bench_languages' figures: percentiles with p90, ratios that tolerate a missing side, the markdown table."""

from __future__ import annotations

from typing import Any

import pytest

from bench.bench_languages import BATCH_SIZES, markdown, percentiles, ratio


def test_percentiles_add_p90_to_the_common_summary() -> None:
    row = percentiles([0.001 * i for i in range(1, 101)])
    assert row["requests"] == 100
    assert row["p50_ms"] == pytest.approx(50.5) and row["p90_ms"] == pytest.approx(90.1)
    assert percentiles([])["requests"] == 0


def test_ratio_is_none_when_a_side_has_no_figure() -> None:
    assert ratio({"p50_ms": 300.0}, {"p50_ms": 100.0}, "p50_ms") == 3.0
    assert ratio({"p50_ms": 300.0}, {"requests": 0}, "p50_ms") is None


def test_markdown_puts_both_comparisons_in_two_tables() -> None:
    text_row = {"p50_ms": 4.0, "mean_tokens": 14.2}
    heard = {"requests": 5, "transcript": "I just got the job", "language": "en"}
    results: dict[str, Any] = {
        "analyze": {
            "base": {"p50_ms": 4000.0, "p90_ms": 4500.0, **heard},
            "tiny.en": {"p50_ms": 1000.0, "p90_ms": 1100.0, **heard},
            "base_over_tiny_en_p50": 4.0,
            "base_over_tiny_en_p90": 4.09,
        },
        "text": {
            f"batch {batch}": {"minilm_en": text_row, "e5_en": text_row, "e5_zh": text_row, "e5_over_minilm_p50": 1.0}
            for batch in BATCH_SIZES
        },
    }
    table = markdown(results)
    assert "| Whisper base | 4000 | 4500 | 5 | 'I just got the job' (en) |" in table
    assert "| **base / tiny.en** | **4.0** | **4.09** | | |" in table
    assert "| batch 32 | 4.0 | 4.0 | **1.0** | 4.0 | 14.2 / 14.2 / 14.2 |" in table
