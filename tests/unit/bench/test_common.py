"""The bench's closed loops: bounded by the request count, errors counted apart, same summary shape."""

import asyncio

import pytest

from bench.common import closed_loop_async, closed_loop_threads, summary


async def test_async_loop_stops_at_the_request_count_and_counts_errors() -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        number = calls  # other workers advance `calls` while this one awaits
        await asyncio.sleep(0)
        if number % 5 == 0:
            raise RuntimeError("simulated failure")

    result = await closed_loop_async(call, concurrency=8, max_requests=50, max_seconds=600, warmup=2)
    # 2 warm-up calls (not counted) + exactly 50 started; every 5th call fails.
    assert calls == 52
    assert result["requests"] + result["errors"] == 50 and result["errors"] == 10
    assert result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]


def test_thread_loop_stops_at_the_request_count() -> None:
    seen: list[int] = []
    result = closed_loop_threads(lambda: seen.append(1), concurrency=4, max_requests=37, max_seconds=600, warmup=1)
    assert len(seen) == 38 and result["requests"] == 37 and result["per_s"] > 0


def test_a_zero_second_budget_runs_nothing() -> None:
    result = closed_loop_threads(lambda: None, concurrency=2, max_requests=10, max_seconds=0, warmup=0)
    assert result == {"requests": 0, "errors": 0, "seconds": pytest.approx(result["seconds"]), "per_s": 0.0}


def test_summary_percentiles() -> None:
    result = summary([0.001 * i for i in range(1, 101)], seconds=2.0)
    assert result["requests"] == 100 and result["per_s"] == 50.0
    assert result["p50_ms"] == pytest.approx(50.5) and result["p99_ms"] == pytest.approx(99.01)
