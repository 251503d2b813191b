"""Heap trimming: malloc_trim is available on the glibc the services run on, and the trimmer trims
after large requests only, at most once per interval."""

from __future__ import annotations

import asyncio

from emomesh.memory import HeapTrimmer, trim_heap


def test_malloc_trim_is_available() -> None:
    assert trim_heap()


async def test_small_requests_never_trim() -> None:
    trimmer = HeapTrimmer(min_bytes=1000, min_interval_s=0.0, delay_s=0.0)
    trimmer.request_done(999)
    await asyncio.sleep(0.05)
    assert trimmer.trims == 0


async def test_large_requests_trim_once_per_interval() -> None:
    trimmer = HeapTrimmer(min_bytes=1000, min_interval_s=60.0, delay_s=0.0)
    trimmer.request_done(5000)
    trimmer.request_done(5000)  # already scheduled
    await asyncio.sleep(0.05)
    assert trimmer.trims == 1
    trimmer.request_done(5000)  # within the interval: scheduled for later, not now
    await asyncio.sleep(0.05)
    assert trimmer.trims == 1
    trimmer.cancel()


class CountingTrimmer(HeapTrimmer):
    def __init__(self) -> None:
        super().__init__(period_s=0.01)
        self.twice = asyncio.Event()

    def _trim(self) -> None:
        super()._trim()
        if self.trims >= 2:
            self.twice.set()


async def test_periodic_trim_runs_until_cancelled() -> None:
    trimmer = CountingTrimmer()
    task = asyncio.create_task(trimmer.run())
    await trimmer.twice.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
