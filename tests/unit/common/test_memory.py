"""Heap trimming: malloc_trim is available on the glibc the services run on, and the trimmer trims
after large requests only, at most once per interval. The container's memory limit, read from the
cgroup files (fake ones here) for emomesh_memory_limit_bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from emomesh.memory import HeapTrimmer, container_memory_limit, trim_heap


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


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"memory.max": "2147483648\n"}, 2147483648),  # cgroup v2 with a limit
        ({"memory.max": "max\n"}, None),  # cgroup v2 without
        ({"memory/memory.limit_in_bytes": "3221225472\n"}, 3221225472),  # cgroup v1 with a limit
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1's "no limit"
        ({}, None),  # no cgroup files at all (not Linux, or not mounted)
    ],
    ids=["v2", "v2-max", "v1", "v1-unlimited", "none"],
)
def test_the_container_memory_limit_is_read_from_the_cgroup(
    tmp_path: Path, files: dict[str, str], limit: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert container_memory_limit(tmp_path) == limit
